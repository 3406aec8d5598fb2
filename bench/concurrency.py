"""`lumos bench concurrency`: runs/s, generated tokens/s and latency vs concurrent runs.

Full runs through the real gateway, executor and Redis against the vLLM CPU server (tiny
random model, both modules on one server). With continuous batching, throughput rises with
concurrency while one run's latency grows far less than linearly.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from bench.load import run_load
from bench.output import write_json
from bench.processes import Stack, say
from bench.stats import summarize
from bench.vllm_metrics import GENERATED, PROMPT, counters

CUTS = "lumos_grounding_cuts_total"
PARSE = "lumos_grounding_parse_failures_total"
GROUNDING_COUNTERS = (CUTS, PARSE)

# The e2e tests' task: under the action grammar the tiny model's groundings of it parse.
TASK = "Tom has 3 boxes of 12 pencils and gives away 7. How many pencils are left?"


def _plot(levels: list[dict[str, Any]], path: Path) -> None:
    import matplotlib.pyplot as plt

    conc = [lv["concurrency"] for lv in levels]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(
        conc,
        [lv["generated_tokens_per_s"] for lv in levels],
        marker="o",
        label="generated tokens/s",
    )
    a2 = a.twinx()
    a2.plot(
        conc, [lv["runs_per_s"] for lv in levels], marker="s", color="tab:orange", label="runs/s"
    )
    a.set(
        xlabel="concurrent runs",
        ylabel="generated tokens/s",
        title="throughput (vLLM CPU, tiny model)",
    )
    a2.set_ylabel("runs/s")
    for key in ("p50", "p95"):
        b.plot(conc, [lv["latency_s"][key] for lv in levels], marker="o", label=key)
    b.set(xlabel="concurrent runs", ylabel="run latency (s)", title="latency")
    b.legend()
    for ax in (a, b):
        ax.set_xscale("log", base=2)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(out_dir: Path, *, levels: list[int], max_steps: int, waves: int = 1) -> dict[str, Any]:
    results: list[dict[str, Any]] = []
    payload = {"task": TASK, "domain": "maths", "max_steps": max_steps}
    with Stack() as stack:
        say(f"concurrency: starting redis, executor, vLLM CPU, gateway (logs {stack.log_dir})")
        redis_url = stack.redis()
        executor_url = stack.executor(redis_url)
        model_url = stack.vllm(kv_cache_gib=2)
        gateway = stack.gateway(redis_url, model_url, executor_url)
        say("warm-up: 1 run (compiles the action grammar once)")
        warm = asyncio.run(run_load(gateway, [payload], 1))
        say(f"  warm-up took {warm.wall_s:.1f} s ({warm.samples[0].status})")
        for c in levels:
            n = c * waves
            before = counters(model_url, (GENERATED, PROMPT))
            cuts_before = counters(gateway, GROUNDING_COUNTERS)
            load = asyncio.run(run_load(gateway, [payload] * n, c))
            after = counters(model_url, (GENERATED, PROMPT))
            cuts_after = counters(gateway, GROUNDING_COUNTERS)
            ok = load.ok
            generated = after[GENERATED] - before[GENERATED]
            level: dict[str, Any] = {
                "concurrency": c,
                "runs": n,
                "failed": n - len(ok),
                "wall_s": load.wall_s,
                "runs_per_s": n / load.wall_s,
                "generated_tokens": generated,
                "generated_tokens_per_s": generated / load.wall_s,
                "prompt_tokens": after[PROMPT] - before[PROMPT],
                "steps_per_run": sum(s.steps for s in load.samples) / n,
                "latency_s": summarize([s.latency_s for s in load.samples]),
                # groundings cut at max_tokens whose complete actions ran; cut before any
                "grounding_cuts_kept": cuts_after[CUTS] - cuts_before[CUTS],
                "grounding_parse_failures": cuts_after[PARSE] - cuts_before[PARSE],
            }
            errors = [s.error for s in load.samples if s.error]
            if errors:
                level["first_error"] = errors[0]
            results.append(level)
            say(
                f"concurrency {c:>2}: {n} runs in {load.wall_s:.1f} s, {level['runs_per_s']:.2f} runs/s, "
                f"{level['generated_tokens_per_s']:.0f} gen tok/s, latency p50 "
                f"{level['latency_s']['p50']:.2f} s p95 {level['latency_s']['p95']:.2f} s, "
                f"{level['failed']} not succeeded, groundings cut and kept "
                f"{level['grounding_cuts_kept']:g}, unparsable {level['grounding_parse_failures']:g}"
            )
    result = {
        "setup": f"real gateway + executor + Redis, vLLM CPU (tiny random model, both modules), "
        f"maths task, max_steps {max_steps}, constrained grounding, sync runs, {waves} wave(s) per level",
        "levels": results,
    }
    path = write_json(out_dir, "concurrency", result)
    _plot(results, out_dir / "concurrency.png")
    print(
        f"{'conc':>4}{'runs':>5}{'runs/s':>8}{'gen tok/s':>10}{'p50 s':>7}{'p95 s':>7}{'steps':>6}"
    )
    for lv in results:
        print(
            f"{lv['concurrency']:>4}{lv['runs']:>5}{lv['runs_per_s']:>8.2f}"
            f"{lv['generated_tokens_per_s']:>10.0f}{lv['latency_s']['p50']:>7.2f}"
            f"{lv['latency_s']['p95']:>7.2f}{lv['steps_per_run']:>6.1f}"
        )
    say(f"wrote {path}")
    return result
