"""Lumos-mini as `make run` serves it: Gemma 3 270M + the committed adapters, real stack.

`scripts/run_local.py` starts Redis, vLLM CPU (base model + the four LoRA adapters of
`models/lumos-mini`), the executor and the gateway; held-out SVAMP questions (the test
split, never trained on) go through `POST /agent/run` in both formulations. The untrained
base model never says it is done and scores 0 here (eval/RESULTS.md); the thresholds
below are far under what the adapters measured (training/RESULTS.md) and far over that.
Needs the prepared base model (`make default-model`; `make test` prepares it).
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from eval.datasets import Question, get_benchmark, load_questions
from eval.metrics import numeric_match
from tests.e2e.test_make_run import _ports, start_stack

ROOT = Path(__file__).resolve().parents[2]
MODEL_DIR = ROOT / ".cache" / "models" / "gemma-3-270m"
REQUIRE_ENV = "LUMOS_REQUIRE_DEFAULT_MODEL"
QUESTIONS = 16


@pytest.fixture(scope="module")
def mini_gateway() -> Iterator[str]:
    if not (MODEL_DIR / "lumos-model.json").exists():
        reason = f"no prepared base model at {MODEL_DIR}; run `make default-model`"
        if os.environ.get(REQUIRE_ENV):
            pytest.fail(f"{reason} (and {REQUIRE_ENV} is set)", pytrace=False)
        pytest.skip(reason)
    ports = _ports()
    proc, output = start_stack(MODEL_DIR, ports, deadline_s=900)
    try:
        text = "".join(output)
        assert "LoRA adapters in" in text, text  # the default: Lumos-mini, not the bare base
        yield f"http://127.0.0.1:{ports[1]}"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _run_all(gateway: str, formulation: str) -> list[tuple[bool, dict]]:
    questions = load_questions(get_benchmark("svamp"), split="test", limit=QUESTIONS)

    def one(q: Question) -> tuple[bool, dict]:
        body = {"task": q.task, "domain": "maths", "formulation": formulation, "max_steps": 6}
        run: dict = httpx.post(f"{gateway}/agent/run", json=body, timeout=600).json()
        assert run["status"] == "succeeded", run
        final = run["trace"][-1]
        assert final["type"] == "final", run
        answer = final["data"]["answer"]
        return answer is not None and numeric_match(answer, q.gold), run

    with ThreadPoolExecutor(max_workers=8) as pool:  # as `lumos eval -n 8` sends them
        return list(pool.map(one, questions))


@pytest.mark.slow
@pytest.mark.vllm
@pytest.mark.redis
def test_lumos_i_stops_on_its_own_grounds_validly_and_solves_held_out_questions(
    mini_gateway: str,
) -> None:
    results = _run_all(mini_gateway, "iterative")
    traces = [run["trace"] for _, run in results]
    errors = [e for t in traces for e in t if e["type"] == "error"]
    assert not errors, errors  # every grounding parsed and executed
    stopped = sum(t[-1]["data"]["finished_by"] == "planner_stop" for t in traces)
    correct = sum(ok for ok, _ in results)
    assert stopped >= QUESTIONS // 2, f"only {stopped}/{QUESTIONS} runs stopped on their own"
    assert correct >= 2, f"only {correct}/{QUESTIONS} correct"


@pytest.mark.slow
@pytest.mark.vllm
@pytest.mark.redis
def test_lumos_o_answers_through_the_onetime_adapters(mini_gateway: str) -> None:
    results = _run_all(mini_gateway, "onetime")
    correct = sum(ok for ok, _ in results)
    assert all(run["trace"][-1]["data"]["finished_by"] == "onetime" for _, run in results)
    assert correct >= 2, f"only {correct}/{QUESTIONS} correct"
