"""The routes as the gateway serves them, over real Redis and in-process model servers that
speak vLLM's API (completions, models, runtime LoRA loading): refusals, reloads, adapters,
the `lumos adapters` command."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from gateway.app import create_app
from lumos_cli.__main__ import main as lumos
from tests.gateway.helpers import serve, settings_for

pytestmark = pytest.mark.redis

KEY, OPERATOR = "user-key", "operator-key"


def sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class FakeVLLM:
    """Serves `base` (loaded from `root`) and LoRA adapters loaded at run time; records
    each completion's body. Plans one subgoal then stops, grounds one Calculator call."""

    def __init__(self, base: str, root: str = "/models/tiny-model", delay_s: float = 0.0):
        self.base, self.root, self.delay_s = base, root, delay_s
        self.adapters: dict[str, str] = {}
        self.seen: list[dict[str, Any]] = []
        self.refuse_loads = False
        self.app = FastAPI()
        app = self.app

        @app.post("/v1/completions")
        async def complete(request: Request) -> Any:
            body = await request.json()
            if body["model"] not in (self.base, *self.adapters):
                return JSONResponse({"error": {"message": "no such model"}}, 404)
            self.seen.append(body)
            await asyncio.sleep(self.delay_s)
            if "structured_outputs" in body:
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
        async def models() -> Any:
            data = [{"id": self.base, "root": self.root, "parent": None}]
            data += [{"id": n, "root": p, "parent": self.base} for n, p in self.adapters.items()]
            return {"data": data}

        @app.post("/v1/load_lora_adapter")
        async def load(request: Request) -> Any:
            body = await request.json()
            if self.refuse_loads:
                return JSONResponse({"error": {"message": "out of LoRA slots", "code": 500}}, 500)
            self.adapters[body["lora_name"]] = body["lora_path"]
            return "Success"

        @app.post("/v1/unload_lora_adapter")
        async def unload(request: Request) -> Any:
            self.adapters.pop((await request.json())["lora_name"], None)
            return "Success"

    def models_used(self) -> list[str]:
        return [body["model"] for body in self.seen]


def executor_app() -> FastAPI:
    app = FastAPI()

    @app.post("/v1/execute")
    async def execute(request: Request) -> Any:
        body = await request.json()
        return {
            "results": [
                {**a, "values": ["4"], "error": None, "elapsed_s": 0.001} for a in body["actions"]
            ],
            "variables": {"R1": "4"},
        }

    @app.get("/readyz")
    async def readyz() -> Any:
        return {"status": "ready"}

    return app


def adapter_folder(tmp_path: Path, name: str, base: str = "tiny-model", rank: int = 8) -> str:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "adapter_config.json").write_text(
        json.dumps({"base_model_name_or_path": f"/train/{base}", "r": rank})
    )
    return str(folder)


def route_file(path: Path, a: list[str], b: str, maths_planner: str = "plan-v1") -> Path:
    path.write_text(
        json.dumps(
            {
                "pools": {"a": {"urls": a, "max_lora_rank": 16}, "b": {"urls": [b]}},
                "routes": [
                    {
                        "domain": "maths",
                        "module": "planner",
                        "pool": "a",
                        "model": maths_planner,
                        "sampling": {"max_tokens": 64, "top_p": 0.5},
                    },
                    {"domain": "maths", "module": "grounder", "pool": "a", "model": "tiny"},
                    {"domain": "webshop", "pool": "b", "model": "base-b", "trained": False},
                ],
            }
        )  # fmt: skip
    )
    return path


async def wait_for(predicate: Any, timeout_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


@pytest.fixture
def servers() -> dict[str, FakeVLLM]:
    a0 = FakeVLLM("tiny", delay_s=0.02)
    a0.adapters["plan-v1"] = "/adapters/plan-v1"
    a0.adapters["plan-v2"] = "/adapters/plan-v2"
    a1 = FakeVLLM("tiny", delay_s=0.02)
    a1.adapters.update(a0.adapters)
    return {"a0": a0, "a1": a1, "b": FakeVLLM("base-b")}


async def test_runs_follow_the_file_and_a_run_without_a_route_is_refused(
    tmp_path, redis_url, servers
):
    async with (
        serve(servers["a0"].app) as a0,
        serve(servers["a1"].app) as a1,
        serve(servers["b"].app) as b,
        serve(executor_app()) as executor,
    ):
        path = route_file(tmp_path / "routes.json.yaml", [a0, a1], b)  # JSON is YAML
        settings = settings_for(
            redis_url, routes_file=str(path), executor_url=executor, max_concurrent_runs_per_key=1
        )
        async with serve(create_app(settings)) as url, httpx.AsyncClient(base_url=url) as c:
            ready = await c.get("/readyz")
            missing = await c.post("/agent/run", json={"task": "2+2?", "domain": "complex_qa"})
            run = await c.post("/agent/run", json={"task": "2+2?", "domain": "gsm8k"})
            shop = await c.post("/agent/run", json={"task": "a red mug", "domain": "webshop"})
            record = await aioredis.from_url(redis_url).hget(
                f"lumos:run:{run.json()['id']}", "routes"
            )
    assert ready.status_code == 200, ready.text
    assert ready.json()["domains"] == {
        "trained": ["maths"],
        "untrained": ["webshop"],
        "untrained_model": "base-b",
    }
    assert missing.status_code == 422
    assert missing.json()["code"] == "no_route"
    assert "no route for complex_qa/iterative/planner" in missing.json()["detail"]
    assert run.status_code == 200 and run.json()["status"] == "succeeded", run.text
    assert shop.status_code == 200, shop.text  # the refused run held no run slot
    # the run went to one replica of pool a (affinity), with the route's sampling
    used = servers["a0"].seen or servers["a1"].seen
    assert not (servers["a0"].seen and servers["a1"].seen)
    assert [(b["model"], b.get("top_p"), b["max_tokens"]) for b in used] == [
        ("plan-v1", 0.5, 64),
        ("tiny", None, 512),
        ("plan-v1", 0.5, 64),
    ]
    assert servers["b"].models_used() == ["base-b"] * len(servers["b"].seen)
    assert len(servers["b"].seen) >= 1
    assert {e["data"].get("model") for e in run.json()["trace"] if e["type"] == "subgoal"} == {
        "plan-v1"
    }
    routes = json.loads(record)
    assert routes["planner"]["route"] == "maths/*/planner"
    assert (routes["planner"]["model"], routes["grounder"]["model"]) == ("plan-v1", "tiny")
    assert routes["planner"]["sampling"] == {"max_tokens": 64, "top_p": 0.5}
    assert run.json()["routes"] == routes  # the run view shows them


async def test_a_changed_file_moves_new_runs_but_not_the_runs_in_flight(
    tmp_path, redis_url, servers
):
    servers["a0"].delay_s = servers["a1"].delay_s = 0.4
    async with (
        serve(servers["a0"].app) as a0,
        serve(servers["a1"].app) as a1,
        serve(servers["b"].app) as b,
        serve(executor_app()) as executor,
    ):
        path = route_file(tmp_path / "routes.yaml", [a0, a1], b)
        settings = settings_for(
            redis_url, routes_file=str(path), executor_url=executor, routes_poll_s=0.1
        )
        async with serve(create_app(settings)) as url, httpx.AsyncClient(base_url=url) as c:
            flying = await c.post(
                "/agent/run", json={"task": "2+2?", "domain": "maths", "background": True}
            )
            run_url = flying.json()["url"]

            async def running() -> bool:
                return (await c.get(run_url)).json()["status"] == "running"

            await wait_for(running)
            route_file(path, [a0, a1], b, maths_planner="plan-v2")

            async def reloaded() -> bool:
                table = (await c.get("/agent/routes")).json()
                return any(r["model"] == "plan-v2" for r in table["routes"])

            await wait_for(reloaded)
            assert (await c.get(run_url)).json()["status"] == "running"  # still in flight
            after = await c.post("/agent/run", json={"task": "2+2?", "domain": "maths"})

            async def finished() -> bool:
                return (await c.get(run_url)).json()["status"] == "succeeded"

            await wait_for(finished)
            old = (await c.get(run_url)).json()
    planners = lambda run: [e["data"]["model"] for e in run["trace"] if e["type"] == "subgoal"]  # noqa: E731
    assert planners(old) == ["plan-v1", "plan-v1"]
    assert planners(after.json()) == ["plan-v2", "plan-v2"]
    sent = servers["a0"].models_used() + servers["a1"].models_used()
    assert sent.count("plan-v1") == 2 and sent.count("plan-v2") == 2


async def test_sighup_reloads_the_file_and_a_broken_file_keeps_the_table(
    tmp_path, redis_url, servers
):
    async with serve(servers["a0"].app) as a0, serve(servers["b"].app) as b:
        path = route_file(tmp_path / "routes.yaml", [a0], b)
        settings = settings_for(redis_url, routes_file=str(path), routes_poll_s=3600)
        async with serve(create_app(settings)) as url, httpx.AsyncClient(base_url=url) as c:
            assert signal.getsignal(signal.SIGHUP) is not signal.SIG_DFL, "no SIGHUP handler"
            route_file(path, [a0], b, maths_planner="plan-v2")
            table = (await c.get("/agent/routes")).json()
            assert table["resolved"]["maths/iterative"]["planner"] == "plan-v1 @ a"  # not polled
            os.kill(os.getpid(), signal.SIGHUP)

            async def reloaded() -> bool:
                table = (await c.get("/agent/routes")).json()
                return bool(table["resolved"]["maths/iterative"]["planner"] == "plan-v2 @ a")

            await wait_for(reloaded)
            path.write_text("pools: {a: {urls: [nowhere]}}\nroutes: []\n")
            refused = await c.post("/agent/routes/reload")
            table = (await c.get("/agent/routes")).json()
    assert refused.status_code == 422 and refused.json()["code"] == "invalid_route_file"
    assert "'nowhere' is not a base URL" in table["last_error"]
    assert table["resolved"]["maths/iterative"]["planner"] == "plan-v2 @ a"


async def test_lumos_adapters_loads_on_every_replica_routes_runs_to_it_and_unloads(
    tmp_path, redis_url, servers, capsys
):
    async with (
        serve(servers["a0"].app) as a0,
        serve(servers["a1"].app) as a1,
        serve(servers["b"].app) as b,
        serve(executor_app()) as executor,
    ):
        path = route_file(tmp_path / "routes.yaml", [a0, a1], b)
        settings = settings_for(
            redis_url,
            routes_file=str(path),
            executor_url=executor,
            api_keys_sha256=f"{sha(KEY)},{sha(OPERATOR)}",
            operator_keys_sha256=sha(OPERATOR),
        )
        folder = adapter_folder(tmp_path, "ground-maths")
        async with serve(create_app(settings)) as url, httpx.AsyncClient(base_url=url) as c:

            def cli(*argv: str, key: str = OPERATOR) -> Any:
                return asyncio.to_thread(lumos, ["adapters", "--url", url, "--api-key", key, *argv])

            user = await cli("load", "ground-maths", folder, "--pool", "a", key=KEY)
            assert user == 2 and "operator key" in capsys.readouterr().err
            load = ["load", "ground-maths", folder, "--pool", "a", "--route", "maths/*/grounder"]
            assert await cli(*load) == 0
            assert "loaded ground-maths into" in capsys.readouterr().out
            assert await cli(*load) == 2  # the name is taken now
            assert "adapter_name_taken" in capsys.readouterr().err
            headers = {"X-API-Key": KEY}
            run = await c.post(
                "/agent/run", json={"task": "2+2?", "domain": "maths"}, headers=headers
            )
            assert await cli("routes") == 0
            listed = capsys.readouterr().out
            assert await cli("unload", "plan-v1", "--pool", "a") == 2  # the file routes it
            assert "adapter_routed_by_file" in capsys.readouterr().err
            # ... until a run-time route replaces the file's route to it
            replace = ["load", "plan-v2", folder, "--pool", "a", "--route", "maths/*/planner"]
            assert await cli(*replace, "--replace") == 0
            assert await cli("unload", "plan-v1", "--pool", "a") == 0
            assert "unloaded plan-v1" in capsys.readouterr().out
            assert await cli("unload", "ground-maths", "--pool", "a") == 0
            after = await c.post(
                "/agent/run", json={"task": "2+2?", "domain": "maths"}, headers=headers
            )
    assert run.status_code == 200 and run.json()["status"] == "succeeded", run.text
    groundings = [e["data"]["model"] for e in run.json()["trace"] if e["type"] == "actions"]
    assert groundings == ["ground-maths"]
    assert "maths/*/grounder" in listed and "ground-maths @ a (run time)" in listed
    for replica in ("a0", "a1"):
        assert "ground-maths" not in servers[replica].adapters  # unloaded from both
    assert [e["data"]["model"] for e in after.json()["trace"] if e["type"] == "actions"] == ["tiny"]


async def test_a_load_one_replica_refuses_is_undone_on_the_others(tmp_path, redis_url, servers):
    servers["a1"].refuse_loads = True
    async with (
        serve(servers["a0"].app) as a0,
        serve(servers["a1"].app) as a1,
        serve(servers["b"].app) as b,
    ):
        path = route_file(tmp_path / "routes.yaml", [a0, a1], b)
        settings = settings_for(redis_url, routes_file=str(path))
        async with serve(create_app(settings)) as url, httpx.AsyncClient(base_url=url) as c:
            body = {
                "name": "plan-v3",
                "path": adapter_folder(tmp_path, "plan-v3"),
                "pool": "a",
                "routes": ["maths/*/planner"],
            }
            refused = await c.post("/agent/adapters", json=body)
            table = (await c.get("/agent/routes")).json()
            wrong = await c.post("/agent/adapters", json={**body, "pool": "c"})
            bad_key = await c.post("/agent/adapters", json={**body, "routes": ["maths/planner"]})
    assert refused.status_code == 422 and refused.json()["code"] == "adapter_load_failed"
    assert "out of LoRA slots" in refused.json()["detail"] and a1 in refused.json()["detail"]
    assert "plan-v3" not in servers["a0"].adapters  # undone
    assert not any(r["runtime"] for r in table["routes"])
    assert wrong.status_code == 422 and "the pools are a, b" in wrong.json()["detail"]
    assert bad_key.status_code == 422 and "domain/formulation/module" in bad_key.text


async def test_readyz_names_each_route_whose_pool_does_not_serve_its_model(
    tmp_path, redis_url, servers
):
    del servers["a1"].adapters["plan-v1"]  # one replica of pool a lacks the planner
    async with (
        serve(servers["a0"].app) as a0,
        serve(servers["a1"].app) as a1,
        serve(servers["b"].app) as b,
        serve(executor_app()) as executor,
    ):
        path = route_file(tmp_path / "routes.yaml", [a0, a1], b)
        settings = settings_for(
            redis_url, routes_file=str(path), executor_url=executor, worker_concurrency=0
        )
        async with serve(create_app(settings)) as url, httpx.AsyncClient(base_url=url) as c:
            ready = await c.get("/readyz")
    assert ready.status_code == 503
    checks = ready.json()["checks"]
    assert checks["planner"]["status"] == "down"
    detail = checks["planner"]["detail"]
    assert detail.startswith("1/2 routes down: route maths/*/planner -> plan-v1: ")
    assert f"{a1} does not serve model 'plan-v1'" in detail and a0 not in detail
    assert "route file" in detail  # what to fix
    assert checks["grounder"]["status"] == "ok"
    assert "maths/*/grounder -> tiny" in checks["grounder"]["detail"]
    assert "webshop/*/* -> base-b" in checks["grounder"]["detail"]


async def test_an_adapter_a_restarted_server_lost_is_loaded_again(tmp_path, redis_url, servers):
    async with (
        serve(servers["a0"].app) as a0,
        serve(servers["a1"].app) as a1,
        serve(servers["b"].app) as b,
        serve(executor_app()) as executor,
    ):
        path = route_file(tmp_path / "routes.yaml", [a0, a1], b)
        settings = settings_for(
            redis_url, routes_file=str(path), executor_url=executor, routes_poll_s=0.1
        )
        folder = adapter_folder(tmp_path, "ground-v2")
        async with serve(create_app(settings)) as url, httpx.AsyncClient(base_url=url) as c:
            body = {"name": "ground-v2", "path": folder, "pool": "a", "routes": ["*/*/grounder"]}
            assert (await c.post("/agent/adapters", json=body)).status_code == 200
            del servers["a1"].adapters["ground-v2"]  # a1 restarted: run-time adapters gone

            async def back() -> bool:
                return servers["a1"].adapters.get("ground-v2") == folder

            await wait_for(back)
            ready = await c.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert servers["a0"].adapters["ground-v2"] == folder
