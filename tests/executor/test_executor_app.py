"""The executor over HTTP: one result per action, errors in results (never a 5xx), clear
4xx for requests that cannot run, and a service that keeps answering after hostile input."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from lumos.actions import Action
from services.executor.app import create_app
from services.executor.engine import ComputePool, Executor, ResultCache
from services.executor.registry import ToolRegistry, build_registry
from services.executor.settings import ExecutorSettings
from services.executor.tools.base import Tool, ToolContext
from tests.redis_server import RedisServer, require_redis_binary

REPO = Path(__file__).resolve().parents[2]
SETTINGS = ExecutorSettings(math_workers=1, code_timeout_s=8.0, code_cpu_s=2)


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(SETTINGS, external_tools=False)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://executor") as c:
            yield c


async def execute(
    client: httpx.AsyncClient,
    actions: Any,
    variables: dict[str, Any] | None = None,
    domain: str = "maths",
) -> httpx.Response:
    body = {"domain": domain, "actions": actions, "variables": variables or {}}
    return await client.post("/v1/execute", json=body)


async def test_executes_grounder_text_binding_each_output_for_the_next(
    client: httpx.AsyncClient,
) -> None:
    r = await execute(
        client,
        "R1 = Calculator(16-3-4); R2 = Calculator(R1*2); "
        "R3 = SetEquation(x + y = R2, x - y = 2); R4, R5 = SolveEquation(R3)",
    )
    assert r.status_code == 200
    body = r.json()
    assert [res["values"] for res in body["results"]] == [
        ["9"],
        ["18"],
        ["x + y = (18), x - y = 2"],
        ["10", "8"],
    ]
    assert all(res["error"] is None and res["elapsed_s"] >= 0 for res in body["results"])
    assert body["variables"] == {
        "R1": "9",
        "R2": "18",
        "R3": "x + y = (18), x - y = 2",
        "R4": "10",
        "R5": "8",
    }


async def test_accepts_parsed_actions_and_earlier_variables(client: httpx.AsyncClient) -> None:
    r = await execute(
        client, [{"outputs": ["R3"], "name": "Calculator", "args": "R1 + R2"}], {"R1": 4, "R2": "5"}
    )
    assert r.status_code == 200
    assert r.json()["results"][0]["values"] == ["9"]
    assert r.json()["variables"] == {"R1": 4, "R2": "5", "R3": "9"}


async def test_action_needing_a_failed_actions_output_says_so(client: httpx.AsyncClient) -> None:
    r = await execute(client, "R1 = Calculator(1/0); R2 = Calculator(R1 + 1); R3 = Calculator(2)")
    results = r.json()["results"]
    assert "division by zero" in results[0]["error"]
    assert results[1]["error"].startswith("R1 has no value because 'R1 = Calculator(1/0)' failed")
    assert results[2]["values"] == ["2"]  # independent actions still run
    assert "R1" not in r.json()["variables"]


async def test_unknown_action_is_an_error_result_naming_the_domains_actions(
    client: httpx.AsyncClient,
) -> None:
    r = await execute(client, "R1 = Search(shoes)")
    assert r.status_code == 200
    assert r.json()["results"][0]["error"] == (
        "unknown action 'Search' for domain 'maths'; expected one of Calculator, SetEquation, "
        "SolveEquation, Count, SolveInequality, Code, Define"
    )


async def test_unknown_domain_is_a_400_with_the_expected_domains(client: httpx.AsyncClient) -> None:
    r = await execute(client, "R1 = Calculator(1)", domain="qa")
    assert r.status_code == 400
    message = r.json()["detail"]["message"]
    assert "'qa'" in message and "complex_qa" in message and "maths" in message


async def test_unparseable_actions_are_a_400_with_the_span(client: httpx.AsyncClient) -> None:
    r = await execute(client, "R1 = Calculator(1 + 2")
    assert r.status_code == 400
    detail = r.json()["detail"]
    assert detail["error"] == "unparseable_actions"
    assert detail["reason"] == "unbalanced parentheses in Calculator(...)"
    assert (detail["start"], detail["end"]) == (0, 21)


@pytest.mark.parametrize(
    "formula",
    [
        "__import__('os').system('id')",
        "9**9**9",
        "2^99999999",
        "(" * 10_000 + "1" + ")" * 10_000,
        "7" * 1_000_000,  # a 1 MB argument
    ],
    ids=["import", "power-tower", "huge-exponent", "nested-10000", "1MB"],
)
async def test_hostile_formula_gets_an_error_result_and_the_service_stays_up(
    client: httpx.AsyncClient, formula: str
) -> None:
    started = time.perf_counter()
    r = await execute(client, [{"outputs": ["R1"], "name": "Calculator", "args": formula}])
    assert r.status_code == 200
    result = r.json()["results"][0]
    assert result["values"] == [] and result["error"].startswith("Calculator: ")
    assert time.perf_counter() - started < 10.0
    assert (await client.get("/healthz")).status_code == 200
    assert (await execute(client, "R1 = Calculator(2+2)")).json()["results"][0]["values"] == ["4"]


async def test_non_utf8_request_is_a_client_error_and_the_service_stays_up(
    client: httpx.AsyncClient,
) -> None:
    r = await client.post(
        "/v1/execute",
        content=b'{"domain": "maths", "actions": "R1 = Calculator(\xff\xfe1)"}',
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 400
    assert r.json()["detail"]["error"] == "invalid_body"
    assert "send UTF-8 JSON" in r.json()["detail"]["message"]
    deep = await client.post(
        "/v1/execute", content=b"[" * 50_000 + b"]" * 50_000,
        headers={"content-type": "application/json"},
    )  # fmt: skip
    assert (deep.status_code, deep.json()["detail"]["error"]) == (400, "invalid_body")
    missing = await client.get("/v1/nothing-here")  # other HTTP errors keep FastAPI's shape
    assert (missing.status_code, missing.json()) == (404, {"detail": "Not Found"})
    assert (await client.get("/healthz")).json() == {"status": "ok"}


async def test_lone_surrogates_in_json_become_an_error_result_not_a_500(
    client: httpx.AsyncClient,
) -> None:
    r = await client.post(
        "/v1/execute",
        content=b'{"domain": "maths", "actions": "R1 = Calculator(\\udc80 + 1)"}',
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 200
    assert "unexpected character" in r.json()["results"][0]["error"]


async def test_code_runs_in_the_sandbox_and_hostile_code_is_an_error_result(
    client: httpx.AsyncClient,
) -> None:
    r = await execute(
        client, "R2 = Code(R1 * 3); R3 = Code(open('/etc/passwd').read())", {"R1": "14"}
    )
    results = r.json()["results"]
    assert results[0]["values"] == ["42"]
    assert "not allowed" in results[1]["error"]


async def test_lists_each_domains_tools_with_signatures(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/tools", params={"domain": "maths"})
    assert r.status_code == 200
    maths = r.json()["maths"]
    assert [t["signature"] for t in maths] == [
        "Calculator(formula)",
        "SetEquation(equation)",
        "SolveEquation(equation)",
        "Count(list)",
        "SolveInequality(inequality)",
        "Code(pseudo_code)",
        "Define(variable/number)",
    ]
    assert all(t["available"] for t in maths)
    everything = (await client.get("/v1/tools")).json()
    assert set(everything) == {"complex_qa", "maths", "web_agent", "webshop"}
    # tools this executor was built without are listed with the reason
    qa = {t["name"]: t for t in everything["complex_qa"]}
    assert qa["Code"]["available"] and not qa["QA"]["available"]
    assert (await client.get("/v1/tools", params={"domain": "nope"})).status_code == 400


async def test_metrics_count_latency_errors_per_tool(client: httpx.AsyncClient) -> None:
    await execute(client, "R1 = Calculator(1+1); R2 = Calculator(1/0)")
    text = (await client.get("/metrics")).text
    assert 'lumos_executor_tool_latency_seconds_count{domain="maths",tool="Calculator"} 2.0' in text
    assert (
        'lumos_executor_tool_errors_total{domain="maths",kind="tool",tool="Calculator"} 1.0' in text
    )
    assert 'le="300.0"' in text and 'le="0.005"' in text


async def test_readiness_reports_workers_and_sandbox(client: httpx.AsyncClient) -> None:
    r = await client.get("/readyz")
    assert r.status_code == 200
    assert r.json()["checks"]["math_workers"] is True


class _SlowTool(Tool):
    name = "Calculator"
    signature = "Calculator(formula)"
    description = "sleeps"
    timeout_s = 0.3

    async def run(
        self, action: Action, variables: dict[str, Any], ctx: ToolContext
    ) -> tuple[Any, ...]:
        await asyncio.sleep(30)
        return ("never",)


async def test_a_tool_over_its_timeout_is_an_error_result() -> None:
    registry = ToolRegistry()
    registry.add("maths", _SlowTool())
    app = create_app(ExecutorSettings(math_workers=0), registry=registry)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://executor"
        ) as c:
            started = time.perf_counter()
            r = await execute(c, "R1 = Calculator(1)")
            assert time.perf_counter() - started < 5
    assert r.json()["results"][0]["error"] == "Calculator timed out after 0.3 s"


async def test_compute_pool_kills_a_worker_that_runs_over_and_keeps_serving() -> None:
    pool = ComputePool(workers=1, memory_mb=512)
    pool.start()
    try:
        await pool.warm()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(pool.call(time.sleep, 60), timeout=0.5)
        assert pool.restarts == 1
        assert await asyncio.wait_for(pool.call(pow, 2, 10), timeout=60) == 1024
        assert pool.alive()
    finally:
        pool.close()


class _MemoryCache(ResultCache):
    def __init__(self) -> None:  # no Redis: a dict
        self.data: dict[str, Any] = {}

    async def get(self, key: str) -> tuple[Any, ...] | None:
        return self.data.get(key)

    async def set(self, key: str, values: Any) -> None:
        self.data[key] = tuple(values)


async def test_deterministic_results_are_cached_by_tool_and_resolved_arguments() -> None:
    registry = build_registry(ExecutorSettings(math_workers=0), external=False)
    cache = _MemoryCache()
    executor = Executor(registry, cache=cache)
    ctx = ToolContext("maths")
    first = await executor.execute(
        "maths", [Action(("R2",), "Calculator", "R1 * 2")], {"R1": "3"}, ctx
    )
    again = await executor.execute(
        "maths", [Action(("R2",), "Calculator", "R1  *  2")], {"R1": "3"}, ctx
    )
    other = await executor.execute(
        "maths", [Action(("R2",), "Calculator", "R1 * 2")], {"R1": "4"}, ctx
    )
    assert [r.values for r in (*first, *again, *other)] == [("6",), ("6",), ("8",)]
    hits = executor.metrics.cache_hits.labels("Calculator", "maths")._value.get()
    assert hits == 1.0
    assert len(cache.data) == 2


async def test_execution_goes_on_when_redis_is_unreachable() -> None:
    port = _free_port()
    registry = build_registry(ExecutorSettings(math_workers=0), external=False)
    cache = ResultCache(f"redis://127.0.0.1:{port}/0", ttl_s=60)
    executor = Executor(registry, cache=cache)
    results = await executor.execute(
        "maths", [Action(("R1",), "Calculator", "2+3")], {}, ToolContext("maths")
    )
    assert results[0].values == ("5",)
    await cache.aclose()


@pytest.mark.redis
async def test_results_are_cached_in_a_real_redis(tmp_path: Path) -> None:
    server = RedisServer(require_redis_binary(), tmp_path)
    server.start()
    try:
        registry = build_registry(ExecutorSettings(math_workers=0), external=False)
        cache = ResultCache(server.url, ttl_s=60)
        executor = Executor(registry, cache=cache)
        ctx = ToolContext("maths")
        for _ in range(2):
            results = await executor.execute(
                "maths", [Action(("R1",), "Calculator", "6*7")], {}, ctx
            )
            assert results[0].values == ("42",)
        assert executor.metrics.cache_hits.labels("Calculator", "maths")._value.get() == 1.0
        await cache.aclose()
    finally:
        server.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_the_real_service_starts_with_uvicorn_and_executes() -> None:
    port = _free_port()
    env = {
        **os.environ,
        "LUMOS_EXECUTOR_HOST": "127.0.0.1",
        "LUMOS_EXECUTOR_PORT": str(port),
        "LUMOS_EXECUTOR_MATH_WORKERS": "1",
        "LUMOS_EXECUTOR_LOG_LEVEL": "warning",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.executor"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the executor did not become ready in 60 s"
            time.sleep(0.2)
        r = httpx.post(
            f"{base}/v1/execute",
            json={"domain": "maths", "actions": "R1 = Calculator(9*2); R2 = Calculator(9**9**9)"},
            timeout=30,
        )
        assert r.status_code == 200
        results = r.json()["results"]
        assert results[0]["values"] == ["18"] and "too large" in results[1]["error"]
        assert httpx.get(f"{base}/healthz", timeout=5).json() == {"status": "ok"}
        assert "lumos_executor_tool_latency_seconds" in httpx.get(f"{base}/metrics", timeout=5).text
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_app_factory_builds_without_settings_overrides() -> None:
    assert isinstance(create_app(), FastAPI)


async def test_a_runaway_sympy_solve_is_killed_at_its_timeout_and_the_next_call_served() -> None:
    settings = ExecutorSettings(math_workers=1, tool_timeouts={"SolveEquation": 1.0})
    app = create_app(settings, external_tools=False)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://executor") as c:
            started = time.perf_counter()
            r = await execute(
                c, "R1 = SolveEquation(x^5 + y^5 + z^3 = 3, x^3*y^2 + x*y*z = 7, x + y^3 + z^4 = 2)"
            )
            assert time.perf_counter() - started < 5
            assert r.json()["results"][0]["error"] == "SolveEquation timed out after 1 s"
            # the worker was replaced: the service computes again and is ready
            r = await execute(c, "R1 = SolveEquation(2x = 10)")
            assert r.json()["results"][0]["values"] == ["5"]
            assert (await c.get("/readyz")).json()["checks"]["math_workers"] is True
