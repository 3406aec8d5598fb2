"""The eval harness end to end, against a scripted stand-in for the gateway.

`ScriptedGateway` is a test harness only: a FastAPI app that answers ``POST /agent/run``
from a fixed script keyed by task text (and ``/v1/chat/completions`` as a judge), counting
calls and runs in flight. It runs in-process (httpx's ASGI transport) or on loopback (uvicorn).
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from eval.agent_client import AgentClient, GatewayTarget, parse_run
from eval.cli import main
from eval.datasets import BENCHMARKS, load_questions
from eval.harness import EvalOptions, read_predictions, run_benchmark
from eval.judge import JudgeConfig, LLMJudge
from eval.report import write_report

API_KEY = "test-key"

# The toy GSM8K run: task -> (gold line, scripted reply). Hand-checked outcome:
# q1 right by both rules, q2 right numerically only ("$1,200" vs "1200"), q3 wrong, q4 fails.
TOY = {
    "Janet has 9 eggs and sells them for $2 each. How much does she make?": (
        "#### 18",
        {"answer": "18", "steps": 2, "omit_steps": True},
    ),
    "A bike costs $1,000 plus $200 tax. What is the total?": (
        "#### 1,200",
        {"answer": "$1,200", "steps": 3},
    ),
    "Tom has 3 apples and gets 5 more. How many apples?": ("#### 8", {"answer": "7", "steps": 1}),
    "A question the planner never answers?": ("#### 5", {"fail": "planner unreachable"}),
}


def _events(reply: dict[str, Any]) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = [{"type": "started", "step": 0, "data": {}}]
    for k in range(1, reply.get("steps", 0) + 1):
        events += [
            {"type": "subgoal", "step": k, "data": {"text": f"Subgoal {k}: ..."}},
            {"type": "actions", "step": k, "data": {"text": f"R{k} = Calculator(1+1)"}},
            {
                "type": "results",
                "step": k,
                "data": {
                    "executed": [
                        {"outputs": [f"R{k}"], "name": "Calculator", "args": "1+1", "values": ["2"]}
                    ]
                },
            },
        ]
    final: dict[str, Any] = {"answer": reply["answer"], "finished_by": "planner_stop"}
    if not reply.get("omit_steps"):
        final["steps"] = reply["steps"]
    if "reward" in reply:
        final["reward"] = reply["reward"]
    return [*events, {"type": "final", "step": reply["steps"], "data": final}]


class ScriptedGateway:
    """Test stand-in for the gateway (see module docstring)."""

    def __init__(self, script: dict[str, dict[str, Any]], *, delay_s: float = 0.05) -> None:
        self.script = script
        self.delay_s = delay_s
        self.bodies: list[dict[str, Any]] = []
        self.keys: list[str | None] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.app = FastAPI()
        self.app.post("/agent/run")(self._run)
        self.app.post("/v1/chat/completions")(self._judge)

    async def _run(self, request: Request) -> JSONResponse:
        if request.headers.get("authorization") != f"Bearer {API_KEY}":
            return JSONResponse({"detail": "bad key"}, status_code=401)
        body = await request.json()
        self.bodies.append(body)
        self.keys.append(request.headers.get("idempotency-key"))
        run_id = f"run-{len(self.bodies)}"
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay_s)
        finally:
            self.in_flight -= 1
        reply = self.script[body["task"]]
        # The shape of the gateway's RunView: id, status, answer, error, steps, trace.
        if "fail" in reply:
            error = {"reason": "module_error", "message": reply["fail"]}
            trace = [{"type": "error", "step": 1, "data": error}]
            view = {
                "id": run_id,
                "status": "failed",
                "answer": None,
                "error": error,
                "steps": 0,
                "trace": trace,
            }
            return JSONResponse(view)
        view = {
            "id": run_id,
            "status": "succeeded",
            "answer": reply["answer"],
            "error": None,
            "trace": _events(reply),
        }
        return JSONResponse(view)

    async def _judge(self, request: Request) -> JSONResponse:
        prompt = (await request.json())["messages"][0]["content"]
        verdict = "CORRECT" if "Model prediction: The Beatles\n" in prompt else "INCORRECT"
        return JSONResponse({"choices": [{"message": {"role": "assistant", "content": verdict}}]})


def _write_toy_data(data_dir: Path) -> None:
    (data_dir / "gsm8k").mkdir(parents=True)
    with (data_dir / "gsm8k" / "dev.jsonl").open("w") as fh:
        for question, (gold, _) in TOY.items():
            fh.write(
                json.dumps({"question": f"  {question}\n", "answer": f"Some working.\n{gold}"})
                + "\n"
            )


def _toy_gateway(**kw: Any) -> ScriptedGateway:
    return ScriptedGateway({q: reply for q, (_, reply) in TOY.items()}, **kw)


@pytest.fixture
def toy(tmp_path: Path):
    data_dir = tmp_path / "data"
    _write_toy_data(data_dir)
    return BENCHMARKS["gsm8k"], load_questions(BENCHMARKS["gsm8k"], data_dir=data_dir)


async def _run(gateway: ScriptedGateway, benchmark, questions, path: Path, **options: Any):
    transport = httpx.ASGITransport(app=gateway.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        agent = AgentClient(GatewayTarget("http://gateway", api_key=API_KEY, retries=0), client)
        return await run_benchmark(
            benchmark,
            questions,
            path,
            agent=agent,
            options=EvalOptions(show_progress=False, **options),
        )


async def test_toy_run_writes_one_hand_checked_record_per_question(toy, tmp_path):
    benchmark, questions = toy
    gateway = _toy_gateway()
    path = tmp_path / "out" / "gsm8k.iterative.predictions.jsonl"
    result = await _run(gateway, benchmark, questions, path, concurrency=2)

    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) == 4
    by_question = {r["question"]: r for r in result.records}
    q1, q2, q3, q4 = (by_question[q] for q in TOY)
    assert (q1["gold"], q1["prediction"], q1["correct"], q1["steps"], q1["error"]) == (
        "18",
        "18",
        True,
        2,
        None,
    )
    assert q1["scores"] == {"accuracy_original": 1.0, "accuracy_numeric": 1.0}
    assert (q2["gold"], q2["prediction"], q2["correct"], q2["steps"]) == ("1200", "$1,200", True, 3)
    assert q2["scores"] == {"accuracy_original": 0.0, "accuracy_numeric": 1.0}
    assert (q3["prediction"], q3["correct"], q3["steps"]) == ("7", False, 1)
    assert (q4["prediction"], q4["correct"], q4["error"]) == (
        None,
        False,
        "module_error: planner unreachable",
    )
    assert all(r["latency_s"] >= 0.05 for r in result.records)
    assert {r["run_id"] for r in result.records} == {"run-1", "run-2", "run-3", "run-4"}
    # The request is the original task text (question stripped), domain and step budget.
    assert sorted(b["task"] for b in gateway.bodies) == sorted(TOY)
    assert {(b["domain"], b["formulation"], b["max_steps"]) for b in gateway.bodies} == {
        ("maths", "iterative", 8)
    }
    assert all(b.keys() == {"task", "domain", "formulation", "max_steps"} for b in gateway.bodies)
    assert len(set(gateway.keys)) == 4 and all(k.startswith("lumos-eval-") for k in gateway.keys)


async def test_second_run_skips_answered_questions_and_retries_failed_ones(toy, tmp_path):
    benchmark, questions = toy
    gateway = _toy_gateway(delay_s=0.0)
    path = tmp_path / "preds.jsonl"
    await _run(gateway, benchmark, questions[:2], path)
    assert len(gateway.bodies) == 2

    second = await _run(gateway, benchmark, questions, path)
    assert len(gateway.bodies) == 4  # only the two new questions ran
    assert len(second.ran) == 2 and len(second.records) == 4

    third = await _run(gateway, benchmark, questions, path)
    assert [b["task"] for b in gateway.bodies[4:]] == ["A question the planner never answers?"]
    assert len(third.ran) == 1

    await _run(gateway, benchmark, questions, path, retry_errors=False)
    assert len(gateway.bodies) == 5
    assert len(path.read_text().splitlines()) == 5
    assert len(read_predictions(path)) == 4  # the retried question's last record wins


async def test_a_torn_last_line_is_run_again(toy, tmp_path):
    benchmark, questions = toy
    gateway = _toy_gateway(delay_s=0.0)
    path = tmp_path / "preds.jsonl"
    await _run(gateway, benchmark, questions[:1], path)
    with path.open("a") as fh:
        fh.write('{"id": "' + questions[1].id + '", "error": nu')  # killed mid-write
    await _run(gateway, benchmark, questions[:2], path)
    assert [b["task"] for b in gateway.bodies] == [questions[0].task, questions[1].task]


@pytest.mark.parametrize("concurrency", [1, 2, 4])
async def test_concurrency_bounds_the_runs_in_flight(toy, tmp_path, concurrency):
    benchmark, questions = toy
    gateway = _toy_gateway(delay_s=0.1)
    started = time.perf_counter()
    await _run(gateway, benchmark, questions, tmp_path / "p.jsonl", concurrency=concurrency)
    elapsed = time.perf_counter() - started
    assert gateway.max_in_flight == concurrency
    assert elapsed >= 0.1 * (4 // concurrency) - 0.01


def test_report_of_the_toy_run_has_hand_checked_numbers(tmp_path):
    def rec(i, correct_num, correct_orig, steps, latency, error=None):
        return {
            "id": f"q{i}",
            "formulation": "iterative",
            "error": error,
            "steps": steps,
            "latency_s": latency,
            "scores": {
                "accuracy_original": float(correct_orig),
                "accuracy_numeric": float(correct_num),
            },
        }

    records = [
        rec(1, 1, 1, 2, 1.0),
        rec(2, 1, 0, 3, 4.0),
        rec(3, 0, 0, 1, 2.0),
        rec(4, 0, 0, None, 0.01, "refused"),
    ]
    md_path, png_path, (summary,) = write_report([("gsm8k", records)], tmp_path)
    md = md_path.read_text()
    # n 4, 1 error; accuracy over all 4 (numeric 2/4, original 1/4); steps (2+3+1)/3;
    # latency over the 3 good runs [1, 2, 4]: p50 2, p95 2 + 0.9 * (4 - 2) = 3.8.
    assert "## gsm8k (iterative)" in md
    assert (
        "| accuracy (original: string equality) | 25.0 | 55.4† | 4 | 1 | 2.00 | 2.00 | 3.80 |" in md
    )
    assert "| accuracy (numeric, tolerance) | 50.0 | - | 4 | 1 | 2.00 | 2.00 | 3.80 |" in md
    assert "† Listed for the paper by a third-party index" in md
    assert (summary.n, summary.errors, summary.mean_steps) == (4, 1, 2.0)
    assert png_path is not None and png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


async def test_hotpotqa_is_judged_with_the_original_prompt(tmp_path):
    data = tmp_path / "hotpotqa"
    data.mkdir()
    rows = [
        ("Which band sang Hey Jude?", "Beatles", "Answer: The Beatles"),
        ("Where is the Louvre?", "Paris", "London"),
    ]
    (data / "dev.jsonl").write_text(
        "".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a, _ in rows)
    )
    gateway = ScriptedGateway({q: {"answer": pred, "steps": 1} for q, _, pred in rows}, delay_s=0.0)
    questions = load_questions(BENCHMARKS["hotpotqa"], data_dir=tmp_path)
    transport = httpx.ASGITransport(app=gateway.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        agent = AgentClient(GatewayTarget("http://gateway", api_key=API_KEY), client)
        judge = LLMJudge(JudgeConfig("http://gateway/v1"), client)
        result = await run_benchmark(
            BENCHMARKS["hotpotqa"],
            questions,
            tmp_path / "p.jsonl",
            agent=agent,
            options=EvalOptions(show_progress=False),
            judge=judge,
        )
    beatles, louvre = result.records
    assert (
        beatles["scores"] == {"em": 1.0, "f1": 1.0, "llm_acc": 1.0}
        and beatles["judge"] == "CORRECT"
    )
    assert (
        louvre["scores"] == {"em": 0.0, "f1": 0.0, "llm_acc": 0.0}
        and louvre["judge"] == "INCORRECT"
    )
    assert {b["max_steps"] for b in gateway.bodies} == {5}


def test_parse_run_reads_trace_flat_events_rewards_and_web_steps():
    body = {
        "run_id": "r1",
        "status": "completed",
        "trace": {
            "events": [
                {
                    "type": "results",
                    "executed": [
                        {
                            "name": "CLICK",
                            "args": "Env, QUERY: the search box",
                            "values": [{"backend_node_id": 12}],
                        },
                        {
                            "name": "TYPE",
                            "args": "R1, QUERY: the search box, TEXT: new york",
                            "values": [{"tag": "input"}],
                        },
                    ],
                },
                {"type": "final", "answer": "done", "reward": 0.75},
            ]
        },
    }
    outcome = parse_run(body)
    assert (outcome.answer, outcome.steps, outcome.reward, outcome.error) == ("done", 1, 0.75, None)
    assert [(s.element_id, s.op, s.value) for s in outcome.web_steps] == [
        ("12", "CLICK", ""),
        (None, "TYPE", "new york"),
    ]


def test_parse_run_counts_a_run_that_stopped_on_an_error_as_failed():
    stopped = parse_run(
        {
            "status": "running",
            "events": [{"type": "error", "data": {"reason": "timeout", "message": "planner slow"}}],
        }
    )
    assert stopped.error == "timeout: planner slow"
    failed = parse_run({"status": "failed", "error": "out of budget", "events": []})
    assert failed.error == "out of budget"
    answered = parse_run({"status": "completed", "answer": "4", "steps": 2})
    assert (answered.answer, answered.steps, answered.error) == ("4", 2, None)


async def test_gateway_errors_become_failed_records_not_crashes():
    def refuse(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"detail": "unknown key"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(refuse)) as client:
        outcome = await AgentClient(GatewayTarget("http://gw", retries=0), client).run(
            "t", domain="maths", max_steps=None
        )
    assert outcome.failed and outcome.error.startswith("gateway answered 401")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def loopback_gateway():
    gateway = _toy_gateway(delay_s=0.02)
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(gateway.app, host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    yield gateway, f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=5)


def test_cli_runs_resumes_and_reports_over_loopback(tmp_path, loopback_gateway):
    gateway, url = loopback_gateway
    _write_toy_data(tmp_path / "data")
    out = tmp_path / "runs"
    argv = [
        "run",
        "gsm8k",
        "--gateway",
        url,
        "--api-key",
        API_KEY,
        "--data-dir",
        str(tmp_path / "data"),
        "--out-dir",
        str(out),
        "-n",
        "2",
        "--no-progress",
    ]
    assert main(argv) == 0
    assert len(gateway.bodies) == 4
    preds = out / "gsm8k.iterative.predictions.jsonl"
    assert len(preds.read_text().splitlines()) == 4
    md = (out / "report.md").read_text()
    assert "| accuracy (numeric, tolerance) | 50.0 | - | 4 | 1 | 2.00 |" in md
    assert "| accuracy (original: string equality) | 25.0 | 55.4† | 4 | 1 | 2.00 |" in md
    assert (out / "report.png").exists()

    assert main([*argv, "--no-retry-errors"]) == 0
    assert len(gateway.bodies) == 4  # nothing left to run
    assert main(["report", "--out-dir", str(out)]) == 0


def test_cli_says_what_is_missing_when_the_data_is_not_there(tmp_path, capsys):
    assert main(["run", "mind2web", "--out-dir", str(tmp_path), "--no-progress"]) == 2
    assert "pass --mind2web-data PATH" in capsys.readouterr().err


def test_report_without_predictions_files_says_so(tmp_path, capsys):
    assert main(["report", "--out-dir", str(tmp_path)]) == 2
    assert "no *.predictions.jsonl files in" in capsys.readouterr().err


async def test_a_busy_gateway_is_waited_for_with_the_same_idempotency_key():
    seen: list[str] = []

    def busy_twice(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["idempotency-key"])
        if len(seen) <= 2:
            return httpx.Response(
                429, headers={"Retry-After": "0"}, json={"detail": "too many runs"}
            )
        return httpx.Response(
            200, json={"id": "r9", "status": "succeeded", "answer": "4", "steps": 1, "trace": []}
        )

    async with httpx.AsyncClient(transport=httpx.MockTransport(busy_twice)) as client:
        agent = AgentClient(GatewayTarget("http://gw", retries=0), client)
        outcome = await agent.run("2+2?", domain="maths", max_steps=None, question_id="q1")
    assert (outcome.answer, outcome.run_id, outcome.error) == ("4", "r9", None)
    assert len(seen) == 3 and len(set(seen)) == 1


def test_webshop_reward_is_read_from_the_buy_click_when_the_final_event_has_none():
    trace = [
        {
            "type": "results",
            "step": 1,
            "data": {"executed": [{"name": "Search", "args": "red shirt", "values": ["[...]"]}]},
        },
        {
            "type": "results",
            "step": 2,
            "data": {"executed": [{"name": "Click", "args": "buy now", "values": [0.75]}]},
        },
        {"type": "final", "step": 2, "data": {"answer": "0.75", "steps": 2}},
    ]
    outcome = parse_run({"id": "w1", "status": "succeeded", "answer": "0.75", "trace": trace})
    assert (outcome.reward, outcome.steps, outcome.run_id) == (0.75, 2, "w1")
    no_buy = parse_run({"status": "succeeded", "answer": "x", "trace": trace[:1]})
    assert no_buy.reward is None


def test_parse_run_counts_groundings_parse_errors_actions_and_what_ended_the_run():
    def executed(error=None):
        return {"name": "Calculator", "args": "1+1", "values": ["2"], "error": error}

    body = {
        "status": "succeeded",
        "trace": [
            {"type": "actions", "step": 1, "data": {"text": "R1 = Calculator(1+1)"}},
            {"type": "results", "step": 1, "data": {"executed": [executed(), executed("boom")]}},
            {"type": "actions", "step": 2, "data": {"text": "not an action"}},
            {"type": "error", "step": 2, "data": {"reason": "grounding_parse_error"}},
            {"type": "final", "step": 1, "data": {"answer": "2", "finished_by": "max_steps"}},
        ],
    }
    outcome = parse_run(body)
    assert (outcome.groundings, outcome.parse_errors) == (2, 1)
    assert (outcome.actions, outcome.actions_failed) == (2, 1)
    assert outcome.finished_by == "max_steps"


def test_report_says_how_often_runs_hit_max_steps_and_groundings_parsed(tmp_path):
    def rec(i, finished_by, groundings, parse_errors, actions, failed, error=None):
        return {
            "id": f"q{i}", "formulation": "iterative", "error": error, "steps": 1,
            "latency_s": 1.0, "scores": {"accuracy_numeric": 0.0},
            "finished_by": finished_by, "groundings": groundings,
            "parse_errors": parse_errors, "actions": actions, "actions_failed": failed,
        }  # fmt: skip

    records = [
        rec(1, "planner", 2, 0, 3, 0),
        rec(2, "max_steps", 4, 1, 3, 1),
        rec(3, "planner", 1, 1, 0, 0),
        rec(4, None, 0, 0, 0, 0, error="refused"),  # failed: not counted for max_steps
    ]
    md_path, _, (summary,) = write_report([("svamp", records)], tmp_path)
    assert summary.rows[0].paper is not None  # Lumos' own rows show the paper's number
    baseline = [dict(r, formulation="fewshot-cot") for r in records]
    _, _, (base_summary,) = write_report([("svamp", baseline)], tmp_path / "b")
    assert all(row.paper is None for row in base_summary.rows)  # a baseline's do not
    # max_steps 1 of the 3 runs that ended; groundings 7, 2 unparsable; actions 6, 1 failed
    assert (
        "Runs that hit max_steps: 1/3 (33.3 %); groundings that parsed: 5/7 (71.4 %); "
        "actions executed without error: 5/6 (83.3 %)."
    ) in md_path.read_text()
