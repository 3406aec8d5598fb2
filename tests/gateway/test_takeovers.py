"""Takeovers: a slow worker keeps its run, a dead one loses it, and a takeover is visible.

The lease on a run is renewed by a thread (gateway/lease.py): a worker whose event loop is
blocked for several claim-idle periods is slow, not dead, and must not lose its run to
another worker, nor to its own claim loop.
"""

from __future__ import annotations

import asyncio
import io
import json
import time

import httpx
import pytest
import redis
import redis.asyncio as aioredis

from gateway.app import create_app
from gateway.attempts import counted_events
from gateway.lease import LeaseKeeper
from gateway.runs import StoredEvent
from gateway.store import RunStore
from lumos.agent import Generation
from lumos.client import TraceLines
from lumos.scripted import ScriptedExecutor, ScriptedModel
from lumos.trace import RunEvent
from tests.gateway.helpers import (
    GROUNDS,
    PLANS,
    RESULTS,
    STEPS,
    TASK,
    serve,
    settings_for,
    until_finished,
    write_recording,
)
from tests.gateway.test_failover import GatewayProcess, events_of, queued_run

pytestmark = [pytest.mark.redis]

RUN = {"task": TASK, "domain": "maths", "background": True}
CLAIM_IDLE_MS = 1000
BLOCK_S = 3.5  # the event loop is blocked for 3.5 claim-idle periods


class LoopBlockingPlanner:
    """The recorded planner, but its first call, once `go` is set, blocks the whole event
    loop (a CPU-starved or busy process: nothing else of the worker runs meanwhile)."""

    def __init__(self, block_s: float) -> None:
        self.inner = ScriptedModel("planner", PLANS)
        self.block_s = block_s
        self.called = asyncio.Event()
        self.go = asyncio.Event()
        self.blocked = False

    async def generate(self, prompt: str, *, regex: str | None = None) -> Generation:
        if not self.blocked:
            self.called.set()
            await self.go.wait()
            self.blocked = True
            time.sleep(self.block_s)  # noqa: ASYNC251 - the point: the loop does nothing else
        return await self.inner.generate(prompt, regex=regex)


async def test_a_worker_whose_event_loop_is_blocked_keeps_its_run_against_every_worker(
    redis_url, tmp_path
):
    planner = LoopBlockingPlanner(BLOCK_S)
    app = create_app(
        settings_for(redis_url, claim_idle_ms=CLAIM_IDLE_MS),
        planner=planner,
        grounder=ScriptedModel("grounder", GROUNDS),
        executor=ScriptedExecutor(RESULTS),
    )
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    # No kept-alive connection: the blocked loop makes uvicorn's keep-alive timer fire late,
    # racing the next request on the same connection (a ReadError of the test's client).
    fresh = httpx.Limits(max_keepalive_connections=0)
    async with serve(app) as url, httpx.AsyncClient(base_url=url, limits=fresh) as client:
        run_id = (await client.post("/agent/run", json=RUN)).json()["id"]
        await asyncio.wait_for(planner.called.wait(), 10)
        # Another gateway process polls for abandoned runs every 250 ms meanwhile.
        other = GatewayProcess(
            redis_url,
            write_recording(tmp_path),
            tmp_path / "other.log",
            LUMOS_CLAIM_IDLE_MS=str(CLAIM_IDLE_MS),
        )
        try:
            other.wait_healthy()  # blocks this loop too, for as long as it starts
            planner.go.set()
            body = await until_finished(client, run_id)
        finally:
            other.stop()
    assert planner.blocked
    assert body["status"] == "succeeded", body
    assert body["attempts"] == 1  # neither the other process nor its own claim loop took it
    events = events_of(r, run_id)
    assert [e["type"] for e in events].count("resumed") == 0
    assert [e["type"] for e in events].count("subgoal") == STEPS + 1  # each step planned once
    assert body["superseded"] == []


async def test_a_taken_over_run_says_so_and_its_view_counts_only_the_attempt_that_counted(
    redis_url, tmp_path
):
    path = write_recording(tmp_path)
    run_id = await queued_run(redis_url, path)
    # A worker that died during step 2: step 1 complete, step 2 planned and grounded.
    raw = aioredis.from_url(redis_url)
    store = RunStore(raw)
    _, attempt = await store.begin_attempt(run_id, "dead-worker", 3)
    for ev in (
        RunEvent(type="started", data={"task": TASK}),
        RunEvent(type="subgoal", step=1, data={"text": PLANS[0]}),
        RunEvent(type="actions", step=1, data={"text": GROUNDS[0]}),
        RunEvent(
            type="results",
            step=1,
            data={
                "executed": [
                    {"outputs": ["R1"], "name": "Calculator", "args": "16-3-4", "values": ["9"]}
                ]
            },
        ),  # fmt: skip
        RunEvent(type="subgoal", step=2, data={"text": PLANS[1]}),
        RunEvent(type="actions", step=2, data={"text": "R2 = Calculator(R1*3)"}),
    ):
        assert await store.append(run_id, ev, attempt=attempt)
    await raw.aclose()
    settings = settings_for(redis_url, modules=f"scripted:{path}", claim_idle_ms=100)
    async with serve(create_app(settings)) as url, httpx.AsyncClient(base_url=url) as client:
        body = await until_finished(client, run_id)
        async with client.stream("GET", f"/agent/runs/{run_id}/events") as resp:
            streamed = [line async for line in resp.aiter_lines() if line.startswith("data:")]
        metrics = (await client.get("/metrics")).text
    assert "lumos_runs_resumed_total 1.0" in metrics

    assert body["status"] == "succeeded" and body["answer"] == "18", body
    events = events_of(redis.Redis.from_url(redis_url, decode_responses=True), run_id)
    types = [e["type"] for e in events]
    resumed_at = types.index("resumed")
    assert types[:resumed_at] == ["started", "subgoal", "actions", "results", "subgoal", "actions"]
    resumed = events[resumed_at]
    assert resumed["attempt"] == 2
    assert json.loads(resumed["data"]) == {
        "attempt": 2,
        "previous_worker": "dead-worker",
        "from_step": 2,
        "superseded_events": 2,
    }
    # Everything before it is attempt 1, everything from it on attempt 2.
    assert {e["attempt"] for e in events[:resumed_at]} == {1}
    assert {e["attempt"] for e in events[resumed_at:]} == {2}
    # The run view: each step once, the redone grounding listed apart; the stream has all.
    trace = body["trace"]
    assert [(e["type"], e["step"]) for e in trace if e["type"] in ("subgoal", "actions")] == [
        ("subgoal", 1), ("actions", 1), ("subgoal", 2), ("actions", 2), ("subgoal", 3),
        ("actions", 3), ("subgoal", 4),
    ]  # fmt: skip
    assert [e["data"]["text"] for e in trace if e["type"] == "actions"] == GROUNDS
    assert [(e["type"], e["step"], e["attempt"]) for e in body["superseded"]] == [
        ("subgoal", 2, 1),
        ("actions", 2, 1),
    ]
    assert len(streamed) == len(events)
    assert all('"attempt"' in line for line in streamed)


def _stored(i: int, type_: str, step: int, attempt: int, **data: object) -> StoredEvent:
    return StoredEvent(f"{i}-0", RunEvent(type=type_, step=step, data=dict(data)), attempt)  # type: ignore[arg-type]


def test_counted_events_drop_what_each_resumed_attempt_redid():
    events = [
        _stored(1, "started", 0, 1),
        _stored(2, "subgoal", 1, 1),
        _stored(3, "resumed", 0, 2, from_step=1),
        _stored(4, "subgoal", 1, 2),
        _stored(5, "actions", 1, 2),
        _stored(6, "results", 1, 2),
        _stored(7, "subgoal", 2, 2),
        _stored(8, "resumed", 0, 3, from_step=2),
        _stored(9, "subgoal", 2, 3),
    ]
    counted, superseded = counted_events(events)
    assert [s.id for s in counted] == ["1-0", "3-0", "4-0", "5-0", "6-0", "8-0", "9-0"]
    assert [s.id for s in superseded] == ["2-0", "7-0"]
    assert counted_events(events[:2]) == (events[:2], [])


def test_lumos_run_prints_only_the_attempt_that_counted():
    out = io.StringIO()
    lines = TraceLines(out)
    plan = {"step": 1, "data": {"text": "Subgoal 1: Add.", "latency_s": 0.1}}
    ground = {"step": 1, "data": {"text": "R1 = Calculator(3+4)", "latency_s": 0.1}}
    lines.add("subgoal", plan)
    lines.add("actions", {**ground, "data": {**ground["data"], "text": "R1 = Calculator(3"}})
    resumed = {"attempt": 2, "previous_worker": "w1", "from_step": 1}
    lines.add("resumed", {"step": 0, "data": resumed})
    lines.add("subgoal", plan)
    lines.add("actions", ground)
    lines.add("results", {"step": 1, "data": {"executed": [{"outputs": ["R1"], "values": [7]}]}})
    lines.add(
        "final", {"step": 1, "data": {"answer": "7", "finished_by": "planner_stop", "steps": 1}}
    )
    assert out.getvalue().splitlines() == [
        "resumed: attempt 2 took the run over from worker w1 at step 1",
        "[1] plan    Subgoal 1: Add.  (0.10s)",
        "[1] ground  R1 = Calculator(3+4)  (0.10s)",
        "[1] execute R1 = 7",
        "answer: 7  (finished by planner_stop, 1 steps)",
    ]


async def test_a_lease_is_not_renewed_for_a_hung_loop_and_is_lost_to_a_claim(redis_url):
    raw = aioredis.from_url(redis_url)
    store = RunStore(raw)
    await store.ensure_group()
    await raw.xadd("lumos:runs:queue", {"run_id": "r1"})
    entry_id, _ = await store.next_queued("w1", 100) or ("", "")
    keeper = LeaseKeeper(redis_url, "w1", heartbeat_s=0.1, stall_s=60)
    try:
        keeper.hold(entry_id)
        keeper.renew_now()
        assert keeper.renewals == 1 and not keeper.lost(entry_id)
        # A loop that has not pulsed for longer than stall_s: no renewal, the entry ages.
        keeper.stall_s = 0.0
        await asyncio.sleep(0.01)
        keeper.renew_now()
        assert keeper.renewals == 1 and keeper.skipped_stalled == 1
        # Another worker claims it: the next renewal finds it gone and marks it lost.
        keeper.stall_s = 60.0
        keeper.pulse()
        assert await store.claim_abandoned("w2", 0) == (entry_id, "r1")
        keeper.renew_now()
        assert keeper.lost(entry_id)
        pending = await raw.xpending_range("lumos:runs:queue", "workers", "-", "+", 10)
        assert [p["consumer"] for p in pending] == [b"w2"]  # not taken back
    finally:
        keeper.stop()
        await raw.aclose()
