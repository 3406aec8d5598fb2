"""The executor's HTTP API: POST /v1/execute, GET /v1/tools, health, readiness and metrics.

A tool that fails yields an error in its action's result, never a 5xx: the response always
has one result per action. Requests that cannot be executed at all (unknown domain,
unparseable grounder text, malformed JSON) get a 400/422 that says what was expected.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi_offline import FastAPIOffline
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field, field_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from lumos.actions import Action, ActionParseError, parse_actions
from lumos.domains import UnknownDomainError, get_domain
from lumos.trace import ExecutedAction

from .engine import ComputePool, Executor, ExecutorMetrics, ResultCache
from .registry import DOMAIN_TOOLS, ToolRegistry, build_registry
from .settings import ExecutorSettings
from .tools.base import ToolContext

log = logging.getLogger(__name__)

MAX_ACTIONS_PER_CALL = 64


def _clean(value: Any) -> Any:
    """Strings without lone surrogates (JSON ``"\\udc80"``), which could not be sent back."""
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, dict):
        return {_clean(k): _clean(v) for k, v in value.items()}
    return value


class ActionIn(BaseModel):
    outputs: list[str] = Field(min_length=1, max_length=8, examples=[["R1"]])
    name: str = Field(min_length=1, max_length=64, examples=["Calculator"])
    args: str = Field(examples=["16-3-4"])

    @field_validator("outputs", "name", "args", mode="after")
    @classmethod
    def _no_surrogates(cls, v: Any) -> Any:
        return _clean(v)


class ExecuteRequest(BaseModel):
    domain: str = Field(examples=["maths"])
    actions: str | list[ActionIn] = Field(
        description="grounder output text (`R1 = Tool(args); ...`) or parsed actions",
        examples=["R1 = Calculator(16-3-4); R2 = Calculator(R1*2)"],
    )
    variables: dict[str, Any] = Field(
        default_factory=dict, description="the run's variables so far (R1, R2, ...)"
    )
    task: str = ""
    subgoals: list[str] = Field(default_factory=list)
    run_id: str | None = None

    @field_validator("actions", "variables", "task", "subgoals", "domain", mode="after")
    @classmethod
    def _no_surrogates(cls, v: Any) -> Any:
        return v if isinstance(v, list) and v and isinstance(v[0], ActionIn) else _clean(v)


class ExecuteResponse(BaseModel):
    results: list[ExecutedAction]
    variables: dict[str, Any] = Field(description="the run's variables after execution")


class ErrorDetail(BaseModel):
    error: str = Field(
        description="machine-readable: unknown_domain, unparseable_actions, too_many_actions"
    )
    message: str
    reason: str | None = Field(default=None, description="unparseable_actions only")
    start: int | None = Field(default=None, description="unparseable_actions only")
    end: int | None = Field(default=None, description="unparseable_actions only")


class ErrorBody(BaseModel):
    """A request the executor cannot execute at all (400)."""

    detail: ErrorDetail


class MessageBody(BaseModel):
    """FastAPI's own error shape: a 400 for a body it cannot parse (not UTF-8, nested too
    deep), the 503 while the executor starts."""

    detail: str = Field(examples=["the executor is starting"])


STARTING: dict[int | str, dict[str, Any]] = {
    503: {"model": MessageBody, "description": "the executor is still starting"}
}


class ToolInfo(BaseModel):
    name: str
    signature: str
    description: str
    deterministic: bool
    timeout_s: float
    available: bool = True
    unavailable_reason: str | None = None


def _unknown_domain_message(domain: str) -> str | None:
    """lumos's message for a domain it does not know; None for a known one."""
    try:
        get_domain(domain)
    except UnknownDomainError as exc:
        return str(exc)
    return None


def create_app(
    settings: ExecutorSettings | None = None,
    *,
    registry: ToolRegistry | None = None,
    external_tools: bool = True,
) -> FastAPI:
    """The executor app. `registry` replaces the tools built from settings (tests);
    `external_tools=False` builds only the maths tools and Code."""
    settings = settings or ExecutorSettings()
    metrics = ExecutorMetrics()
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool: ComputePool | None = None
        if settings.math_workers > 0:
            pool = ComputePool(settings.math_workers, settings.math_worker_memory_mb)
            pool.start()
            await pool.warm()
        reg = registry or build_registry(
            settings, offload=pool.call if pool else None, external=external_tools
        )
        cache = (
            ResultCache(settings.redis_url, settings.cache_ttl_s) if settings.redis_url else None
        )
        state.update(pool=pool, registry=reg, cache=cache)
        state["executor"] = Executor(reg, cache=cache, metrics=metrics)
        for note in reg.notes:
            log.info("%s", note)
        try:
            yield
        finally:
            if cache is not None:
                await cache.aclose()
            if registry is None:
                await reg.aclose()
            if pool is not None:
                pool.close()

    # /docs and /redoc serve Swagger UI and ReDoc from the package, not a CDN: they work offline.
    app = FastAPIOffline(
        title="Lumos executor",
        version="0.1.0",
        description="Runs grounded Lumos actions with the domain's tools.",
        lifespan=lifespan,
    )

    def executor() -> Executor:
        ex: Executor | None = state.get("executor")
        if ex is None:
            raise HTTPException(503, "the executor is starting")
        return ex

    @app.post(
        "/v1/execute",
        response_model=ExecuteResponse,
        responses={
            400: {
                "model": ErrorBody,
                "description": "unknown domain, unparseable grounder text, too many actions "
                "or a body that cannot be parsed (invalid_body): "
                '`{"detail": {"error", "message"}}`',
            },
            **STARTING,
        },
    )
    async def execute(body: ExecuteRequest) -> ExecuteResponse:
        problem = _unknown_domain_message(body.domain)
        if problem:
            raise HTTPException(400, {"error": "unknown_domain", "message": problem})
        if isinstance(body.actions, str):
            try:
                actions = parse_actions(body.actions)
            except ActionParseError as exc:
                raise HTTPException(
                    400,
                    {
                        "error": "unparseable_actions",
                        "message": str(exc),
                        "reason": exc.reason,
                        "start": exc.start,
                        "end": exc.end,
                    },
                ) from exc
        else:
            actions = [Action(tuple(a.outputs), a.name, a.args) for a in body.actions]
        if len(actions) > MAX_ACTIONS_PER_CALL:
            raise HTTPException(
                400,
                {
                    "error": "too_many_actions",
                    "message": f"{len(actions)} actions; at most {MAX_ACTIONS_PER_CALL} per call",
                },
            )
        ctx = ToolContext(
            domain=body.domain, task=body.task, subgoals=tuple(body.subgoals), run_id=body.run_id
        )
        results = await executor().execute(body.domain, actions, body.variables, ctx)
        variables = dict(body.variables)
        for r in results:
            variables.update(r.bindings())
        return ExecuteResponse(
            results=[ExecutedAction.from_result(r) for r in results], variables=variables
        )

    @app.get(
        "/v1/tools",
        responses={400: {"model": ErrorBody, "description": "unknown domain"}, **STARTING},
    )
    async def tools(
        domain: str | None = Query(default=None, description="one domain; all when omitted"),
    ) -> dict[str, list[ToolInfo]]:
        reg: ToolRegistry = executor().registry
        if domain is not None:
            problem = _unknown_domain_message(domain)
            if problem:
                raise HTTPException(400, {"error": "unknown_domain", "message": problem})
        out: dict[str, list[ToolInfo]] = {}
        for d in [domain] if domain else list(DOMAIN_TOOLS):
            infos = []
            for name in DOMAIN_TOOLS[d]:
                tool = reg.get(d, name)
                if tool is None:
                    infos.append(
                        ToolInfo(
                            name=name,
                            signature=f"{name}(...)",
                            description="",
                            deterministic=False,
                            timeout_s=0.0,
                            available=False,
                            unavailable_reason=reg.unavailable_reason(d, name),
                        )
                    )
                else:
                    infos.append(
                        ToolInfo(
                            name=tool.name,
                            signature=tool.signature,
                            description=tool.description,
                            deterministic=tool.deterministic,
                            timeout_s=tool.timeout_s,
                        )
                    )
            out[d] = infos
        return out

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        responses={
            200: {"description": "the tools are built and the maths workers alive"},
            503: {
                "description": "not ready; `checks` says what is missing",
                "content": {"application/json": {"schema": {}}},
            },
        },
    )
    async def readyz() -> JSONResponse:
        reg: ToolRegistry | None = state.get("registry")
        pool: ComputePool | None = state.get("pool")
        cache: ResultCache | None = state.get("cache")
        checks: dict[str, Any] = {"registry": reg is not None}
        if pool is not None:
            checks["math_workers"] = pool.alive()
        if cache is not None:
            checks["cache"] = await cache.ping()  # optional: reported, never blocks readiness
        ready = bool(checks["registry"]) and checks.get("math_workers", True)
        body = {
            "status": "ready" if ready else "not ready",
            "checks": checks,
            "notes": reg.notes if reg else [],
        }
        return JSONResponse(body, status_code=200 if ready else 503)

    # What prometheus_client answers: `text/plain; version=...; charset=utf-8`.
    @app.get(
        "/metrics",
        response_class=PlainTextResponse,
        responses={200: {"description": "the Prometheus text exposition format"}},
    )
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        # FastAPI answers a body it cannot decode at all (bytes that are not UTF-8 inside a
        # string, JSON nested too deep) with a bare 400 string; give it our error shape.
        if exc.status_code == 400 and isinstance(exc.detail, str):
            message = (
                f"the request body cannot be parsed ({exc.detail}): send UTF-8 JSON like "
                '{"domain": "maths", "actions": "R1 = Calculator(2+2)"}'
            )
            return JSONResponse(
                {"detail": {"error": "invalid_body", "message": message}}, status_code=400
            )
        return await http_exception_handler(request, exc)

    return app
