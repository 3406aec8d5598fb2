"""Trained and untrained domains: LUMOS_TRAINED_DOMAINS / LUMOS_UNTRAINED_MODEL.

Runs of a domain the planner and grounder were not trained for go to the untrained model
(e.g. the base model with the domain's prompts); /readyz says which domains are which.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Sequence
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI, Request
from pydantic import ValidationError

from gateway.app import create_app
from gateway.modules import RemoteModules
from gateway.schemas import Readiness
from gateway.settings import GatewaySettings
from lumos.domains import DOMAINS
from services.modelserver.adapters import (
    BASE_SERVED_NAME,
    adapter_folders,
    gateway_env,
    server_env,
)
from tests.gateway.helpers import serve, settings_for

REPO = Path(__file__).resolve().parents[2]
MINI = {"trained_domains": "maths", "untrained_model": "lumos-base"}
SERVED = ("lumos-base", "lumos-plan", "lumos-ground")


def model_server(served: Sequence[str], seen: list[tuple[str, str]]) -> FastAPI:
    """Records (model, role) per completion; plans one subgoal, grounds one Calculator."""
    app = FastAPI()

    @app.post("/v1/completions")
    async def complete(request: Request):
        body = await request.json()
        grounding = "structured_outputs" in body  # only the grounder sends a grammar
        seen.append((body["model"], "ground" if grounding else "plan"))
        if grounding:
            text = "R1 = Calculator(2+2)"
        elif "Subgoal 1:" in body["prompt"]:
            text = "Yes, I will stop planning."
        else:
            text = "Subgoal 1: Add two and two."
        return {
            "model": body["model"],
            "choices": [{"text": text, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5},
        }

    @app.get("/v1/models")
    async def models():
        return {"data": [{"id": name} for name in served]}

    return app


def executor() -> FastAPI:
    app = FastAPI()

    @app.post("/v1/execute")
    async def execute(request: Request):
        body = await request.json()
        return {
            "results": [
                {**a, "values": ["4"], "error": None, "elapsed_s": 0.001} for a in body["actions"]
            ],
            "variables": {"R1": "4"},
        }

    @app.get("/readyz")
    async def readyz():
        return {"status": "ready"}

    return app


def test_default_settings_serve_every_domain_with_the_configured_models(monkeypatch):
    monkeypatch.delenv("LUMOS_TRAINED_DOMAINS", raising=False)
    monkeypatch.delenv("LUMOS_UNTRAINED_MODEL", raising=False)
    s = GatewaySettings()
    assert s.trained_domains == [] and s.untrained_model is None
    for domain in DOMAINS:
        assert s.is_trained(domain)
        assert s.module_models("iterative", domain) == ("lumos-plan", "lumos-ground")
    assert s.domain_report() == {
        "trained": sorted(DOMAINS),
        "untrained": [],
        "untrained_model": None,
    }
    # an untrained model without trained domains changes nothing: every domain is trained
    s = GatewaySettings(untrained_model="lumos-base")
    assert s.module_models("iterative", "webshop") == ("lumos-plan", "lumos-ground")
    assert s.models_in_use() == (["lumos-plan"], ["lumos-ground"])


def test_untrained_domains_use_the_untrained_model_for_both_modules(monkeypatch):
    monkeypatch.setenv("LUMOS_TRAINED_DOMAINS", "gsm8k, svamp")  # datasets name their domain
    monkeypatch.setenv("LUMOS_UNTRAINED_MODEL", "lumos-base")
    s = GatewaySettings(planner_model_onetime="lumos-plan-onetime")
    assert s.trained_domains == ["maths"]
    assert s.module_models("iterative", "maths") == ("lumos-plan", "lumos-ground")
    assert s.module_models("onetime", "svamp") == ("lumos-plan-onetime", "lumos-ground")
    for domain in ("complex_qa", "strategyqa", "web_agent", "webshop"):
        for formulation in ("iterative", "onetime"):
            assert s.module_models(formulation, domain) == ("lumos-base", "lumos-base")
    assert s.models_in_use() == (
        ["lumos-base", "lumos-plan", "lumos-plan-onetime"],
        ["lumos-base", "lumos-ground"],
    )
    assert s.domain_report() == {
        "trained": ["maths"],
        "untrained": ["complex_qa", "web_agent", "webshop"],
        "untrained_model": "lumos-base",
    }


def test_trained_domains_without_an_untrained_model_only_report_them():
    s = GatewaySettings(trained_domains="maths", untrained_model="")
    assert s.untrained_model is None
    assert s.module_models("iterative", "complex_qa") == ("lumos-plan", "lumos-ground")
    assert s.domain_report()["untrained"] == ["complex_qa", "web_agent", "webshop"]


def test_an_unknown_trained_domain_is_refused_naming_the_valid_ones():
    with pytest.raises(ValidationError) as info:
        GatewaySettings(trained_domains="maths,math")
    message = str(info.value)
    assert "unknown domain 'math'" in message
    assert "complex_qa, maths, web_agent, webshop" in message and "gsm8k" in message


async def test_remote_modules_pick_the_model_by_the_runs_domain():
    seen: list[tuple[str, str]] = []
    async with serve(model_server(SERVED, seen)) as url, httpx.AsyncClient() as http:
        modules = RemoteModules(GatewaySettings(planner_urls=url, grounder_urls=url, **MINI), http)
        for domain in ("maths", "complex_qa"):
            run = modules.for_run("r", 0, "iterative", domain)
            assert run.models == {
                "planner": "lumos-plan" if domain == "maths" else "lumos-base",
                "grounder": "lumos-ground" if domain == "maths" else "lumos-base",
            }
            await run.planner.generate("p")
            await run.grounder.generate("g", regex="R1 = .*")
        await modules.for_run("r", 0).planner.generate("p")  # no domain: the trained models
    assert seen == [
        ("lumos-plan", "plan"),
        ("lumos-ground", "ground"),
        ("lumos-base", "plan"),
        ("lumos-base", "ground"),
        ("lumos-plan", "plan"),
    ]


@pytest.mark.redis
async def test_a_maths_run_and_a_complex_qa_run_use_different_models(redis_url):
    seen: list[tuple[str, str]] = []
    async with (
        serve(model_server(SERVED, seen)) as model_url,
        serve(executor()) as executor_url,
    ):
        settings = settings_for(
            redis_url,
            planner_urls=model_url,
            grounder_urls=model_url,
            executor_url=executor_url,
            **MINI,
        )
        async with serve(create_app(settings)) as url, httpx.AsyncClient(base_url=url) as c:
            ready = await c.get("/readyz")
            maths = await c.post("/agent/run", json={"task": "What is 2+2?", "domain": "maths"})
            maths_seen, seen[:] = list(seen), []
            qa = await c.post("/agent/run", json={"task": "What is 2+2?", "domain": "hotpotqa"})
            qa_run = (await c.get(f"/agent/runs/{qa.json()['id']}")).json()
    assert ready.status_code == 200, ready.text
    assert ready.json()["domains"] == {
        "trained": ["maths"],
        "untrained": ["complex_qa", "web_agent", "webshop"],
        "untrained_model": "lumos-base",
    }
    assert maths.status_code == 200 and maths.json()["status"] == "succeeded", maths.text
    assert qa.status_code == 200 and qa.json()["status"] == "succeeded", qa.text
    assert maths_seen == [
        ("lumos-plan", "plan"),
        ("lumos-ground", "ground"),
        ("lumos-plan", "plan"),
    ]
    assert seen == [("lumos-base", "plan"), ("lumos-base", "ground"), ("lumos-base", "plan")]
    started = [e for e in maths.json()["trace"] if e["type"] == "started"]
    assert started[0]["data"]["models"] == {"planner": "lumos-plan", "grounder": "lumos-ground"}
    started = [e for e in qa_run["trace"] if e["type"] == "started"]
    assert started[0]["data"]["models"] == {"planner": "lumos-base", "grounder": "lumos-base"}


@pytest.mark.redis
async def test_readyz_is_not_ready_until_the_untrained_model_is_served(redis_url):
    async with (
        serve(model_server(("lumos-plan", "lumos-ground"), [])) as model_url,
        serve(executor()) as executor_url,
    ):
        settings = settings_for(
            redis_url,
            planner_urls=model_url,
            grounder_urls=model_url,
            executor_url=executor_url,
            worker_concurrency=0,
            **MINI,
        )
        async with serve(create_app(settings)) as url, httpx.AsyncClient(base_url=url) as c:
            ready = await c.get("/readyz")
    assert ready.status_code == 503
    body = Readiness.model_validate(ready.json())  # the documented schema
    for module in ("planner", "grounder"):
        assert body.checks[module].status == "down"
        assert "does not serve model 'lumos-base'" in body.checks[module].detail
        assert "LUMOS_UNTRAINED_MODEL" in body.checks[module].detail
    assert body.domains.trained == ["maths"] and body.worker is None


@pytest.mark.redis
async def test_readyz_of_default_settings_lists_every_domain_as_trained(redis_url):
    async with (
        serve(model_server(("lumos-plan", "lumos-ground"), [])) as model_url,
        serve(executor()) as executor_url,
    ):
        settings = settings_for(
            redis_url, planner_urls=model_url, grounder_urls=model_url, executor_url=executor_url
        )
        async with serve(create_app(settings)) as url, httpx.AsyncClient(base_url=url) as c:
            ready = await c.get("/readyz")
    assert ready.status_code == 200, ready.text
    body = Readiness.model_validate(ready.json())
    assert body.domains.trained == sorted(DOMAINS) and body.domains.untrained == []
    assert body.domains.untrained_model is None


def test_the_settings_form_of_lumos_mini_sends_only_maths_to_its_adapters(monkeypatch):
    """scripts/run_local.py's domain_env(), as docker-compose.cpu.yml's gateway takes it
    (make run itself uses routes/lumos-mini.yaml: tests/gateway/test_route_examples.py)."""
    spec = importlib.util.spec_from_file_location("run_local", REPO / "scripts" / "run_local.py")
    assert spec is not None and spec.loader is not None
    run_local = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run_local)
    monkeypatch.delenv("LUMOS_TRAINED_DOMAINS", raising=False)
    monkeypatch.delenv("LUMOS_UNTRAINED_MODEL", raising=False)
    env = {**gateway_env(), **run_local.domain_env()}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    s = GatewaySettings()
    assert s.module_models("iterative", "gsm8k") == ("lumos-plan", "lumos-ground")
    assert s.module_models("onetime", "maths") == ("lumos-plan-onetime", "lumos-ground-onetime")
    # the untrained model is the one the model server serves the base model as
    assert s.module_models("iterative", "webshop") == (BASE_SERVED_NAME, BASE_SERVED_NAME)
    folders = adapter_folders(REPO / "models" / "lumos-mini")
    served = server_env(folders)["LUMOS_MODELSERVER_SERVED_MODEL_NAMES"]
    assert json.loads(served) == [BASE_SERVED_NAME]
