"""Two gateway processes starved of CPU (a busy process per core beside them, a claim-idle
time of 1 s) finish every run in one attempt: slow workers keep their runs, and a worker
killed meanwhile still has its runs taken over and finished by the other."""

from __future__ import annotations

import signal
import time

import httpx
import pytest
import redis

from tests.gateway.helpers import STEPS, TASK, write_recording
from tests.gateway.test_failover import GatewayProcess, events_of

RUN = {"task": TASK, "domain": "maths", "background": True}
RUNS = 12


def _wait_all(url: str, ids: list[str], timeout_s: float) -> list[dict]:
    deadline = time.monotonic() + timeout_s
    bodies: dict[str, dict] = {}
    while len(bodies) < len(ids):
        for run_id in ids:
            if run_id in bodies:
                continue
            body = httpx.get(f"{url}/agent/runs/{run_id}", timeout=30).json()
            if body["status"] not in ("queued", "running"):
                bodies[run_id] = body
        assert time.monotonic() < deadline, f"{len(ids) - len(bodies)} runs still unfinished"
        time.sleep(0.1)
    return [bodies[i] for i in ids]


@pytest.mark.cpu_load
def test_cpu_starved_gateways_never_take_over_a_live_run_but_do_a_dead_ones(redis_url, tmp_path):
    path = write_recording(tmp_path, delay_s=0.3)  # a run: about 3 s
    gateways = [
        GatewayProcess(
            redis_url,
            path,
            tmp_path / f"gateway-{i}.log",
            LUMOS_CLAIM_IDLE_MS="1000",
            LUMOS_WORKER_CONCURRENCY="4",
        )
        for i in range(2)
    ]
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        for g in gateways:
            g.wait_healthy(60)
        ids = [
            httpx.post(f"{gateways[i % 2].url}/agent/run", json=RUN, timeout=30).json()["id"]
            for i in range(RUNS)
        ]
        live = _wait_all(gateways[0].url, ids, 180)

        # The control: a worker that is really gone loses its run to the other one.
        victim, survivor = gateways
        victim_pid = str(victim.process.pid)
        deadline = time.monotonic() + 60
        while True:
            run_id = httpx.post(f"{victim.url}/agent/run", json=RUN, timeout=30).json()["id"]
            while r.hget(f"lumos:run:{run_id}", "status") == "queued":
                assert time.monotonic() < deadline, "the run never started"
                time.sleep(0.01)
            if r.hget(f"lumos:run:{run_id}", "worker").split(":")[1] == victim_pid:
                break  # the victim's own worker runs it
            assert time.monotonic() < deadline, "the victim never ran a run"
        victim.process.send_signal(signal.SIGKILL)
        victim.process.wait(10)
        (dead,) = _wait_all(survivor.url, [run_id], 120)
    finally:
        for g in gateways:
            g.stop()

    for body in live:
        assert body["status"] == "succeeded", body
        assert body["attempts"] == 1, body
        types = [e["type"] for e in events_of(r, body["id"])]
        assert "resumed" not in types and types.count("subgoal") == STEPS + 1, types
    assert dead["status"] == "succeeded", dead
    assert dead["attempts"] == 2
    assert any(e["type"] == "resumed" for e in dead["trace"])
