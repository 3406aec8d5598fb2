"""The LangGraph baseline (bench/baselines) is the same loop as lumos.agent.Agent.

Same planner and grounder requests, byte for byte, for a recorded 3-step maths run (model
server and executor faked in-process); and a small real comparison (scripted model server
and the real executor as processes) returns sane numbers.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

pytest.importorskip(
    "langgraph",
    reason="langgraph is an optional extra (pip install -e '.[baselines]'); "
    "the LangGraph benchmark baseline cannot run without it",
)

from bench.baselines import compare  # noqa: E402
from bench.scripted_server import (  # noqa: E402
    answer_for,
    counting_answer,
    counting_recording,
)
from lumos.actions import parse_actions  # noqa: E402
from lumos.prompts import USER  # noqa: E402

MODEL_URL = "http://model.test"
EXECUTOR_URL = "http://executor.test"
STEPS = 3


class FakeServers:
    """An instant model server that records request bodies, and an executor that binds
    each action's outputs to its step's expected running total."""

    def __init__(self, steps: int) -> None:
        self.steps = steps
        self.model_requests: list[dict[str, Any]] = []
        self.executor_requests: list[dict[str, Any]] = []

    async def handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if request.url.path == "/v1/completions":
            self.model_requests.append(body)
            text = answer_for(counting_recording(self.steps), body["model"], body["prompt"])
            return httpx.Response(
                200,
                json={
                    "model": body["model"],
                    "choices": [{"text": text, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1},
                },
            )
        assert request.url.path == "/v1/execute"
        self.executor_requests.append(body)
        actions = body["actions"]
        if isinstance(actions, str):
            actions = [
                {"outputs": list(a.outputs), "name": a.name, "args": a.args}
                for a in parse_actions(actions)
            ]
        results = []
        for a in actions:
            k = int(a["outputs"][0][1:])
            results.append({**a, "values": [counting_answer(k)]})
        return httpx.Response(200, json={"results": results, "variables": {}})

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self.handle))


async def _recorded(make_runner: Any) -> tuple[FakeServers, str | None]:
    fake = FakeServers(STEPS)
    async with fake.client() as http:
        answer = await make_runner(MODEL_URL, EXECUTOR_URL, http, STEPS)()
    return fake, answer


async def test_langgraph_sends_the_same_prompts_as_the_agent() -> None:
    ours, our_answer = await _recorded(compare.lumos_runner)
    theirs, their_answer = await _recorded(compare.langgraph_runner)

    assert our_answer == their_answer == counting_answer(STEPS)
    # 3 x (plan, ground) + the planner's stop
    assert len(ours.model_requests) == 2 * STEPS + 1
    assert [r["prompt"] for r in theirs.model_requests] == [
        r["prompt"] for r in ours.model_requests
    ]
    assert theirs.model_requests == ours.model_requests  # stop, max_tokens, regex, model too
    compare.assert_same_requests(ours.model_requests, theirs.model_requests, "langgraph")

    # the recording really drove the run: every scripted output was asked for, in order
    planner = [r for r in ours.model_requests if r["model"] == compare.PLANNER_MODEL]
    grounder = [r for r in ours.model_requests if r["model"] == compare.GROUNDER_MODEL]
    script = counting_recording(STEPS)
    assert [answer_for(script, r["model"], r["prompt"]) for r in planner] == script.planner_outputs
    assert [
        answer_for(script, r["model"], r["prompt"]) for r in grounder
    ] == script.grounder_outputs
    assert [r["prompt"].count(USER) for r in planner] == [1, 2, 3, 4]

    # the executor saw the same run state from both (actions as text vs parsed is the
    # only difference: the baseline lets the executor parse the grounder's text)
    assert len(ours.executor_requests) == len(theirs.executor_requests) == STEPS
    for a, b in zip(ours.executor_requests, theirs.executor_requests, strict=True):
        for key in ("domain", "variables", "task", "subgoals"):
            assert a[key] == b[key], key
        parsed = [
            {"outputs": list(x.outputs), "name": x.name, "args": x.args}
            for x in parse_actions(b["actions"])
        ]
        assert parsed == a["actions"]


def test_a_different_prompt_is_caught() -> None:
    reference = [{"prompt": "a", "model": "m"}, {"prompt": "b", "model": "m"}]
    with pytest.raises(compare.PromptMismatchError, match="prompt #2"):
        compare.assert_same_requests(reference, [reference[0], {"prompt": "c", "model": "m"}], "x")
    with pytest.raises(compare.PromptMismatchError, match="different body"):
        compare.assert_same_requests(reference, [reference[0], {"prompt": "b", "model": "n"}], "x")
    with pytest.raises(compare.PromptMismatchError, match="1 model calls"):
        compare.assert_same_requests(reference, reference[:1], "x")


def test_small_comparison_against_real_servers(tmp_path: Any) -> None:
    result = compare.run(runs=4, steps=2, out_dir=tmp_path, warmup=1)

    assert result["identical_model_requests"] is True
    for name in ("lumos", "langgraph", "direct"):
        per_step = result["implementations"][name]["per_step_s"]
        assert per_step["n"] == 4
        assert 0 < per_step["p50"] <= per_step["p95"] < 5.0
    for ratio in result["ratio_langgraph_over_lumos"].values():
        assert ratio > 0
    written = json.loads((tmp_path / "langgraph_baseline.json").read_text())
    assert written["benchmark"] == "langgraph_baseline"
    assert written["implementations"]["langgraph"]["per_step_s"]["p50"] > 0
    assert "langgraph / lumos" in compare.report(result)
