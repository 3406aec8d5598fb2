"""`lumos bench original`: the original evaluation's way of generating vs our serving stack.

(a) The original harness's method: for every plan and ground turn, load the model from disk,
    generate for all questions in one left-padded batch with Hugging Face `generate`
    (greedy, stop at a newline), then drop the model; prompts are our byte-exact Lumos
    prompts; between iterations the grounder's actions are not executed (an empty result
    is fed back), which costs the original's tool time nothing.
(b) Our stack: the same questions as concurrent runs through the gateway, executor, Redis
    and the resident vLLM CPU server, max_steps equal to (a)'s iterations; once with the
    action grammar (the default) and once with LUMOS_CONSTRAIN_GROUNDING=false.

Both use the same tiny random model folder on the same machine and the same cap on new
tokens. The random model's text is meaningless, so the two sides generate different
numbers of tokens; compare tokens/s as well as wall time.
"""

from __future__ import annotations

import asyncio
import gc
import time
from itertools import islice
from pathlib import Path
from typing import Any

import httpx

from bench.load import run_load
from bench.output import write_json
from bench.processes import TINY_MODEL_DIR, Stack, say
from eval.data_dir import eval_data_dir
from lumos.domains import resolve_domain
from lumos.jsonl import json_object, read_jsonl
from lumos.prompts import ground_prompt, plan_prompt
from lumos.trace import Step


def load_questions(n: int, data_dir: Path | None = None) -> list[str]:
    path = (data_dir or eval_data_dir()) / "gsm8k" / "dev.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"no GSM8K dev set at {path}; expected <data-dir>/gsm8k/dev.jsonl")
    return [row["question"] for _, row in islice(read_jsonl(path, json_object), n)]


def _newline_ids(tokenizer: Any) -> list[int]:
    ids = [i for i in range(len(tokenizer)) if "\n" in tokenizer.decode([i])]
    if tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    return ids


def hf_turn(model_dir: Path, prompts: list[str], max_new_tokens: int) -> dict[str, Any]:
    """One turn as the original does it: load from disk, one padded batch, greedy, newline stop."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.eval()  # type: ignore[no-untyped-call]
    loaded = time.perf_counter()
    batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.inference_mode():
        out = model.generate(
            **batch,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            # a sequence ends at its first token containing a newline (or EOS); finished
            # rows are padded while the rest of the batch goes on, as in the original
            eos_token_id=_newline_ids(tokenizer),
            pad_token_id=tokenizer.pad_token_id,
        )
    done = time.perf_counter()
    new = out[:, batch["input_ids"].shape[1] :]
    texts, generated = [], 0
    for row in new:
        ids = [int(t) for t in row if int(t) != tokenizer.pad_token_id]
        generated += len(ids)
        texts.append(str(tokenizer.decode(ids, skip_special_tokens=True)).split("\n", 1)[0].strip())
    del model
    gc.collect()
    return {
        "texts": texts,
        "load_s": loaded - started,
        "generate_s": done - loaded,
        "wall_s": time.perf_counter() - started,
        "prompt_tokens": int(batch["attention_mask"].sum()),
        "generated_tokens": generated,
    }


def original_side(
    model_dir: Path, questions: list[str], iterations: int, max_new_tokens: int
) -> dict[str, Any]:
    domain = resolve_domain("maths")
    steps: list[list[Step]] = [[] for _ in questions]
    turns: list[dict[str, Any]] = []
    started = time.perf_counter()
    for k in range(1, iterations + 1):
        plans = hf_turn(
            model_dir, [plan_prompt(domain, q, s) for q, s in zip(questions, steps, strict=True)],
            max_new_tokens,
        )  # fmt: skip
        turns.append({"turn": f"plan {k}", **{x: v for x, v in plans.items() if x != "texts"}})
        say(f"  (a) plan {k}: load {plans['load_s']:.2f} s + generate {plans['generate_s']:.2f} s, "
            f"{plans['generated_tokens']} tokens")  # fmt: skip
        subgoals = [t or f"Subgoal {k}: (empty)" for t in plans["texts"]]
        grounds = hf_turn(
            model_dir,
            [
                ground_prompt(domain, q, s, g)
                for q, s, g in zip(questions, steps, subgoals, strict=True)
            ],
            max_new_tokens,
        )
        turns.append({"turn": f"ground {k}", **{x: v for x, v in grounds.items() if x != "texts"}})
        say(f"  (a) ground {k}: load {grounds['load_s']:.2f} s + generate {grounds['generate_s']:.2f} s, "
            f"{grounds['generated_tokens']} tokens")  # fmt: skip
        for s, g, a in zip(steps, subgoals, grounds["texts"], strict=True):
            s.append(Step(index=k, subgoal=g, grounding=a or "R1 = Calculator(0)"))
    wall = time.perf_counter() - started
    generated = sum(t["generated_tokens"] for t in turns)
    return {
        "wall_s": wall,
        "turns": len(turns),
        "model_loads": len(turns),
        "load_s": sum(t["load_s"] for t in turns),
        "generated_tokens": generated,
        "tokens_per_s": generated / wall,
        "per_turn": turns,
        "first_iteration_wall_s": sum(t["wall_s"] for t in turns[:2]),
        "first_iteration_generated_tokens": sum(t["generated_tokens"] for t in turns[:2]),
    }


def _our_pass(
    gateway: str, model_url: str, questions: list[str], iterations: int
) -> dict[str, Any]:
    try:  # a cold prefix cache, as (a) has none
        reset = httpx.post(f"{model_url}/reset_prefix_cache", timeout=30).status_code == 200
    except httpx.HTTPError:
        reset = False
    payloads = [{"task": q, "domain": "maths", "max_steps": iterations} for q in questions]
    load = asyncio.run(run_load(gateway, payloads, len(payloads)))
    generated = sum(s.timings.get("completion_tokens", 0) for s in load.samples)
    turns = sum(
        s.timings.get("planner_calls", 0) + s.timings.get("grounder_calls", 0) for s in load.samples
    )
    statuses: dict[str, int] = {}
    for s in load.samples:
        key = s.status if s.error is None else f"{s.status} ({s.error.split(':')[0]})"
        statuses[key] = statuses.get(key, 0) + 1
    return {
        "wall_s": load.wall_s,
        "model_turns_per_question": turns / len(questions),
        "generated_tokens": generated,
        "tokens_per_s": generated / load.wall_s,
        "prefix_cache_reset": reset,
        "runs": statuses,
    }


def _plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    names = ["original (HF, reload per turn)", "ours, constrained", "ours, unconstrained"]
    sides = [result["original"], result["ours_constrained"], result["ours_unconstrained"]]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    a.bar(names, [s["wall_s"] for s in sides], color=["tab:gray", "tab:blue", "tab:cyan"])
    a.set(ylabel="wall time (s)", title=f"{result['questions']} GSM8K questions, tiny model")
    b.bar(names, [s["tokens_per_s"] for s in sides], color=["tab:gray", "tab:blue", "tab:cyan"])
    b.set(ylabel="generated tokens/s", title="generation throughput")
    for ax in (a, b):
        ax.tick_params(axis="x", labelsize=8)
        ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(
    out_dir: Path,
    *,
    questions: int,
    max_steps: int,
    max_new_tokens: int,
    model_dir: Path = TINY_MODEL_DIR,
) -> dict[str, Any]:
    qs = load_questions(questions)
    say(f"original: (a) HF generate, model reloaded per turn: {len(qs)} questions x "
        f"{max_steps} iterations = {2 * max_steps} turns, max_new_tokens {max_new_tokens}")  # fmt: skip
    original = original_side(model_dir, qs, max_steps, max_new_tokens)
    say(f"  (a) {original['wall_s']:.1f} s, {original['generated_tokens']} tokens, "
        f"{original['tokens_per_s']:.0f} tokens/s")  # fmt: skip
    warm_payload = load_questions(len(qs) + 1)[-1]
    with Stack() as stack:
        say(f"(b) our stack: starting redis, executor, vLLM CPU, gateway (logs {stack.log_dir})")
        redis_url = stack.redis()
        executor_url = stack.executor(redis_url)
        t0 = time.perf_counter()
        model_url = stack.vllm(model_dir, kv_cache_gib=2, dev_mode=True)
        vllm_start_s = time.perf_counter() - t0
        ours: dict[str, dict[str, Any]] = {}
        for label, constrain in (("ours_constrained", "true"), ("ours_unconstrained", "false")):
            gateway = stack.gateway(
                redis_url, model_url, executor_url,
                extra_env={"LUMOS_CONSTRAIN_GROUNDING": constrain}, name=f"gateway-{label}",
            )  # fmt: skip
            # one run of another question first: the grammar compiles once per server
            asyncio.run(run_load(gateway, [{"task": warm_payload, "domain": "maths",
                                            "max_steps": 1}], 1))  # fmt: skip
            ours[label] = _our_pass(gateway, model_url, qs, max_steps)
            o = ours[label]
            say(f"  (b) {label}: {o['wall_s']:.1f} s, {o['generated_tokens']} tokens, "
                f"{o['tokens_per_s']:.0f} tokens/s, {o['model_turns_per_question']:.1f} turns/question, "
                f"runs {o['runs']}")  # fmt: skip
            stack.stop_one(f"gateway-{label}")
    result: dict[str, Any] = {
        "questions": len(qs),
        "iterations": max_steps,
        "max_new_tokens": max_new_tokens,
        "model": str(model_dir),
        "original": original,
        "ours_constrained": ours["ours_constrained"],
        "ours_unconstrained": ours["ours_unconstrained"],
        "vllm_startup_s": vllm_start_s,
        "differences": [
            "tiny random model: text is meaningless, so the sides generate different token counts",
            "(a) uses HF transformers in float32 (torch CPU); (b) vLLM's CPU backend",
            "(a) feeds back no tool results between iterations; (b) executes actions for real",
            "(b) constrained: the grounder follows the action grammar, so runs reach max_steps; "
            "(b) unconstrained: random groundings do not parse and a run ends after its first "
            "grounding (fewer turns than (a); compare with (a)'s first iteration)",
            "(b)'s vLLM start-up is paid once per server, not per turn, and is not in its wall time",
        ],
    }
    a, c, u = original, ours["ours_constrained"], ours["ours_unconstrained"]
    result["ratios"] = {
        "wall_original_over_constrained": a["wall_s"] / c["wall_s"],
        "tokens_per_s_constrained_over_original": c["tokens_per_s"] / a["tokens_per_s"],
        "wall_original_first_iteration_over_unconstrained": a["first_iteration_wall_s"]
        / u["wall_s"],
        "tokens_per_s_unconstrained_over_original": u["tokens_per_s"] / a["tokens_per_s"],
    }
    path = write_json(out_dir, "original", result)
    _plot(result, out_dir / "original.png")
    print(f"{'side':<34}{'wall s':>8}{'turns/q':>8}{'gen tok':>8}{'tok/s':>8}")
    print(f"{'(a) original: HF, reload per turn':<34}{a['wall_s']:>8.1f}{a['turns']:>8}"
          f"{a['generated_tokens']:>8}{a['tokens_per_s']:>8.0f}")  # fmt: skip
    print(f"{'(a) first iteration only':<34}{a['first_iteration_wall_s']:>8.1f}{2:>8}"
          f"{a['first_iteration_generated_tokens']:>8}")  # fmt: skip
    for name, o in (("(b) ours, constrained grounding", c), ("(b) ours, unconstrained", u)):
        print(f"{name:<34}{o['wall_s']:>8.1f}{o['model_turns_per_question']:>8.1f}"
              f"{o['generated_tokens']:>8}{o['tokens_per_s']:>8.0f}")  # fmt: skip
    r = result["ratios"]
    print(
        f"wall time original/ours (constrained): {r['wall_original_over_constrained']:.1f}x; "
        f"tokens/s ours/original: {r['tokens_per_s_constrained_over_original']:.1f}x\n"
        f"unconstrained: first-iteration wall original/ours "
        f"{r['wall_original_first_iteration_over_unconstrained']:.1f}x; tokens/s ours/original "
        f"{r['tokens_per_s_unconstrained_over_original']:.1f}x\n"
        f"(vLLM start-up, once: {vllm_start_s:.0f} s)"
    )
    say(f"wrote {path}")
    return result
