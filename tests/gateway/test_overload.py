"""Overload is refused, not absorbed: a full queue answers 429, a dead model server is left
alone (circuit breaker), a Redis outage is a 503 and the runs in flight finish afterwards."""

from __future__ import annotations

import asyncio
import re
import time

import httpx
import pytest
import redis

from gateway.app import create_app
from lumos.circuit import CircuitBreaker
from tests.gateway.helpers import (
    STEPS,
    TASK,
    serve,
    settings_for,
    until_finished,
    write_recording,
)
from tests.reliability.topology import ClosingServer

pytestmark = [pytest.mark.redis]

RUN = {"task": TASK, "domain": "maths", "background": True}
CAP = 4
BURST = 5 * CAP


def _metric(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = (
        rf"^{re.escape(name)}(?:\{{{re.escape(want)}\}})? (\S+)$" if want else rf"^{name} (\S+)$"
    )
    found = re.search(pattern, text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


async def test_a_burst_beyond_the_queue_cap_is_refused_with_429_and_retry_after(
    redis_url, tmp_path
):
    path = write_recording(tmp_path)
    # API only: nothing drains the queue while the burst arrives.
    api = create_app(
        settings_for(
            redis_url, modules=f"scripted:{path}", worker_concurrency=0, max_queued_runs=CAP
        )
    )
    keyed = {"Idempotency-Key": "first"}
    async with serve(api) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
        first = await client.post("/agent/run", json=RUN, headers=keyed)
        answers = await asyncio.gather(*(client.post("/agent/run", json=RUN) for _ in range(BURST)))
        # A run already stored is found by its Idempotency-Key, full queue or not.
        again = await client.post("/agent/run", json=RUN, headers=keyed)
        metrics = (await client.get("/metrics")).text
    accepted = [first] + [a for a in answers if a.status_code == 202]
    refused = [a for a in answers if a.status_code == 429]
    print(
        f"\nburst: {BURST + 1} runs at a cap of {CAP}: {len(accepted)} accepted, {len(refused)} 429"
    )
    assert len(accepted) == CAP and len(refused) == BURST - CAP + 1, [
        a.status_code for a in answers
    ]
    for answer in refused:
        assert answer.headers["Retry-After"] == "5"
        assert answer.json()["code"] == "queue_full"
        assert f"LUMOS_MAX_QUEUED_RUNS={CAP}" in answer.json()["detail"]
    assert again.status_code == 202 and again.json()["id"] == first.json()["id"]
    assert _metric(metrics, "lumos_runs_refused_total", reason="queue_full") == len(refused)
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    # Refused runs were not stored and hold none of the key's run slots.
    assert r.xlen("lumos:runs:queue") == CAP
    assert r.zcard("lumos:inflight:anonymous") == CAP

    # Workers drain the queue: the accepted runs finish, and new runs are accepted again.
    worker = create_app(settings_for(redis_url, modules=f"scripted:{path}", max_queued_runs=CAP))
    async with serve(worker) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
        for answer in accepted:
            assert (await until_finished(client, answer.json()["id"]))["status"] == "succeeded"
        late = await client.post("/agent/run", json=RUN)
        assert late.status_code == 202
        assert (await until_finished(client, late.json()["id"]))["status"] == "succeeded"


def test_the_circuit_opens_after_consecutive_failures_and_half_opens_after_its_cooldown():
    now = [0.0]
    breaker = CircuitBreaker("http://m", threshold=3, cooldown_s=1.0, clock=lambda: now[0])
    for _ in range(2):
        breaker.record_failure()
    assert breaker.state == "closed" and breaker.open_for() == 0
    breaker.record_failure()
    assert breaker.state == "open" and breaker.open_for() == 1.0 and breaker.opened == 1
    breaker.record_failure()  # a request that was in flight: the cooldown is not extended
    assert breaker.open_for() == 1.0 and breaker.opened == 1
    now[0] = 1.0
    assert breaker.state == "half_open" and breaker.open_for() == 0
    breaker.record_failure()  # the first try after the cooldown fails: twice as long
    assert breaker.state == "open" and breaker.open_for() == 2.0 and breaker.opened == 2
    now[0] = 3.0
    breaker.record_success()
    assert breaker.state == "closed" and breaker.failures == 0
    for _ in range(3):
        breaker.record_failure()
    assert breaker.open_for() == 1.0  # the cooldown starts from the beginning again


async def test_runs_on_a_model_server_that_stays_down_fail_fast_without_hammering_it(redis_url):
    runs, retries = 8, 3
    with ClosingServer() as dead:
        settings = settings_for(
            redis_url,
            planner_urls=dead.url,
            grounder_urls=dead.url,
            executor_url=dead.url,
            module_max_retries=retries,
            worker_concurrency=runs,
        )
        async with (
            serve(create_app(settings)) as url,
            httpx.AsyncClient(base_url=url, timeout=30) as client,
        ):
            started = time.monotonic()
            ids = [
                (await client.post("/agent/run", json={**RUN, "deadline_s": 30})).json()["id"]
                for _ in range(runs)
            ]
            bodies = [await until_finished(client, run_id) for run_id in ids]
            took = time.monotonic() - started
            metrics = (await client.get("/metrics")).text
    print(
        f"\ndead model server: {runs} runs failed in {took:.1f} s; {dead.accepted} requests "
        f"reached it (at most {runs * (1 + retries)} without the breaker), "
        f"{_metric(metrics, 'lumos_model_server_calls_refused_total', server=dead.url):g} held back"
    )
    for body in bodies:
        assert body["status"] == "failed"
        assert body["error"]["reason"] == "planner_failed"
    assert took < 30  # within their deadline, not at it
    # Without the breaker every run sends 1 + retries requests; with it, far fewer reach
    # the dead server and the rest are held back, counted in the metrics.
    assert dead.accepted < runs * (1 + retries), dead.accepted
    assert _metric(metrics, "lumos_model_server_calls_refused_total", server=dead.url) > 0
    assert _metric(metrics, "lumos_model_server_circuit_opened_total", server=dead.url) >= 1
    messages = " ".join(b["error"]["message"] for b in bodies)
    assert "circuit open" in messages


async def test_a_run_in_flight_when_redis_restarts_finishes_once_redis_is_back(
    redis_server_factory, tmp_path
):
    server = redis_server_factory(appendonly=True, appendfsync="always")
    path = write_recording(tmp_path, delay_s=0.3)
    app = create_app(settings_for(server.url, modules=f"scripted:{path}"))
    r = redis.Redis.from_url(server.url, decode_responses=True)
    async with serve(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
        run_id = (await client.post("/agent/run", json=RUN)).json()["id"]
        for _ in range(1000):  # until step 1 is under way
            if r.xrange(f"lumos:run:{run_id}:events"):
                break
            await asyncio.sleep(0.02)
        server.stop(graceful=False)
        down = await client.post("/agent/run", json=RUN)
        server.start()
        body = await until_finished(client, run_id, timeout_s=60)
    assert down.status_code == 503 and down.headers["Retry-After"] == "2"
    assert body["status"] == "succeeded", body
    assert body["answer"] == "18"
    assert [e["step"] for e in body["trace"] if e["type"] == "results"] == list(range(1, STEPS + 1))
