"""The module adapters against real in-process HTTP servers: what they send, what they map."""

from __future__ import annotations

import json
from collections import Counter

import httpx
import pytest
import respx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from gateway.modules import (
    CompletionModule,
    ExecutorError,
    HTTPExecutor,
    RemoteModules,
    ScriptedModules,
    replica_index,
)
from gateway.settings import GatewaySettings
from lumos.actions import Action
from lumos.agent import ExecutionRequest
from lumos.llm import CompletionClient, LLMHTTPError
from tests.gateway.helpers import free_port, recording, serve


def fake_model_server(name: str, seen: list[dict]) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/completions")
    async def complete(request: Request):
        body = await request.json()
        seen.append(body)
        if body["prompt"] == "boom":
            return JSONResponse({"error": {"message": "model crashed"}}, 400)
        return {
            "model": body["model"],
            "choices": [{"text": f" R1 = Calculator(2+2) from {name}", "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 7},
        }

    @app.get("/v1/models")
    async def models():
        return {"data": [{"id": name}]}

    return app


def fake_executor(seen: list[dict], status: int = 200) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/execute")
    async def execute(request: Request):
        body = await request.json()
        seen.append(body)
        if status != 200:
            return JSONResponse({"detail": "tool registry is empty"}, status)
        return {
            "results": [
                {**a, "values": ["4"], "error": None, "elapsed_s": 0.002} for a in body["actions"]
            ],
            "variables": {"R1": "4"},
        }

    @app.get("/readyz")
    async def readyz():
        return {"status": "ready"}

    return app


REQUEST = ExecutionRequest(
    domain="maths",
    actions=[Action(("R2",), "Calculator", "R1*2")],
    variables={"R1": "9"},
    task="task",
    subgoals=["Subgoal 1: x", "Subgoal 2: y"],
    run_id="run-1",
)


async def test_completion_module_sends_the_lumos_decoding_and_the_regex():
    seen: list[dict] = []
    async with serve(fake_model_server("lumos-ground", seen)) as url, httpx.AsyncClient() as http:
        module = CompletionModule(CompletionClient(url, "lumos-ground", client=http))
        gen = await module.generate("Task: 2+2\n", regex=r"R1 = .*")
    assert seen == [
        {
            "model": "lumos-ground",
            "prompt": "Task: 2+2\n",
            "max_tokens": 512,
            "temperature": 0.0,
            "stop": ["\n"],
            "structured_outputs": {"regex": "R1 = .*"},
        }
    ]
    assert gen.text == " R1 = Calculator(2+2) from lumos-ground"
    assert (gen.prompt_tokens, gen.completion_tokens) == (12, 7)
    assert gen.latency_s > 0


async def test_completion_module_surfaces_the_servers_error():
    seen: list[dict] = []
    async with serve(fake_model_server("lumos-plan", seen)) as url, httpx.AsyncClient() as http:
        module = CompletionModule(CompletionClient(url, "lumos-plan", client=http))
        with pytest.raises(LLMHTTPError, match="model crashed"):
            await module.generate("boom")
    assert "structured_outputs" not in seen[0]  # no regex, no constraint


async def test_http_executor_posts_the_actions_and_maps_the_results():
    seen: list[dict] = []
    async with serve(fake_executor(seen)) as url, httpx.AsyncClient() as http:
        executed = await HTTPExecutor(url, client=http).execute(REQUEST)
    assert seen == [
        {
            "domain": "maths",
            "actions": [{"outputs": ["R2"], "name": "Calculator", "args": "R1*2"}],
            "variables": {"R1": "9"},
            "task": "task",
            "subgoals": ["Subgoal 1: x", "Subgoal 2: y"],
            "run_id": "run-1",
        }
    ]
    assert [(e.outputs, e.name, e.values, e.elapsed_s) for e in executed] == [
        (("R2",), "Calculator", ("4",), 0.002)
    ]


async def test_http_executor_error_names_the_url_and_the_status():
    async with serve(fake_executor([], status=503)) as url, httpx.AsyncClient() as http:
        with pytest.raises(ExecutorError) as info:
            await HTTPExecutor(url, client=http).execute(REQUEST)
    assert info.value.status_code == 503
    assert str(info.value) == f"{url}/v1/execute answered 503: tool registry is empty"


async def test_http_executor_unreachable_says_so():
    url = f"http://127.0.0.1:{free_port()}"
    async with httpx.AsyncClient() as http:
        with pytest.raises(
            ExecutorError, match=rf"cannot reach {url}/v1/execute.*executor running"
        ):
            await HTTPExecutor(url, client=http).execute(REQUEST)


@respx.mock
async def test_http_executor_rejects_a_body_that_is_not_results():
    respx.post("http://executor/v1/execute").respond(200, json={"unexpected": True})
    async with httpx.AsyncClient() as http:
        with pytest.raises(ExecutorError, match="answered 200 but not with"):
            await HTTPExecutor("http://executor", client=http).execute(REQUEST)


@respx.mock
async def test_http_executor_timeout_is_an_executor_error():
    respx.post("http://executor/v1/execute").mock(side_effect=httpx.ReadTimeout("slow"))
    async with httpx.AsyncClient() as http:
        with pytest.raises(ExecutorError, match="did not answer within 2 s"):
            await HTTPExecutor("http://executor", client=http, timeout_s=2).execute(REQUEST)


def test_replica_choice_is_stable_and_spreads_runs():
    assert replica_index("run-abc", 3) == replica_index("run-abc", 3)
    counts = Counter(replica_index(f"run-{i}", 3) for i in range(3000))
    assert set(counts) == {0, 1, 2} and min(counts.values()) > 800


async def test_every_call_of_a_run_goes_to_the_same_replica():
    seen: dict[str, list[dict]] = {"a": [], "b": [], "c": []}
    async with (
        serve(fake_model_server("lumos-plan", seen["a"])) as a,
        serve(fake_model_server("lumos-plan", seen["b"])) as b,
        serve(fake_model_server("lumos-plan", seen["c"])) as c,
        httpx.AsyncClient() as http,
    ):
        settings = GatewaySettings(planner_urls=f"{a},{b},{c}", grounder_urls=a)
        modules = RemoteModules(settings, http)
        for run in ("run-1", "run-2", "run-3", "run-4"):
            for _ in range(3):
                await modules.for_run(run, 0).planner.generate(run)
        for run in ("run-1", "run-2", "run-3", "run-4"):
            replica = "abc"[replica_index(run, 3)]
            for r in "abc":
                sent = [body["prompt"] for body in seen[r]].count(run)
                assert sent == (3 if r == replica else 0), (run, r)


async def test_readiness_checks_each_module_and_the_served_model_name():
    async with (
        serve(fake_model_server("lumos-plan", [])) as planner,
        serve(fake_model_server("some-other-model", [])) as grounder,
        serve(fake_executor([])) as executor,
        httpx.AsyncClient() as http,
    ):
        settings = GatewaySettings(
            planner_urls=planner, grounder_urls=grounder, executor_url=executor
        )
        checks = await RemoteModules(settings, http).check()
    assert checks["planner"].status == "ok"
    assert checks["executor"].status == "ok"
    assert checks["grounder"].status == "down"
    assert "does not serve model 'lumos-ground'" in checks["grounder"].detail
    assert "some-other-model" in checks["grounder"].detail


async def test_onetime_runs_use_the_onetime_model_names_when_set():
    seen: list[dict] = []
    async with serve(fake_model_server("lumos-plan", seen)) as url, httpx.AsyncClient() as http:
        settings = GatewaySettings(
            planner_urls=url,
            grounder_urls=url,
            planner_model_onetime="lumos-plan-onetime",
            grounder_model_onetime="lumos-ground-onetime",
        )
        modules = RemoteModules(settings, http)
        for formulation in ("iterative", "onetime"):
            run = modules.for_run("r", 0, formulation)
            await run.planner.generate("p")
            await run.grounder.generate("g")
        # unset: onetime runs fall back to the iterative names
        plain = RemoteModules(GatewaySettings(planner_urls=url, grounder_urls=url), http)
        await plain.for_run("r", 0, "onetime").planner.generate("p")
    assert [body["model"] for body in seen] == [
        "lumos-plan",
        "lumos-ground",
        "lumos-plan-onetime",
        "lumos-ground-onetime",
        "lumos-plan",
    ]


async def test_readiness_names_every_missing_onetime_model():
    async with (
        serve(fake_model_server("lumos-plan", [])) as url,
        serve(fake_executor([])) as executor,
        httpx.AsyncClient() as http,
    ):
        settings = GatewaySettings(
            planner_urls=url,
            grounder_urls=url,
            executor_url=executor,
            planner_model_onetime="lumos-plan-onetime",
        )
        checks = await RemoteModules(settings, http).check()
    assert checks["planner"].status == "down"
    assert "'lumos-plan-onetime'" in checks["planner"].detail
    assert "'lumos-plan'" not in checks["planner"].detail.split("(it serves")[0]


async def test_scripted_harness_skips_the_outputs_of_completed_steps(tmp_path):
    path = tmp_path / "recording.json"
    path.write_text(json.dumps(recording(delay_s=0.01)))
    modules = ScriptedModules.from_setting(f"scripted:{path}")
    fresh, resumed = modules.for_run("r", 0), modules.for_run("r", 2)
    assert (await fresh.planner.generate("p")).text == recording()["planner_outputs"][0]
    assert (await resumed.planner.generate("p")).text == recording()["planner_outputs"][2]
    assert (await resumed.grounder.generate("p")).text == recording()["grounder_outputs"][2]


def test_scripted_harness_names_a_missing_or_wrong_file(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        ScriptedModules.from_setting(f"scripted:{tmp_path / 'nope.json'}")
    bad = tmp_path / "bad.json"
    bad.write_text('{"planner_outputs": "not a list"}')
    with pytest.raises(ValueError, match="is not a replay recording"):
        ScriptedModules.from_setting(f"scripted:{bad}")
