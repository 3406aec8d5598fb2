"""Per-step overhead of our loop (`lumos.agent.Agent`) against the same loop in LangGraph.

    python -m bench.baselines.compare --runs 200 --steps 5

Starts an instant scripted model server that records what it receives
(`bench.scripted_server --steps S`) and the real executor service (`python -m
services.executor`, maths tools, no Redis cache) on free loopback ports. Then, in this
process, against those same servers:

- ``lumos``: `lumos.agent.Agent` with the gateway's HTTP modules (`CompletionModule`,
  `HTTPExecutor`), no gateway, no Redis;
- ``langgraph``: `bench.baselines.langgraph_lumos` (a baseline, not a serving path);
- ``direct``: the same requests from a plain ``for`` loop (no framework), the floor that
  HTTP and the servers alone cost.

First one recorded run of each: the model server's request bodies (prompts, stop, regex...)
must be identical across the three, or the comparison stops (a baseline that sends other
prompts is not the same loop). Then `--runs` timed runs of each, interleaved (the order
rotates every round), after `--warmup` untimed rounds. With an instant model, a run's wall
time divided by its steps is all orchestration plus the HTTP hops: 2S+1 model calls and S
executor calls per run of S steps. Results: `<out-dir>/langgraph_baseline.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from bench.output import write_json
from bench.processes import Stack, say
from bench.scripted_server import COUNTING_TASK as TASK
from bench.scripted_server import counting_answer
from bench.stats import summarize
from gateway.modules import MAX_TOKENS, STOP, CompletionModule, HTTPExecutor
from lumos.actions import action_regex
from lumos.agent import Agent, AgentConfig
from lumos.domains import get_domain
from lumos.llm import CompletionClient
from lumos.prompts import ground_prompt, is_stop, plan_prompt
from lumos.trace import ExecutedAction, Step, variables_of

DOMAIN = "maths"
PLANNER_MODEL = "lumos-plan"
GROUNDER_MODEL = "lumos-ground"

RunFn = Callable[[], Awaitable[str | None]]


class PromptMismatchError(AssertionError):
    """Two implementations sent different requests to the model server for the same run."""


def _clients(model_url: str, http: httpx.AsyncClient) -> tuple[CompletionClient, CompletionClient]:
    return (
        CompletionClient(model_url, PLANNER_MODEL, client=http),
        CompletionClient(model_url, GROUNDER_MODEL, client=http),
    )


def lumos_runner(model_url: str, executor_url: str, http: httpx.AsyncClient, steps: int) -> RunFn:
    """One run of our `Agent` with the gateway's HTTP modules; returns the answer."""
    planner, grounder = _clients(model_url, http)
    agent = Agent(
        CompletionModule(planner),
        CompletionModule(grounder),
        HTTPExecutor(executor_url, client=http),
        AgentConfig(domain=DOMAIN, max_steps=steps + 1),
    )

    async def run() -> str | None:
        answer = None
        async for ev in agent.run(TASK):
            if ev.type == "error":
                raise RuntimeError(f"lumos agent failed: {ev.data}")
            if ev.type == "final":
                answer = ev.data["answer"]
        return answer

    return run


def langgraph_runner(
    model_url: str, executor_url: str, http: httpx.AsyncClient, steps: int
) -> RunFn:
    from bench.baselines.langgraph_lumos import build_graph, run_task

    planner, grounder = _clients(model_url, http)
    graph = build_graph(
        domain=DOMAIN,
        planner=planner,
        grounder=grounder,
        executor_url=executor_url,
        http=http,
        max_steps=steps + 1,
    )

    async def run() -> str | None:
        state = await run_task(graph, TASK, steps + 1)
        answer: str | None = state.get("answer")
        return answer

    return run


def direct_runner(model_url: str, executor_url: str, http: httpx.AsyncClient, steps: int) -> RunFn:
    """The same requests from a plain loop: what the HTTP hops and servers cost alone."""
    planner, grounder = _clients(model_url, http)
    dom = get_domain(DOMAIN)
    regex = action_regex(dom.tool_names)
    url = executor_url.rstrip("/") + "/v1/execute"

    async def run() -> str | None:
        done: list[Step] = []
        while len(done) <= steps:
            subgoal = (
                await planner.complete(
                    plan_prompt(dom, TASK, done), max_tokens=MAX_TOKENS, stop=STOP
                )
            ).text.strip()
            if is_stop(subgoal):
                break
            grounding = (
                await grounder.complete(
                    ground_prompt(dom, TASK, done, subgoal),
                    max_tokens=MAX_TOKENS,
                    stop=STOP,
                    regex=regex,
                )
            ).text.strip()
            body = {
                "domain": DOMAIN,
                "actions": grounding,
                "variables": variables_of(done),
                "task": TASK,
                "subgoals": [s.subgoal for s in done] + [subgoal],
            }
            response = await http.post(url, json=body)
            response.raise_for_status()
            executed = [ExecutedAction.model_validate(r) for r in response.json()["results"]]
            done.append(
                Step(index=len(done) + 1, subgoal=subgoal, grounding=grounding, executed=executed)
            )
        value = dom.final_answer(TASK, done).value
        return None if value is None else dom.answer_text(value)

    return run


async def recorded_requests(
    model_url: str, http: httpx.AsyncClient, run: RunFn
) -> tuple[list[dict[str, Any]], str | None]:
    """The model-server request bodies of one run, and its answer."""
    (await http.post(f"{model_url}/recorded/start")).raise_for_status()
    try:
        answer = await run()
        response = await http.get(f"{model_url}/recorded")
        response.raise_for_status()
        bodies: list[dict[str, Any]] = response.json()
    finally:
        await http.delete(f"{model_url}/recorded")
    return bodies, answer


def assert_same_requests(
    reference: list[dict[str, Any]], other: list[dict[str, Any]], name: str
) -> None:
    """Raise `PromptMismatchError` naming the first request where `other` differs."""
    if len(reference) != len(other):
        raise PromptMismatchError(
            f"{name} made {len(other)} model calls, lumos.agent.Agent {len(reference)}"
        )
    for i, (a, b) in enumerate(zip(reference, other, strict=True)):
        if a["prompt"] != b["prompt"]:
            raise PromptMismatchError(
                f"{name}'s prompt #{i + 1} differs from lumos.agent.Agent's:\n"
                f"--- lumos\n{a['prompt']!r}\n--- {name}\n{b['prompt']!r}"
            )
        if a != b:
            raise PromptMismatchError(
                f"{name}'s request #{i + 1} has the same prompt but a different body: "
                f"lumos {sorted(a.items())!r} vs {name} {sorted(b.items())!r}"
            )


async def measure(
    model_url: str, executor_url: str, *, runs: int, steps: int, warmup: int = 10
) -> dict[str, Any]:
    """Check the three loops send the same requests, then time them interleaved."""
    limits = httpx.Limits(max_connections=16, max_keepalive_connections=16)
    clients = {name: httpx.AsyncClient(limits=limits) for name in ("lumos", "langgraph", "direct")}
    control = httpx.AsyncClient()
    try:
        runners: dict[str, RunFn] = {
            "lumos": lumos_runner(model_url, executor_url, clients["lumos"], steps),
            "langgraph": langgraph_runner(model_url, executor_url, clients["langgraph"], steps),
            "direct": direct_runner(model_url, executor_url, clients["direct"], steps),
        }
        expected = counting_answer(steps)
        recorded: dict[str, list[dict[str, Any]]] = {}
        for name, run in runners.items():
            bodies, answer = await recorded_requests(model_url, control, run)
            if answer != expected:
                raise AssertionError(f"{name} answered {answer!r}, expected {expected!r}")
            recorded[name] = bodies
        if len(recorded["lumos"]) != 2 * steps + 1:
            raise AssertionError(
                f"lumos made {len(recorded['lumos'])} model calls for {steps} steps, "
                f"expected {2 * steps + 1}"
            )
        assert_same_requests(recorded["lumos"], recorded["langgraph"], "langgraph")
        assert_same_requests(recorded["lumos"], recorded["direct"], "direct")
        say(f"identical model requests: {len(recorded['lumos'])} per run, all three loops")

        names = list(runners)
        for _ in range(warmup):
            for name in names:
                await runners[name]()
        per_run: dict[str, list[float]] = {name: [] for name in names}
        for i in range(runs):
            order = names[i % len(names) :] + names[: i % len(names)]
            for name in order:
                started = time.perf_counter()
                answer = await runners[name]()
                per_run[name].append(time.perf_counter() - started)
                if answer != expected:
                    raise AssertionError(f"{name} answered {answer!r}, expected {expected!r}")
    finally:
        for c in clients.values():
            await c.aclose()
        await control.aclose()

    impls: dict[str, Any] = {}
    for name, samples in per_run.items():
        impls[name] = {
            "run_s": summarize(samples),
            "per_step_s": summarize([s / steps for s in samples]),
        }
    lum, lg = impls["lumos"]["per_step_s"], impls["langgraph"]["per_step_s"]
    floor = impls["direct"]["per_step_s"]
    return {
        "runs": runs,
        "steps": steps,
        "warmup_rounds": warmup,
        "model_calls_per_run": 2 * steps + 1,
        "executor_calls_per_run": steps,
        "identical_model_requests": True,
        "implementations": impls,
        "ratio_langgraph_over_lumos": {k: lg[k] / lum[k] for k in ("p50", "p95", "mean")},
        # what each loop adds on top of a plain loop making the same requests
        "orchestration_per_step_s": {
            name: {k: impls[name]["per_step_s"][k] - floor[k] for k in ("p50", "p95")}
            for name in ("lumos", "langgraph")
        },
    }


def start_servers(stack: Stack, steps: int) -> tuple[str, str]:
    """The recording model server and the real executor (no cache); their base URLs."""
    return stack.scripted_model(steps, name="recording-model"), stack.executor()


def run(runs: int, steps: int, out_dir: Path | None, warmup: int = 10) -> dict[str, Any]:
    """Start the servers, measure, stop them; write the JSON when `out_dir` is given."""
    if runs < 1 or steps < 1:
        raise ValueError("--runs and --steps must be at least 1")
    load_before = os.getloadavg()
    with Stack() as stack:
        model_url, executor_url = start_servers(stack, steps)
        result = asyncio.run(
            measure(model_url, executor_url, runs=runs, steps=steps, warmup=warmup)
        )
    # the client, the model server and the executor share this machine's CPUs; a busy
    # machine (other benchmarks, test suites) inflates every column, p95 most
    result["loadavg_1m"] = {"before": load_before[0], "after": os.getloadavg()[0]}
    if out_dir is not None:
        path = write_json(out_dir, "langgraph_baseline", result)
        say(f"wrote {path}")
    return result


def report(result: dict[str, Any]) -> str:
    lines = [
        f"per step ({result['steps']} steps/run, {result['runs']} runs each, interleaved; "
        f"{result['model_calls_per_run']} model + {result['executor_calls_per_run']} executor "
        "calls per run, instant model):"
    ]
    for name, impl in result["implementations"].items():
        s = impl["per_step_s"]
        lines.append(
            f"  {name:<10} p50 {s['p50'] * 1000:7.2f} ms   p95 {s['p95'] * 1000:7.2f} ms   "
            f"mean {s['mean'] * 1000:7.2f} ms"
        )
    r = result["ratio_langgraph_over_lumos"]
    lines.append(f"  langgraph / lumos: p50 {r['p50']:.2f}x, p95 {r['p95']:.2f}x")
    for name, o in result["orchestration_per_step_s"].items():
        lines.append(
            f"  {name} over the plain loop: p50 {o['p50'] * 1000:+.2f} ms, "
            f"p95 {o['p95'] * 1000:+.2f} ms per step"
        )
    if "loadavg_1m" in result:
        load = result["loadavg_1m"]
        lines.append(
            f"  (1-min load average {load['before']:.1f} before, {load['after']:.1f} after, "
            f"{os.cpu_count()} CPUs)"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Per-step overhead: lumos.agent.Agent vs the same loop in LangGraph."
    )
    parser.add_argument("--runs", type=int, default=200, help="timed runs of each loop")
    parser.add_argument("--steps", type=int, default=5, help="plan/ground/execute steps per run")
    parser.add_argument("--warmup", type=int, default=10, help="untimed rounds first")
    parser.add_argument("--out-dir", type=Path, default=Path("bench_results"))
    args = parser.parse_args(argv)
    result = run(args.runs, args.steps, args.out_dir, warmup=args.warmup)
    print(report(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
