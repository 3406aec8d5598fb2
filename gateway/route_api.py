"""`/agent/routes` and `/agent/adapters`: the route table as served, and adapters loaded
into the model servers at run time (operators only)."""

from __future__ import annotations

import hmac
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator

from gateway.adapters import AdapterError, AdapterLoader
from gateway.auth import authenticate, key_digest, presented_key
from gateway.errors import APIError
from gateway.route_table import (
    FORMULATIONS,
    MODULES,
    LiveRoutes,
    NoRouteError,
    RouteSpec,
    Sampling,
)
from gateway.routes import ErrorBody, RequestErrorBody
from lumos.domains import DOMAINS

log = logging.getLogger("gateway.adapters")
router = APIRouter(prefix="/agent", tags=["routes"])


def _error(description: str, model: Any = ErrorBody) -> dict[str, Any]:
    return {"model": model, "description": description}


NOT_ROUTED = _error("this gateway's modules are not model servers (not_routed)")
UNAUTHORIZED = _error("missing or invalid API key (`WWW-Authenticate: Bearer`)")
NOT_AN_OPERATOR = _error("the key is not an operator key (not_an_operator)")

Principal = Annotated[str, Depends(authenticate)]


def operator(request: Request, principal: Principal) -> str:
    """An API key allowed to change the served models (LUMOS_OPERATOR_KEYS_SHA256)."""
    digests: list[str] = request.app.state.settings.operator_keys_sha256
    if not digests:
        return principal
    key = presented_key(request) or ""
    matched = False
    for known in digests:
        matched |= hmac.compare_digest(key_digest(key), known)
    if not matched:
        raise APIError(
            403,
            "not_an_operator",
            "loading and unloading adapters needs an operator key (one whose SHA-256 is in "
            "LUMOS_OPERATOR_KEYS_SHA256)",
        )
    return principal


Operator = Annotated[str, Depends(operator)]


def _routes(request: Request) -> LiveRoutes:
    routes: LiveRoutes | None = getattr(request.app.state, "routes", None)
    if routes is None:
        raise APIError(
            409,
            "not_routed",
            "this gateway's modules are not model servers (LUMOS_MODULES is not remote); "
            "there is no route table",
        )
    return routes


class RouteTableView(BaseModel):
    """`GET /agent/routes`."""

    source: str = Field(description="the route file, or the settings it was built from")
    loaded_at: float = Field(description="when this table was built (Unix time)")
    last_error: str | None = Field(
        description="why the route file's last change was not taken (the table stays)"
    )
    pools: dict[str, dict[str, Any]]
    routes: list[dict[str, Any]] = Field(
        description="every route: domain, formulation, module, pool, model, sampling, trained; "
        "`runtime`: added by an adapter load"
    )
    ignored: list[str] = Field(description="run-time routes into pools the file no longer has")
    resolved: dict[str, dict[str, str]] = Field(
        description="domain/formulation -> {planner, grounder: served model}: what a run gets"
    )


@router.get(
    "/routes",
    response_model=RouteTableView,
    summary="The route table as served: pools, routes, and what each kind of run gets",
    responses={401: UNAUTHORIZED, 409: NOT_ROUTED},
)
async def get_routes(request: Request, principal: Principal) -> RouteTableView:
    live = _routes(request)
    table = live.table
    resolved: dict[str, dict[str, str]] = {}
    for domain in sorted(DOMAINS):
        for formulation in FORMULATIONS:
            for module in MODULES:
                try:
                    route = table.resolve(domain, formulation, module)
                except NoRouteError:
                    continue
                resolved.setdefault(f"{domain}/{formulation}", {})[module] = (
                    f"{route.model} @ {route.pool}"
                )
    return RouteTableView(
        **table.as_json(), loaded_at=live.loaded_at, last_error=live.last_error, resolved=resolved
    )


@router.post(
    "/routes/reload",
    response_model=RouteTableView,
    summary="Read the route file again now (as SIGHUP does)",
    responses={
        401: UNAUTHORIZED,
        403: NOT_AN_OPERATOR,
        409: NOT_ROUTED,
        422: _error(
            "the file is not a valid route table; the last good one stays (invalid_route_file)"
        ),
    },
)
async def reload_routes(request: Request, principal: Operator) -> RouteTableView:
    live = _routes(request)
    live.reload_file(force=True)
    if live.last_error is not None:
        raise APIError(422, "invalid_route_file", live.last_error)
    await live.refresh_runtime()
    return await get_routes(request, principal)


class AdapterLoad(BaseModel):
    """`POST /agent/adapters`: load a LoRA adapter into a pool and route runs to it."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._-]+$", description="served name"
    )
    path: str = Field(
        min_length=1, description="the adapter's folder, as the model servers (and this "
        "gateway, which checks it) see it"
    )  # fmt: skip
    pool: str = Field(description="the pool (of the route file) whose servers load it")
    routes: list[str] = Field(
        default_factory=list,
        description="routes to point at it, as domain/formulation/module (* for any), e.g. "
        "maths/onetime/planner; an existing route with the same key is replaced",
    )
    replace: bool = Field(
        default=False, description="load new weights under a name the servers already serve"
    )
    sampling: Sampling | None = None

    @field_validator("routes")
    @classmethod
    def _route_keys(cls, keys: list[str]) -> list[str]:
        for key in keys:
            if key.count("/") != 2:
                raise ValueError(
                    f"route {key!r} is not domain/formulation/module (e.g. maths/onetime/planner)"
                )
        return keys


class AdapterLoaded(BaseModel):
    name: str
    pool: str
    servers: list[str] = Field(description="the replicas that loaded (or unloaded) it")
    routes: list[str] = Field(description="the routes that now send (or no longer send) runs to it")


@router.post(
    "/adapters",
    response_model=AdapterLoaded,
    summary="Load a LoRA adapter into the model servers of a pool and route runs to it",
    responses={
        401: UNAUTHORIZED,
        403: NOT_AN_OPERATOR,
        409: _error("the name is taken on a replica (adapter_name_taken), or not_routed"),
        422: _error(
            "invalid request, unknown pool or route, or the adapter refused: not found, "
            "another base model, rank above max_lora_rank, a replica refused to load it",
            RequestErrorBody,
        ),
        503: _error("a model server of the pool cannot be reached (model_server_unavailable)"),
    },
)
async def load_adapter(body: AdapterLoad, request: Request, principal: Operator) -> AdapterLoaded:
    live = _routes(request)
    pool = live.table.pools.get(body.pool)
    if pool is None:
        raise APIError(
            422,
            "unknown_pool",
            f"no pool {body.pool!r} in {live.table.source}; the pools are "
            f"{', '.join(sorted(live.table.pools))}",
        )
    try:
        specs = [
            RouteSpec(
                domain=d,
                formulation=f,
                module=m,
                pool=body.pool,
                model=body.name,
                sampling=body.sampling,
                adapter=body.path,
            )  # fmt: skip
            for d, f, m in (key.split("/") for key in body.routes)
        ]
    except ValueError as exc:
        raise APIError(422, "invalid_route", str(exc)) from exc
    loader = AdapterLoader(request.app.state.http, request.app.state.settings.model_api_key)
    try:
        servers = await loader.load(body.name, body.path, pool, replace=body.replace)
    except AdapterError as exc:
        raise APIError(exc.status_code, exc.code, str(exc)) from exc
    for spec in specs:
        await live.add_runtime_route(spec)
    log.info("adapter %s loaded from %s into %s; routes %s", body.name, body.path, servers,
             body.routes)  # fmt: skip
    return AdapterLoaded(name=body.name, pool=body.pool, servers=servers, routes=body.routes)


@router.delete(
    "/adapters/{name}",
    response_model=AdapterLoaded,
    summary="Stop routing runs to an adapter and unload it from the servers of its pool",
    responses={
        401: UNAUTHORIZED,
        403: NOT_AN_OPERATOR,
        404: _error("no replica of the pool serves the adapter (adapter_not_loaded)"),
        409: _error("the route file routes runs to it (adapter_routed_by_file), or not_routed"),
        422: _error("unknown pool, invalid request, or a replica refused", RequestErrorBody),
        503: _error("a model server of the pool cannot be reached (model_server_unavailable)"),
    },
)
async def unload_adapter(name: str, pool: str, request: Request, principal: Operator) -> AdapterLoaded:  # fmt: skip
    live = _routes(request)
    pool_spec = live.table.pools.get(pool)
    if pool_spec is None:
        raise APIError(422, "unknown_pool", f"no pool {pool!r} in {live.table.source}")
    runtime = {id(r) for r in live.table.runtime_routes}  # a file route they replace is idle
    in_file = [
        r.key
        for r in live.table.routes
        if r.model == name and r.pool == pool and id(r) not in runtime
    ]
    if in_file:
        raise APIError(
            409,
            "adapter_routed_by_file",
            f"{live.table.source} routes {', '.join(in_file)} to {name!r}; change those routes "
            "first, then unload it",
        )
    removed = await live.remove_runtime_routes(name, pool)
    loader = AdapterLoader(request.app.state.http, request.app.state.settings.model_api_key)
    try:
        servers = await loader.unload(name, pool_spec)
    except AdapterError as exc:
        raise APIError(exc.status_code, exc.code, str(exc)) from exc
    return AdapterLoaded(name=name, pool=pool, servers=servers, routes=removed)
