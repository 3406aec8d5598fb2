"""The agent as a model: the real `openai` package against the real gateway over real Redis.

The modules are scripted (a recorded maths run), so what is under test is the facade:
model list, messages -> run, the answer and trace link, the chunks of a stream, errors.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import httpx
import openai
import pytest

from gateway.app import create_app
from lumos.scripted import ScriptedExecutor, ScriptedModel
from tests.gateway.helpers import (
    GROUNDS,
    PLANS,
    RESULTS,
    STEPS,
    TASK,
    SlowModel,
    serve,
    settings_for,
)

pytestmark = pytest.mark.redis

KEY = "sk-test-openai-facade"
DIGEST = hashlib.sha256(KEY.encode()).hexdigest()
USER = [{"role": "user", "content": TASK}]


class Gateway:
    """A served gateway with scripted modules, and an `AsyncOpenAI` client pointed at it."""

    def __init__(self, url: str, planner: Any) -> None:
        self.url = url
        self.planner = planner
        self.openai = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)
        self.http = httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {KEY}"})


def scripted(redis_url: str, planner: Any = None, **settings: Any) -> tuple[Any, Any]:
    planner = planner or ScriptedModel("planner", PLANS)
    app = create_app(
        settings_for(redis_url, api_keys_sha256=DIGEST, **settings),
        planner=planner,
        grounder=ScriptedModel("grounder", GROUNDS),
        executor=ScriptedExecutor(RESULTS),
    )
    return app, planner


async def test_models_lists_one_model_per_agent_and_formulation(redis_url):
    app, planner = scripted(redis_url)
    async with serve(app) as url:
        gw = Gateway(url, planner)
        models = await gw.openai.models.list()
    ids = {m.id for m in models.data}
    assert ids == {
        "lumos-complex-qa",
        "lumos-complex-qa-onetime",
        "lumos-maths",
        "lumos-maths-onetime",
        "lumos-web-agent",
        "lumos-web-agent-onetime",
        "lumos-webshop",
        "lumos-webshop-onetime",
    }
    maths = next(m for m in models.data if m.id == "lumos-maths-onetime")
    assert maths.model_extra["domain"] == "maths"
    assert maths.model_extra["formulation"] == "onetime"
    assert maths.model_extra["planner"] == "lumos-plan"  # LUMOS_PLANNER_MODEL's default


async def test_models_are_the_agents_the_route_table_routes(redis_url, tmp_path):
    routes = tmp_path / "routes.toml"
    routes.write_text(
        '[pools.maths]\nurls = ["http://127.0.0.1:9"]\n\n'
        '[[routes]]\ndomain = "maths"\npool = "maths"\nmodel = "maths-7b"\n\n'
        '[[routes]]\ndomain = "maths"\nformulation = "onetime"\nmodule = "planner"\n'
        'pool = "maths"\nmodel = "maths-plan-onetime"\n'
    )
    app, planner = scripted(redis_url, routes_file=str(routes))
    async with serve(app) as url:
        gw = Gateway(url, planner)
        models = {m.id: m.model_extra for m in (await gw.openai.models.list()).data}
        with pytest.raises(openai.NotFoundError) as refused:
            await gw.openai.chat.completions.create(model="lumos-complex-qa", messages=USER)
    assert set(models) == {"lumos-maths", "lumos-maths-onetime"}
    assert models["lumos-maths"]["planner"] == "maths-7b"
    assert models["lumos-maths-onetime"]["planner"] == "maths-plan-onetime"
    assert models["lumos-maths-onetime"]["grounder"] == "maths-7b"
    assert "this gateway serves lumos-maths, lumos-maths-onetime" in refused.value.message


async def test_chat_completion_answers_with_the_runs_answer_and_links_its_trace(redis_url):
    app, planner = scripted(redis_url)
    async with serve(app) as url:
        gw = Gateway(url, planner)
        raw = await gw.openai.chat.completions.with_raw_response.create(
            model="lumos-maths", messages=USER
        )
        completion = raw.parse()
        run_id = raw.headers["X-Run-Id"]
        run = (await gw.http.get(raw.headers["Location"])).json()
        metrics = (await gw.http.get("/metrics")).text
    assert completion.choices[0].message.content == "18"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == "lumos-maths"
    link = completion.model_extra["lumos"]
    assert link["run_id"] == run_id and link["url"] == f"/agent/runs/{run_id}"
    assert link["status"] == "succeeded" and link["steps"] == STEPS
    # the run is an ordinary run: stored, with its trace, the task being the user message
    assert run["id"] == run_id and run["task"] == TASK and run["answer"] == "18"
    assert run["domain"] == "maths" and run["formulation"] == "iterative"
    assert [e["type"] for e in run["trace"]][-1] == "final"
    assert 'lumos_runs_submitted_total{mode="sync"} 1.0' in metrics


async def test_onetime_model_runs_the_onetime_formulation(redis_url):
    onetime_plan = "Subgoal 1: Calculate how many eggs are left; Subgoal 2: Calculate the money."
    planner = ScriptedModel("planner", [onetime_plan])
    app = create_app(
        settings_for(redis_url, api_keys_sha256=DIGEST),
        planner=planner,
        grounder=ScriptedModel("grounder", ["R1 = Calculator(16-3-4); R2 = Calculator(R1*2)"]),
        executor=ScriptedExecutor(RESULTS),
    )
    async with serve(app) as url:
        gw = Gateway(url, planner)
        completion = await gw.openai.chat.completions.create(
            model="lumos-maths-onetime", messages=USER
        )
        run = (await gw.http.get(completion.model_extra["lumos"]["url"])).json()
    assert run["formulation"] == "onetime"
    assert completion.choices[0].message.content == "18"
    assert len(planner.prompts) == 1  # one pass: planned once


async def test_earlier_messages_become_the_environment_description(redis_url):
    app, planner = scripted(redis_url)
    page = "Shop page: eggs cost $2 each."
    messages = [
        {"role": "system", "content": page},
        {"role": "user", "content": [{"type": "text", "text": "Prices are in dollars."}]},
        {"role": "user", "content": TASK},
    ]
    async with serve(app) as url:
        gw = Gateway(url, planner)
        completion = await gw.openai.chat.completions.create(model="lumos-maths", messages=messages)
    assert completion.choices[0].message.content == "18"
    assert (
        f"Task: {TASK}; Initial Environment Description: {page}\n\nPrices are in dollars."
        in planner.prompts[0]
    )


async def test_streaming_sends_each_step_as_a_chunk_then_the_answer_then_done(redis_url):
    app, planner = scripted(redis_url)
    async with serve(app) as url:
        gw = Gateway(url, planner)
        raw = await gw.openai.chat.completions.with_raw_response.create(
            model="lumos-maths",
            messages=USER,
            stream=True,
            stream_options={"include_usage": True},
        )
        stream = raw.parse()
        chunks = [chunk async for chunk in stream]
        run = (await gw.http.get(f"/agent/runs/{raw.headers['X-Run-Id']}")).json()
    steps = [c.choices[0].delta.model_extra.get("reasoning_content") for c in chunks if c.choices]
    steps = [s for s in steps if s]
    # one line per subgoal, grounding and execution, and the planner's stop
    assert len(steps) == 3 * STEPS + 1
    assert "Subgoal 1: Calculate how many eggs are left." in steps[0]
    assert "R1 = Calculator(16-3-4)" in steps[1]
    assert "R1 = 9" in steps[2]
    assert "Yes, I will stop planning." in steps[-1]
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == "18"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and finishes.count("stop") == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None  # include_usage
    assert {c.id for c in chunks} == {f"chatcmpl-{run['id']}"}
    assert run["mode"] == "stream" and run["status"] == "succeeded"


async def test_stream_on_the_wire_is_data_only_chunks_ending_with_done(redis_url):
    app, planner = scripted(redis_url)
    body = {"model": "lumos-maths", "messages": USER, "stream": True}
    async with serve(app) as url:
        gw = Gateway(url, planner)
        async with gw.http.stream("POST", "/v1/chat/completions", json=body) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            lines = [line async for line in response.aiter_lines() if line.strip()]
    payloads = [line.removeprefix("data: ") for line in lines if not line.startswith(":")]
    assert all(line.startswith("data: ") for line in lines if not line.startswith(":"))
    assert payloads[-1] == "[DONE]" and payloads.count("[DONE]") == 1
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-2]["choices"][0]["delta"] == {"content": "18"}


async def test_stream_of_a_failed_run_ends_with_an_error_the_sdk_raises(redis_url):
    # the planner has one output; its second call fails the run (planner_failed)
    app, planner = scripted(redis_url, planner=ScriptedModel("planner", PLANS[:1]))
    async with serve(app) as url:
        gw = Gateway(url, planner)
        stream = await gw.openai.chat.completions.create(
            model="lumos-maths", messages=USER, stream=True
        )
        seen = []
        with pytest.raises(openai.APIError) as failed:
            async for chunk in stream:
                seen.append(chunk)
    assert failed.value.code == "planner_failed"
    assert "/agent/runs/" in failed.value.message
    assert any(c.choices and c.choices[0].delta.model_extra.get("reasoning_content") for c in seen)


async def test_failed_run_is_a_502_naming_its_reason_and_trace(redis_url):
    app, planner = scripted(redis_url, planner=ScriptedModel("planner", PLANS[:1]))
    async with serve(app) as url:
        gw = Gateway(url, planner)
        with pytest.raises(openai.InternalServerError) as failed:
            await gw.openai.chat.completions.create(model="lumos-maths", messages=USER)
    assert failed.value.status_code == 502
    assert failed.value.code == "run_failed"
    assert "planner_failed" in failed.value.message
    assert failed.value.response.headers["X-Run-Id"] in failed.value.message


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}, "tools"),
        ({"n": 2}, "n=2"),
        ({"logprobs": True}, "logprobs"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
    ],
)
async def test_unsupported_parameters_are_a_400_that_names_them(redis_url, extra, named):
    app, planner = scripted(redis_url)
    async with serve(app) as url:
        gw = Gateway(url, planner)
        with pytest.raises(openai.BadRequestError) as refused:
            await gw.openai.chat.completions.create(model="lumos-maths", messages=USER, **extra)
    assert refused.value.code == "unsupported_parameter"
    assert refused.value.message.startswith("Error code: 400 - ")
    assert f"{named}" in refused.value.body["message"]
    assert planner.prompts == []  # nothing ran


@pytest.mark.parametrize(
    ("messages", "code"),
    [
        (
            [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
            "last_message_not_user",
        ),
        (
            [
                {"role": "user", "content": "first task"},
                {"role": "assistant", "content": "an answer"},
                {"role": "user", "content": TASK},
            ],
            "conversation_not_usable",
        ),
        (
            [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
            "unsupported_content",
        ),
        ([{"role": "user", "content": "   "}], "empty_task"),
    ],
)
async def test_messages_that_cannot_make_a_run_are_refused_saying_why(redis_url, messages, code):
    app, planner = scripted(redis_url)
    async with serve(app) as url:
        gw = Gateway(url, planner)
        with pytest.raises(openai.APIStatusError) as refused:
            await gw.openai.chat.completions.create(model="lumos-maths", messages=messages)
    assert refused.value.status_code in (400, 422)
    assert refused.value.code == code
    assert planner.prompts == []


async def test_unknown_model_is_a_404_listing_the_served_ones(redis_url):
    app, planner = scripted(redis_url)
    async with serve(app) as url:
        gw = Gateway(url, planner)
        with pytest.raises(openai.NotFoundError) as refused:
            await gw.openai.chat.completions.create(model="gpt-4o", messages=USER)
    assert refused.value.code == "model_not_found"
    assert "lumos-maths" in refused.value.body["message"]


async def test_same_api_keys_as_agent_run(redis_url):
    app, planner = scripted(redis_url)
    async with serve(app) as url:
        wrong = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="sk-wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            await wrong.models.list()
        with pytest.raises(openai.AuthenticationError):
            await wrong.chat.completions.create(model="lumos-maths", messages=USER)
    assert planner.prompts == []


async def test_idempotency_key_returns_the_same_run_and_refuses_another_request(redis_url):
    app, planner = scripted(redis_url)
    headers = {"Idempotency-Key": "chat-1"}
    async with serve(app) as url:
        gw = Gateway(url, planner)
        first = await gw.openai.chat.completions.create(
            model="lumos-maths", messages=USER, extra_headers=headers
        )
        again = await gw.openai.chat.completions.create(
            model="lumos-maths", messages=USER, extra_headers=headers
        )
        with pytest.raises(openai.ConflictError) as refused:
            await gw.openai.chat.completions.create(
                model="lumos-maths-onetime", messages=USER, extra_headers=headers
            )
    assert first.model_extra["lumos"]["run_id"] == again.model_extra["lumos"]["run_id"]
    assert refused.value.code == "idempotency_key_reused"
    assert len(planner.prompts) == STEPS + 1  # one run, not two


async def test_per_key_run_limit_applies_as_to_agent_run(redis_url):
    app = create_app(
        settings_for(redis_url, api_keys_sha256=DIGEST, max_concurrent_runs_per_key=1),
        planner=SlowModel(delay_s=None),  # never answers: the first run stays unfinished
        grounder=ScriptedModel("grounder", GROUNDS),
        executor=ScriptedExecutor(RESULTS),
    )
    async with serve(app) as url:
        gw = Gateway(url, None)
        held = await gw.http.post(
            "/agent/run", json={"task": TASK, "domain": "maths", "background": True}
        )
        assert held.status_code == 202
        with pytest.raises(openai.RateLimitError) as refused:
            await gw.openai.chat.completions.create(model="lumos-maths", messages=USER)
        await gw.http.post(f"{held.json()['cancel_url']}")
    assert refused.value.code == "too_many_runs"
    assert refused.value.response.headers["Retry-After"] == "1"
