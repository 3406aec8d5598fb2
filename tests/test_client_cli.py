"""`lumos run` and `lumos replay` as a user meets them on the command line."""

import io
import json
import threading

import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.responses import StreamingResponse

from lumos.client import GatewayError, iter_sse, render_event, run_task
from lumos_cli.__main__ import main


def test_sse_parser_handles_multiline_data_comments_and_ids():
    lines = [": keep-alive", "id: 1-0", "event: subgoal", 'data: {"step": 1,', 'data: "x": 2}', ""]
    assert list(iter_sse(iter(lines))) == [("subgoal", {"step": 1, "x": 2})]


def test_results_are_rendered_with_errors_and_values():
    ev = {
        "step": 2,
        "data": {
            "executed": [
                {"outputs": ["R1"], "values": [9]},
                {"outputs": ["R2"], "values": [], "error": "division by zero"},
            ]
        },
    }
    assert render_event("results", ev) == "[2] execute R1 = 9; R2: error: division by zero"


def _sse_app() -> FastAPI:
    app = FastAPI()

    @app.post("/agent/run")
    async def run(body: dict):
        assert body["stream"] is True

        async def gen():
            yield 'event: subgoal\ndata: {"step": 1, "data": {"text": "Subgoal 1: Add.", "latency_s": 0.1}}\n\n'
            yield 'event: final\ndata: {"step": 1, "data": {"answer": "7", "finished_by": "planner_stop", "steps": 1}}\n\n'

        return StreamingResponse(gen(), media_type="text/event-stream")

    return app


@pytest.fixture
def sse_gateway():
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    server = uvicorn.Server(
        uvicorn.Config(_sse_app(), host="127.0.0.1", port=port, log_level="error")
    )
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    while not server.started:
        pass
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    t.join(5)


def test_run_task_prints_each_streamed_step(sse_gateway):
    out = io.StringIO()
    assert run_task("3 + 4?", domain="maths", url=sse_gateway, out=out) == 0
    assert out.getvalue().splitlines() == [
        "[1] plan    Subgoal 1: Add.  (0.10s)",
        "answer: 7  (finished by planner_stop, 1 steps)",
    ]


def test_run_task_without_a_gateway_says_how_to_start_one():
    with pytest.raises(GatewayError, match="make run"):
        run_task("x", domain="maths", url="http://127.0.0.1:9", out=io.StringIO())


def test_replay_prints_prompts_in_order_and_the_answer(tmp_path, capsys):
    spec = {
        "domain": "maths",
        "formulation": "iterative",
        "task": "What is 2 + 3, doubled?",
        "planner_outputs": ["Subgoal 1: Add 2 and 3.", "Yes, I will stop planning."],
        "grounder_outputs": ["R1 = Calculator(2+3)"],
        "tool_results": {"R1": "5"},
    }
    f = tmp_path / "run.json"
    f.write_text(json.dumps(spec))
    assert main(["replay", str(f)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["answer"] == "5"
    assert len(out["planner_prompts"]) == 2 and len(out["grounder_prompts"]) == 1
    assert out["planner_prompts"][1].endswith(
        "Subgoal 1: Add 2 and 3.\n\n<|user|>\nThe executed result for Subgoal 1 is 5. "
        "Should we stop planning?\n<|assistant|>\n"
    )
    assert out["grounder_prompts"][0].endswith(
        "Task: What is 2 + 3, doubled? \nSubgoal to be grounded: Subgoal 1: Add 2 and 3.\n<|assistant|>\n"
    )


def test_replay_rejects_a_bad_spec_with_what_it_expected(tmp_path, capsys):
    f = tmp_path / "bad.json"
    f.write_text(json.dumps({"domain": "maths"}))
    assert main(["replay", str(f)]) == 2
    assert "is not a replay spec" in capsys.readouterr().err
    f.write_text(
        json.dumps({"domain": "qa", "task": "x", "planner_outputs": [], "grounder_outputs": []})
    )
    assert main(["replay", str(f)]) == 2
    assert "unknown domain 'qa'" in capsys.readouterr().err
