"""The gateway application: `create_app()` wires settings, Redis, modules and workers.

Tests pass `planner`, `grounder` and `executor` to run the real gateway over in-process
modules; otherwise `LUMOS_MODULES` decides (the model servers and the executor over HTTP,
or the scripted harness).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import httpx
import redis.asyncio as aioredis
from fastapi import FastAPI
from fastapi_offline import FastAPIOffline
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway import feedback, openai_api, ops, route_api, routes
from gateway.adapters import AdapterLoader
from gateway.adapters import restore as restore_adapters
from gateway.errors import BodySizeLimit, install_error_handlers
from gateway.metrics import GatewayMetrics
from gateway.modules import FixedModules, ModuleProvider, RemoteModules, ScriptedModules
from gateway.route_table import LiveRoutes, RouteWatcher
from gateway.settings import GatewaySettings
from gateway.store import RunStore
from gateway.worker import RunWorker
from lumos.agent import ActionExecutor, LanguageModule

log = logging.getLogger("gateway")


def redis_client(url: str) -> aioredis.Redis:
    """The process's Redis pool; commands retry a few times over a dropped connection."""
    return aioredis.from_url(
        url,
        socket_connect_timeout=5,
        socket_timeout=10,  # above the longest blocking read (1 s)
        health_check_interval=30,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), 3),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )


def create_app(
    settings: GatewaySettings | None = None,
    *,
    planner: LanguageModule | None = None,
    grounder: LanguageModule | None = None,
    executor: ActionExecutor | None = None,
) -> FastAPI:
    settings = settings or GatewaySettings()
    injected = (planner, grounder, executor)
    if any(m is not None for m in injected) and not all(m is not None for m in injected):
        raise ValueError("pass planner, grounder and executor together, or none of them")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        http = httpx.AsyncClient(
            timeout=settings.module_timeout_s,
            limits=httpx.Limits(max_connections=512, max_keepalive_connections=128),
        )
        redis = redis_client(settings.redis_url)
        modules: ModuleProvider
        live_routes: LiveRoutes | None = None
        if planner is not None and grounder is not None and executor is not None:
            modules = FixedModules(planner, grounder, executor)
        elif settings.modules.startswith("scripted:"):
            modules = ScriptedModules.from_setting(settings.modules)
            log.warning("LUMOS_MODULES=%s: scripted test harness, not a model", settings.modules)
        else:
            live_routes = LiveRoutes(settings, redis)
            modules = RemoteModules(settings, http, live_routes)
            app.state.metrics.track_circuits(modules.breakers)
        restore = None
        if live_routes is not None:  # adapters a restarted model server lost
            restore = partial(
                restore_adapters, AdapterLoader(http, settings.model_api_key), live_routes
            )
        watcher = RouteWatcher(live_routes, settings.routes_poll_s, after_each=restore)
        watcher.start()
        app.state.routes, app.state.http = live_routes, http
        store = RunStore(redis, run_ttl_s=settings.run_ttl_s)
        worker = None
        if settings.worker_concurrency > 0:
            worker = RunWorker(store, modules, app.state.metrics, settings)
            worker.start()
        app.state.store, app.state.modules, app.state.worker = store, modules, worker
        try:
            yield
        finally:
            if worker is not None:
                await worker.stop()
            await watcher.stop()
            await modules.aclose()
            await http.aclose()
            await redis.aclose()

    # /docs and /redoc serve Swagger UI and ReDoc from the package, not a CDN: they work offline.
    app = FastAPIOffline(
        title="Lumos gateway",
        version="0.1.0",
        summary="Run Lumos agents (planner -> grounder -> executor) as a service.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = GatewayMetrics()
    app.state.worker = None
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes)
    app.include_router(routes.router)
    app.include_router(feedback.router)
    app.include_router(openai_api.router)
    app.include_router(route_api.router)
    app.include_router(ops.router)
    return app
