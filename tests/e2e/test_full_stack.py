"""The whole agent, every part real: vLLM CPU server, executor service, gateway, Redis.

The model is the tiny random one of the test session, so its plans are noise; grounding is
constrained to the domain grammar, so every step still parses, executes and is recorded.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from gateway.app import create_app
from tests.gateway.helpers import free_port, serve, settings_for, sse_events

pytestmark = [pytest.mark.vllm, pytest.mark.redis, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
TASK = "Tom has 3 boxes of 12 pencils and gives away 7. How many pencils are left?"


@pytest.fixture(scope="module")
def executor_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("executor") / "executor.log"
    env = {
        **os.environ,
        "LUMOS_EXECUTOR_HOST": "127.0.0.1",
        "LUMOS_EXECUTOR_PORT": str(port),
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.executor"], cwd=ROOT, env=env, stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the executor did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    yield url
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def stack_settings(vllm_server, executor_url, redis_url):  # type: ignore[no-untyped-def]
    return settings_for(
        redis_url,
        planner_urls=vllm_server.base_url,
        grounder_urls=vllm_server.base_url,
        executor_url=executor_url,
        max_steps=2,
    )


def _stored(redis_url: str, run_id: str) -> tuple[dict[str, str], list[dict[str, str]]]:
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    record = r.hgetall(f"lumos:run:{run_id}")
    events = [fields for _, fields in r.xrange(f"lumos:run:{run_id}:events")]
    return record, events


# The tiny model writes noise. Under the action grammar its grounding can run past the
# 512-token budget and end mid-action (how often depends on the CPU's arithmetic: on one
# machine it never did, on another every time); the complete actions before the cut run and
# the run goes on, but a first action cut before it is complete leaves nothing to run: the
# run fails with the model-output reason grounding_parse_error, which the stack must record
# like any other end. Stack failures (executor_failed, planner_failed, ...) fail these tests.
MODEL_NOISE = "grounding_parse_error"


def _check_outcome(run: dict) -> None:
    assert run["status"] in ("succeeded", "failed"), run
    if run["status"] == "failed":
        assert run["error"]["reason"] == MODEL_NOISE, run


def _check_complete_trace(events: list[dict[str, str]]) -> None:
    types = [e["type"] for e in events]
    assert types[0] == "started"
    if types[-1] == "error":
        assert json.loads(events[-1]["data"])["reason"] == MODEL_NOISE, events[-1]
        return
    assert types[-1] == "final", types
    results = [json.loads(e["data"]) for e in events if e["type"] == "results"]
    assert len(results) == 2  # max_steps: the tiny model never says it will stop
    for r in results:
        for action in r["executed"]:
            # Each action really went through the executor: it either has a value or
            # the tool's own error message, never a transport failure.
            assert action["values"] or action["error"], action


async def test_sync_run_through_the_real_stack_is_recorded_in_redis(stack_settings, redis_url):
    async with serve(create_app(stack_settings)) as url, httpx.AsyncClient(timeout=300) as c:
        ready = await c.get(f"{url}/readyz")
        assert ready.status_code == 200, ready.text
        resp = await c.post(f"{url}/agent/run", json={"task": TASK, "domain": "maths"})
        assert resp.status_code == 200, resp.text
        run = resp.json()
    _check_outcome(run)
    assert run["timings"]
    record, events = _stored(redis_url, run["id"])
    assert record["status"] == run["status"]
    _check_complete_trace(events)
    if run["status"] == "succeeded":
        actions = [json.loads(e["data"]) for e in events if e["type"] == "actions"]
        assert all(a["actions"] for a in actions)  # constrained grounding parsed every time


async def test_streamed_run_through_the_real_stack(stack_settings, redis_url):
    async with serve(create_app(stack_settings)) as url, httpx.AsyncClient(timeout=300) as c:
        body = {"task": TASK, "domain": "maths", "stream": True}
        async with c.stream("POST", f"{url}/agent/run", json=body) as resp:
            assert resp.status_code == 200
            seen = [ev async for ev in sse_events(resp)]
    kinds = [ev["event"] for ev in seen]
    assert kinds[0] == "started" and kinds[-1] in ("final", "error"), kinds
    assert kinds.count("subgoal") >= (2 if kinds[-1] == "final" else 1)
    run_id = seen[0]["data"]["run_id"]
    record, events = _stored(redis_url, run_id)
    assert [e["type"] for e in events] == kinds
    _check_complete_trace(events)
    assert record["status"] == ("succeeded" if kinds[-1] == "final" else "failed")


async def test_background_run_through_the_real_stack(stack_settings, redis_url):
    await _background_run(stack_settings, redis_url)


@pytest.mark.cpu_load
async def test_background_run_through_the_real_stack_under_cpu_load(stack_settings, redis_url):
    """The same run with a busy process per core beside it (tests/cpu_load.py): the
    worker is slow, not dead, and keeps its run (one attempt, no step planned twice)."""
    await _background_run(stack_settings, redis_url)


async def _background_run(stack_settings, redis_url) -> None:  # type: ignore[no-untyped-def]
    async with serve(create_app(stack_settings)) as url, httpx.AsyncClient(timeout=300) as c:
        body = {"task": TASK, "domain": "maths", "background": True, "formulation": "onetime"}
        resp = await c.post(f"{url}/agent/run", json=body)
        assert resp.status_code == 202, resp.text
        run_url = resp.json()["url"]
        deadline = time.monotonic() + 300
        while True:
            run = (await c.get(f"{url}{run_url}" if run_url.startswith("/") else run_url)).json()
            if run["status"] in ("succeeded", "failed", "cancelled"):
                break
            assert time.monotonic() < deadline, run
            await asyncio.sleep(0.5)
    _check_outcome(run)
    record, events = _stored(redis_url, run["id"])
    types = [e["type"] for e in events]
    assert record["status"] == run["status"]
    assert record["attempts"] == "1", (record, types)  # no worker took it over
    if run["status"] == "failed":
        assert types[:2] == ["started", "subgoal"] and types[-1] == "error", types
    else:
        assert types == ["started", "subgoal", "actions", "results", "final"]
