"""`lumos bench`: its statistics, its scripted model server, and a small overhead run."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import httpx
import pytest

from bench.cli import add_parser
from bench.scripted_server import (
    COUNTING_TASK,
    GROUNDS,
    PLANS,
    TASK,
    counting_answer,
    counting_recording,
    create_app,
)
from bench.stats import percentile, summarize
from bench.vllm_metrics import PREFIX_HITS, PREFIX_QUERIES, counter
from lumos.domains import resolve_domain
from lumos.llm import CompletionClient
from lumos.prompts import ground_prompt, plan_prompt
from lumos.trace import Step
from tests.redis_server import require_redis_binary

# --- statistics -----------------------------------------------------------------------------


def test_percentile_interpolates_linearly_between_ranks() -> None:
    values = [4.0, 1.0, 3.0, 2.0]  # sorted: 1 2 3 4, ranks 0..3
    assert percentile(values, 0) == 1.0
    assert percentile(values, 50) == pytest.approx(2.5)  # rank 1.5
    assert percentile(values, 95) == pytest.approx(3.85)  # rank 2.85: 3 + 0.85
    assert percentile(values, 99) == pytest.approx(3.97)  # rank 2.97
    assert percentile(values, 100) == 4.0


def test_percentile_of_one_sample_is_that_sample() -> None:
    assert percentile([7.0], 50) == percentile([7.0], 99) == 7.0


def test_summary_of_one_to_ten() -> None:
    s = summarize([float(v) for v in range(1, 11)])
    assert s["n"] == 10
    assert s["mean"] == pytest.approx(5.5)
    assert s["p50"] == pytest.approx(5.5)  # rank 4.5
    assert s["p95"] == pytest.approx(9.55)  # rank 8.55
    assert s["p99"] == pytest.approx(9.91)  # rank 8.91
    assert (s["min"], s["max"]) == (1.0, 10.0)


@pytest.mark.parametrize("bad", [[], [1.0]])
def test_percentile_refuses_no_samples_and_out_of_range(bad: list[float]) -> None:
    with pytest.raises(ValueError):
        percentile(bad, 50 if not bad else 101)


def test_vllm_counter_sums_every_label_set_and_skips_comments() -> None:
    text = (
        "# HELP vllm:prefix_cache_queries_total Prefix cache queries\n"
        f'{PREFIX_QUERIES}{{engine="0",model_name="lumos-plan"}} 300.0\n'
        f'{PREFIX_QUERIES}{{engine="1",model_name="lumos-plan"}} 12.0\n'
        f'{PREFIX_HITS}{{engine="0",model_name="lumos-plan"}} 256.0\n'
        f'{PREFIX_QUERIES}_created{{engine="0"}} 1.7e9\n'
    )
    assert counter(text, PREFIX_QUERIES) == 312.0
    assert counter(text, PREFIX_HITS) == 256.0
    assert counter(text, "vllm:absent_total") == 0.0


# --- the scripted completions server ---------------------------------------------------------


def _client() -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app()), base_url="http://s")


async def test_scripted_server_answers_completions_like_vllm_with_usage() -> None:
    prompt = plan_prompt(resolve_domain("maths"), TASK, [])
    async with _client() as c:
        r = await c.post(
            "/v1/completions",
            json={"model": "lumos-plan", "prompt": prompt, "max_tokens": 512, "stop": ["\n"],
                  "temperature": 0.0},
        )  # fmt: skip
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "text_completion"
    assert body["model"] == "lumos-plan"
    (choice,) = body["choices"]
    assert choice["text"] == PLANS[0]
    assert choice["finish_reason"] == "stop"
    usage = body["usage"]
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


async def test_scripted_server_records_request_bodies_as_sent_only_while_asked() -> None:
    body = {"model": "lumos-plan", "prompt": plan_prompt(resolve_domain("maths"), TASK, [])}
    async with _client() as c:
        await c.post("/v1/completions", json=body)
        assert (await c.post("/recorded/start")).json() == {"recording": True}
        await c.post("/v1/completions", json={**body, "stop": ["\n"]})
        recorded = (await c.get("/recorded")).json()
        assert (await c.delete("/recorded")).json() == {"recording": False}
        await c.post("/v1/completions", json=body)
        after = (await c.get("/recorded")).json()
    assert recorded == [{**body, "stop": ["\n"]}]  # no defaults filled in
    assert after == []


async def test_the_counting_script_answers_s_steps_then_stops() -> None:
    script = counting_recording(3)
    maths = resolve_domain("maths")
    app = create_app(script)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://s") as c:
        planner = CompletionClient("http://s", "lumos-plan", client=c)
        done: list[Step] = []
        for k in range(1, 4):
            subgoal = (await planner.complete(plan_prompt(maths, COUNTING_TASK, done))).text
            grounding = (
                await planner.complete(ground_prompt(maths, COUNTING_TASK, done, subgoal))
            ).text
            done.append(Step(index=k, subgoal=subgoal, grounding=grounding))
        last = (await planner.complete(plan_prompt(maths, COUNTING_TASK, done))).text
    assert [s.grounding for s in done] == [
        "R1 = Calculator(1+1)", "R2 = Calculator(R1+2)", "R3 = Calculator(R2+3)",
    ]  # fmt: skip
    assert last == "Yes, I will stop planning."
    assert counting_answer(3) == str(1 + 1 + 2 + 3)


async def test_scripted_server_picks_module_and_step_from_the_prompt_shape() -> None:
    maths = resolve_domain("maths")
    done = [Step(index=1, subgoal=PLANS[0], grounding=GROUNDS[0])]
    async with _client() as c:
        # the grounder's prompt is recognised by its text even under the planner's name
        planner = CompletionClient("http://s", "lumos-plan", client=c)
        grounder = CompletionClient("http://s", "lumos-ground", client=c)
        first_ground = await planner.complete(ground_prompt(maths, TASK, [], PLANS[0]))
        second_plan = await planner.complete(plan_prompt(maths, TASK, done))
        second_ground = await grounder.complete(
            ground_prompt(maths, TASK, done, PLANS[1]), regex="R.*"
        )
        models = (await c.get("/v1/models")).json()
        health = await c.get("/health")
    assert first_ground.text == GROUNDS[0]
    assert second_plan.text == PLANS[1]
    assert second_ground.text == GROUNDS[1]
    assert second_ground.prompt_tokens > first_ground.prompt_tokens
    assert {m["id"] for m in models["data"]} == {"lumos-plan", "lumos-ground"}
    assert health.status_code == 200


# --- the command line ------------------------------------------------------------------------


def test_add_parser_gives_every_benchmark_a_func() -> None:
    parser = argparse.ArgumentParser(prog="lumos")
    add_parser(parser.add_subparsers(dest="command"))
    for name in ("overhead", "prefix-cache", "concurrency", "original"):
        args = parser.parse_args(["bench", name, "--out-dir", "x"])
        assert callable(args.func)
        assert args.out_dir == Path("x")
    args = parser.parse_args(["bench", "overhead", "--concurrency", "1,8"])
    assert args.concurrency == [1, 8]


# --- a small overhead run on the real gateway, executor and Redis -----------------------------


@pytest.mark.redis
@pytest.mark.slow
def test_overhead_smoke_run_writes_sane_results(tmp_path: Path) -> None:
    from bench import overhead

    require_redis_binary()
    overhead.run(tmp_path, concurrency=[1, 2], runs=4, warmup=1, profile_runs=3)
    result = json.loads((tmp_path / "overhead.json").read_text())
    assert result["benchmark"] == "overhead"
    assert [lv["concurrency"] for lv in result["levels"]] == [1, 2]
    for level in result["levels"]:
        assert level["runs"] == 4 and level["failed"] == 0, level
        assert level["runs_per_s"] > 0
        assert level["steps_per_run"] == 3  # the recorded run: three steps, then stop
        for key in ("per_step_s", "run_latency_s", "gateway_own_per_step_s"):
            s = level[key]
            assert 0 < s["p50"] <= s["p95"] <= s["p99"] <= s["max"], (key, s)
        # a step includes at least the gateway's own share of it
        assert level["per_step_s"]["p50"] > level["gateway_own_per_step_s"]["min"]
    assert (tmp_path / "overhead.png").stat().st_size > 0
    profile = Path(result["profile"])
    assert "Agent" in profile.read_text()  # the loop shows up in the hottest path


# --- the prefix-cache benchmark on its own vLLM CPU server (~30 s) ---------------------------


@pytest.mark.vllm
@pytest.mark.slow
def test_prefix_cache_second_step_reuses_the_first_steps_prompt(tmp_path: Path) -> None:
    import os

    from bench import prefix_cache
    from bench.processes import VLLM_PYTHON

    if not VLLM_PYTHON.exists():
        if os.environ.get("LUMOS_REQUIRE_VLLM"):
            pytest.fail(f"{VLLM_PYTHON} is missing and LUMOS_REQUIRE_VLLM is set")
        pytest.skip(f"{VLLM_PYTHON} is missing; create it with scripts/setup_vllm.sh")
    prefix_cache.run(tmp_path, steps=2)
    result = json.loads((tmp_path / "prefix_cache.json").read_text())
    rows = {(r["module"], r["step"]): r for r in result["requests"]}
    assert set(rows) == {("plan", 1), ("ground", 1), ("plan", 2), ("ground", 2)}
    assert rows[("plan", 1)]["hit_tokens"] == 0  # a fresh server has nothing cached
    # the grounder's second prompt extends its first by a turn: whole blocks come from cache
    assert rows[("ground", 2)]["hit_tokens"] >= 128
    assert all(r["queried_tokens"] >= r["prompt_tokens"] > 0 for r in rows.values())
