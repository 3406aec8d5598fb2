"""Feedback on runs: stored in the run's Redis hash, shown in the run view, counted."""

from __future__ import annotations

from datetime import datetime

import httpx
import pytest
import redis.asyncio as aioredis

from gateway.app import create_app
from lumos.scripted import ScriptedExecutor, ScriptedModel
from tests.gateway.helpers import GROUNDS, PLANS, RESULTS, TASK, SlowModel, serve, settings_for

pytestmark = pytest.mark.redis

RUN = {"task": TASK, "domain": "maths"}


def scripted_app(redis_url: str, planner=None, **settings):
    return create_app(
        settings_for(redis_url, **settings),
        planner=planner or ScriptedModel("planner", PLANS),
        grounder=ScriptedModel("grounder", GROUNDS),
        executor=ScriptedExecutor(RESULTS),
    )


async def test_feedback_is_stored_with_the_run_shown_in_its_view_and_counted(redis_url):
    async with serve(scripted_app(redis_url)) as url, httpx.AsyncClient(base_url=url) as client:
        run = (await client.post("/agent/run", json=RUN)).json()
        given = await client.post(
            f"/agent/runs/{run['id']}/feedback",
            json={"score": 0.25, "corrected_answer": "20", "note": "sold 10 eggs"},
        )
        view = (await client.get(f"/agent/runs/{run['id']}")).json()
        metrics = (await client.get("/metrics")).text
    assert given.status_code == 200, given.text
    assert given.json()["feedback"]["score"] == 0.25
    feedback = view["feedback"]
    assert feedback["corrected_answer"] == "20" and feedback["note"] == "sold 10 eggs"
    assert feedback["given_at"] >= datetime.fromisoformat(view["finished_at"]).timestamp()
    r = aioredis.from_url(redis_url, decode_responses=True)
    try:
        stored = await r.hget(f"lumos:run:{run['id']}", "feedback")
    finally:
        await r.aclose()
    assert stored is not None and '"corrected_answer":"20"' in stored
    assert 'lumos_run_feedback_score_count{domain="maths",formulation="iterative"} 1.0' in metrics
    assert 'lumos_run_feedback_score_sum{domain="maths",formulation="iterative"} 0.25' in metrics
    assert (
        'lumos_run_feedback_corrections_total{domain="maths",formulation="iterative"} 1.0'
        in metrics
    )


async def test_later_feedback_replaces_the_earlier(redis_url):
    async with serve(scripted_app(redis_url)) as url, httpx.AsyncClient(base_url=url) as client:
        run = (await client.post("/agent/run", json=RUN)).json()
        await client.post(f"/agent/runs/{run['id']}/feedback", json={"score": 0, "note": "no"})
        await client.post(f"/agent/runs/{run['id']}/feedback", json={"score": 1})
        view = (await client.get(f"/agent/runs/{run['id']}")).json()
    assert view["feedback"]["score"] == 1 and view["feedback"]["note"] is None


async def test_feedback_on_an_unfinished_run_is_a_409(redis_url):
    app = scripted_app(redis_url, planner=SlowModel(delay_s=None))
    async with serve(app) as url, httpx.AsyncClient(base_url=url) as client:
        accepted = (await client.post("/agent/run", json={**RUN, "background": True})).json()
        refused = await client.post(f"{accepted['url']}/feedback", json={"score": 1})
        await client.post(accepted["cancel_url"])
        after = await client.post(f"{accepted['url']}/feedback", json={"score": 0})
    assert refused.status_code == 409 and refused.json()["code"] == "run_not_finished"
    assert after.status_code == 200  # a cancelled run is finished: it can be rated


@pytest.mark.parametrize(
    "body",
    [{"score": 1.5}, {"score": -0.1}, {}, {"score": 1, "rating": 5}, {"score": "great"}],
)
async def test_feedback_outside_the_schema_is_refused(redis_url, body):
    async with serve(scripted_app(redis_url)) as url, httpx.AsyncClient(base_url=url) as client:
        run = (await client.post("/agent/run", json=RUN)).json()
        refused = await client.post(f"/agent/runs/{run['id']}/feedback", json=body)
        view = (await client.get(f"/agent/runs/{run['id']}")).json()
    assert refused.status_code == 422 and refused.json()["code"] == "invalid_request"
    assert view["feedback"] is None


async def test_feedback_on_an_unknown_or_another_keys_run_is_a_404(redis_url):
    import hashlib

    digests = ",".join(hashlib.sha256(k.encode()).hexdigest() for k in ("key-a", "key-b"))
    app = scripted_app(redis_url, api_keys_sha256=digests)
    async with serve(app) as url, httpx.AsyncClient(base_url=url) as client:
        run = (await client.post("/agent/run", json=RUN, headers={"X-API-Key": "key-a"})).json()
        other = await client.post(
            f"/agent/runs/{run['id']}/feedback", json={"score": 1}, headers={"X-API-Key": "key-b"}
        )
        missing = await client.post(
            "/agent/runs/nope/feedback", json={"score": 1}, headers={"X-API-Key": "key-a"}
        )
        view = (await client.get(f"/agent/runs/{run['id']}", headers={"X-API-Key": "key-a"})).json()
    assert other.status_code == 404 and other.json()["code"] == "run_not_found"
    assert missing.status_code == 404
    assert view["feedback"] is None
