"""Operations endpoints: liveness, readiness of every dependency, Prometheus metrics."""

from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse

from gateway.metrics import GatewayMetrics
from gateway.modules import ComponentCheck, ModuleProvider
from gateway.schemas import Readiness
from gateway.store import RunStore

router = APIRouter(tags=["operations"])

REDIS_PROBE_S = 1.0


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


async def _check_redis(store: RunStore) -> ComponentCheck:
    started = time.perf_counter()
    try:
        async with asyncio.timeout(REDIS_PROBE_S):
            await store.ping()
    except Exception as exc:  # any failure means not ready; say which
        detail = f"PING failed: {type(exc).__name__}: {exc}; is LUMOS_REDIS_URL right?"
        return ComponentCheck("down", detail, time.perf_counter() - started)
    return ComponentCheck("ok", "PONG", time.perf_counter() - started)


@router.get(
    "/readyz",
    summary="Readiness: Redis, planner, grounder and executor, each checked",
    responses={
        200: {"description": "every dependency is up", "model": Readiness},
        503: {
            "description": "some dependency is down; `checks` says which and why",
            "model": Readiness,
        },
    },
)
async def readyz(request: Request) -> JSONResponse:
    """200 when every dependency is up, else 503; `checks` says which one is not and why,
    `domains` which domains' runs use trained modules and which the untrained fallback."""
    store: RunStore = request.app.state.store
    modules: ModuleProvider = request.app.state.modules
    redis, others = await asyncio.gather(_check_redis(store), modules.check())
    checks = {"redis": redis, **others}
    ready = all(c.status == "ok" for c in checks.values())
    worker = request.app.state.worker
    body = {
        "status": "ready" if ready else "not_ready",
        "checks": {name: c.as_json() for name, c in checks.items()},
        "worker": None
        if worker is None
        else {
            "name": worker.name,
            "busy": worker.busy,
            "slots": worker.settings.worker_concurrency,
        },
        "domains": modules.domains(),
    }
    return JSONResponse(body, 200 if ready else 503)


@router.get(
    "/metrics",
    summary="Prometheus metrics of this process",
    # What prometheus_client answers: `text/plain; version=...; charset=utf-8`.
    response_class=PlainTextResponse,
    responses={200: {"description": "the Prometheus text exposition format"}},
)
async def metrics(request: Request) -> Response:
    gm: GatewayMetrics = request.app.state.metrics
    payload, content_type = gm.exposition()
    return Response(payload, media_type=content_type)
