"""A client that goes away does not take its run with it.

Decided behaviour (README, RELIABILITY.md): a sync or stream client that disconnects leaves
its run running to the end; the run stays readable at GET /agent/runs/{id} (the id is in the
X-Run-Id header and in every streamed event), and a client that got nothing back finds it
again by re-sending the request with the same Idempotency-Key. Cancelling is explicit:
POST /agent/runs/{id}/cancel.
"""

from __future__ import annotations

import json

import httpx
import pytest

from gateway.app import create_app
from tests.gateway.helpers import (
    STEPS,
    TASK,
    serve,
    settings_for,
    until_finished,
    write_recording,
)

pytestmark = [pytest.mark.redis]

RUN = {"task": TASK, "domain": "maths"}
DELAY_S = 0.2  # every module call: a run takes about 2 s


def _completed(body: dict) -> None:
    assert body["status"] == "succeeded", body
    assert body["answer"] == "18"
    assert [e["step"] for e in body["trace"] if e["type"] == "results"] == list(range(1, STEPS + 1))


async def test_a_sync_client_that_disconnects_leaves_its_run_running_and_findable(
    redis_url, tmp_path
):
    settings = settings_for(redis_url, modules=f"scripted:{write_recording(tmp_path, DELAY_S)}")
    key = {"Idempotency-Key": "sync-then-gone"}
    async with serve(create_app(settings)) as url:
        async with httpx.AsyncClient(base_url=url, timeout=0.5) as impatient:
            with pytest.raises(httpx.ReadTimeout):
                await impatient.post("/agent/run", json=RUN, headers=key)
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            # The same request and key, in background mode: the run it started, not a new one.
            found = await client.post("/agent/run", json={**RUN, "background": True}, headers=key)
            assert found.status_code == 202, found.text
            assert found.json()["status"] in ("queued", "running")
            body = await until_finished(client, found.json()["id"])
    _completed(body)
    assert body["attempts"] == 1


async def test_a_stream_client_that_disconnects_leaves_its_run_running_and_readable(
    redis_url, tmp_path
):
    settings = settings_for(redis_url, modules=f"scripted:{write_recording(tmp_path, DELAY_S)}")
    async with serve(create_app(settings)) as url:
        async with (
            httpx.AsyncClient(base_url=url, timeout=30) as client,
            client.stream("POST", "/agent/run", json={**RUN, "stream": True}) as response,
        ):
            run_id = response.headers["X-Run-Id"]
            async for line in response.aiter_lines():
                if line.startswith("data:"):
                    first = json.loads(line.removeprefix("data:"))
                    break  # gone after the first event
        assert first["type"] == "started" and first["run_id"] == run_id
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            assert (await client.get(f"/agent/runs/{run_id}")).json()["status"] == "running"
            body = await until_finished(client, run_id)
    _completed(body)
