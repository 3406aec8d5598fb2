"""Routes: which model server pool and served model plan or ground a run, by its domain
(or dataset), formulation and module.

A route table is read from one YAML or TOML file (`LUMOS_ROUTES_FILE`, `${VAR:-default}`
expanded from the environment) or, without one, built from the single-pool settings
(`LUMOS_PLANNER_URLS`, `LUMOS_PLANNER_MODEL`, ...), so a deployment that sets no file
behaves as before. Of the routes that match a run, the most
specific wins: a dataset (`gsm8k`) before its domain (`maths`) before any domain (`*`), then
a formulation before `*`, then a module before `*`.

Adapters loaded at run time (`gateway/adapters.py`) add routes on top of the file's; they
live in Redis so that every gateway replica serves the same table.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import time
import tomllib
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from lumos.domains import DOMAINS, UnknownDomainError, resolve_domain
from lumos.trace import Formulation

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from gateway.settings import GatewaySettings

log = logging.getLogger("gateway.routes")

ANY = "*"
MODULES = ("planner", "grounder")
FORMULATIONS = tuple(f.value for f in Formulation)
# Redis hash of the routes added at run time: route key -> RouteSpec JSON.
RUNTIME_ROUTES_KEY = "lumos:routes:runtime"
SETTINGS_POOLS = {"planner": "planner", "grounder": "grounder"}


class RouteFileError(ValueError):
    """A route file that cannot be served; the message names the file and the problem."""


class NoRouteError(LookupError):
    """No route matches a run; `key` is the missing route (`domain/formulation/module`)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


class Pool(BaseModel):
    """Replicas of one model server: every call of a run goes to the same replica."""

    model_config = ConfigDict(extra="forbid")

    urls: list[str] = Field(min_length=1, description="base URLs, one per replica")
    max_lora_rank: int | None = Field(
        default=None, ge=1, description="the servers' --max-lora-rank (adapter checks)"
    )

    @field_validator("urls")
    @classmethod
    def _base_urls(cls, urls: list[str]) -> list[str]:
        out = []
        for url in urls:
            url = url.strip().rstrip("/")
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"{url!r} is not a base URL; write it like http://planner:8000")
            out.append(url)
        if len(set(out)) != len(out):
            raise ValueError(f"a replica is listed twice: {out}")
        return out


class Sampling(BaseModel):
    """Overrides of the Lumos decoding (greedy, at most 512 tokens) for one route."""

    model_config = ConfigDict(extra="forbid")

    temperature: float | None = Field(default=None, ge=0)
    top_p: float | None = Field(default=None, gt=0, le=1)
    top_k: int | None = None
    min_p: float | None = Field(default=None, ge=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1)
    repetition_penalty: float | None = Field(default=None, gt=0)
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    seed: int | None = None

    def overrides(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class RouteSpec(BaseModel):
    """One route as written in the file: what it matches and where it sends the calls."""

    model_config = ConfigDict(extra="forbid")

    domain: str = Field(default=ANY, description="a domain, a dataset, or * for any")
    formulation: str = Field(default=ANY, description="iterative, onetime, or * for any")
    module: str = Field(default=ANY, description="planner, grounder, or * for both")
    pool: str = Field(description="a pool of this file")
    model: str = Field(min_length=1, description="served model (or adapter) name")
    sampling: Sampling | None = None
    trained: bool = Field(
        default=True,
        description="false: the model was not trained for this domain (it runs with the "
        "domain's prompts; /readyz lists such domains as untrained)",
    )
    adapter: str | None = Field(
        default=None, description="the adapter's folder, for routes added by an adapter load"
    )

    @field_validator("domain")
    @classmethod
    def _known_domain(cls, value: str) -> str:
        value = value.strip()
        if value != ANY:
            try:
                resolve_domain(value)
            except UnknownDomainError as exc:
                raise ValueError(f"{exc}; or * for any domain") from None
        return value

    @field_validator("formulation")
    @classmethod
    def _known_formulation(cls, value: str) -> str:
        if value not in (*FORMULATIONS, ANY):
            raise ValueError(f"unknown formulation {value!r}; expected iterative, onetime or *")
        return value

    @field_validator("module")
    @classmethod
    def _known_module(cls, value: str) -> str:
        if value not in (*MODULES, ANY):
            raise ValueError(f"unknown module {value!r}; expected planner, grounder or *")
        return value

    @property
    def key(self) -> str:
        return f"{self.domain}/{self.formulation}/{self.module}"

    def specificity(self, domain: str) -> tuple[int, int, int]:
        exact = 2 if domain not in DOMAINS else 1  # a dataset named by itself
        return (
            0 if self.domain == ANY else exact if self.domain == domain else 1,
            0 if self.formulation == ANY else 1,
            0 if self.module == ANY else 1,
        )

    def matches(self, domain: str, formulation: str, module: str) -> bool:
        if self.formulation not in (ANY, formulation) or self.module not in (ANY, module):
            return False
        if self.domain in (ANY, domain):
            return True
        return domain != ANY and self.domain == resolve_domain(domain).name


class RouteFile(BaseModel):
    """The whole file: named pools, then routes into them."""

    model_config = ConfigDict(extra="forbid")

    pools: dict[str, Pool] = Field(min_length=1)
    routes: list[RouteSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> RouteFile:
        seen: dict[str, int] = {}
        for i, route in enumerate(self.routes):
            if route.pool not in self.pools:
                raise ValueError(
                    f"route {route.key} (routes[{i}]) names pool {route.pool!r}; the pools "
                    f"are {', '.join(sorted(self.pools))}"
                )
            if route.key in seen:
                raise ValueError(
                    f"routes[{seen[route.key]}] and routes[{i}] both match {route.key}; keep one"
                )
            seen[route.key] = i
        return self


@dataclass(frozen=True)
class ResolvedRoute:
    """What one module of one run uses; stored on the run so that it keeps it."""

    key: str  # the route that matched, e.g. maths/*/planner
    pool: str
    urls: tuple[str, ...]
    model: str
    sampling: dict[str, Any] = field(default_factory=dict)
    trained: bool = True

    def as_json(self) -> dict[str, Any]:
        return {
            "route": self.key,
            "pool": self.pool,
            "urls": list(self.urls),
            "model": self.model,
            "sampling": self.sampling,
            "trained": self.trained,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ResolvedRoute:
        return cls(
            key=str(data["route"]),
            pool=str(data["pool"]),
            urls=tuple(data["urls"]),
            model=str(data["model"]),
            sampling=dict(data.get("sampling") or {}),
            trained=bool(data.get("trained", True)),
        )


ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_environment(text: str, env: Mapping[str, str] | None = None) -> str:
    """`${VAR}` and `${VAR:-default}` replaced from the environment, so one file serves
    hosts whose addresses differ (`make run`'s port, a compose project's host names)."""
    env = os.environ if env is None else env

    def value(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env and env[name] != "":
            return env[name]
        if default is None:
            raise ValueError(f"${{{name}}} is not set; set it or write ${{{name}:-default}}")
        return default

    return ENV_REFERENCE.sub(value, text)


def _parse(path: Path) -> Any:
    text = expand_environment(path.read_text())
    if path.suffix == ".toml":
        return tomllib.loads(text)
    if path.suffix in (".yaml", ".yml"):
        import yaml

        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ValueError(str(exc)) from None
    raise RouteFileError(f"{path}: a route file ends in .yaml, .yml or .toml")


class RouteTable:
    """An immutable table: pools, routes, and where they came from."""

    def __init__(
        self,
        pools: Mapping[str, Pool],
        routes: Iterable[RouteSpec],
        source: str,
        runtime: Iterable[RouteSpec] = (),
    ) -> None:
        self.pools = dict(pools)
        self.source = source
        self.file_routes = list(routes)
        self.runtime_routes: list[RouteSpec] = []
        self.ignored: list[str] = []
        by_key = {r.key: r for r in self.file_routes}
        for route in runtime:
            if route.pool not in self.pools:
                self.ignored.append(
                    f"{route.key} -> {route.model}: pool {route.pool!r} is not in {source}"
                )
                continue
            by_key[route.key] = route
            self.runtime_routes.append(route)
        self.routes = list(by_key.values())

    @classmethod
    def from_file(cls, path: str | Path) -> RouteTable:
        path = Path(path)
        try:
            raw = _parse(path)
        except FileNotFoundError:
            raise RouteFileError(
                f"no route file at {path}; write one (README: routes) or unset LUMOS_ROUTES_FILE"
            ) from None
        except RouteFileError:
            raise
        except (OSError, ValueError) as exc:  # syntax errors of either format are ValueErrors
            raise RouteFileError(f"{path} cannot be read: {exc}") from None
        try:
            parsed = RouteFile.model_validate(raw)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'file'}: {e['msg']}" for e in exc.errors()
            )
            raise RouteFileError(
                f"{path} is not a route table ({{pools: {{name: {{urls: [...]}}}}, routes: "
                f"[{{domain, formulation, module, pool, model}}]}}): {problems}"
            ) from None
        return cls(parsed.pools, parsed.routes, str(path))

    @classmethod
    def from_settings(cls, s: GatewaySettings) -> RouteTable:
        """Today's single-pool behaviour: one planner pool, one grounder pool."""
        pools = {
            "planner": Pool(urls=list(s.planner_urls)),
            "grounder": Pool(urls=list(s.grounder_urls)),
        }
        routes = [
            RouteSpec(module="planner", pool="planner", model=s.planner_model),
            RouteSpec(module="grounder", pool="grounder", model=s.grounder_model),
        ]
        if s.planner_model_onetime:
            routes.append(
                RouteSpec(
                    formulation="onetime",
                    module="planner",
                    pool="planner",
                    model=s.planner_model_onetime,
                )
            )
        if s.grounder_model_onetime:
            routes.append(
                RouteSpec(
                    formulation="onetime",
                    module="grounder",
                    pool="grounder",
                    model=s.grounder_model_onetime,
                )
            )
        if s.untrained_model:
            for domain in sorted(DOMAINS):
                if s.is_trained(domain):
                    continue
                for module in MODULES:
                    routes.append(
                        RouteSpec(
                            domain=domain,
                            module=module,
                            pool=SETTINGS_POOLS[module],
                            model=s.untrained_model,
                            trained=False,
                        )
                    )
        return cls(pools, routes, "settings (LUMOS_PLANNER_*, LUMOS_GROUNDER_*)")

    def with_runtime(self, runtime: Iterable[RouteSpec]) -> RouteTable:
        return RouteTable(self.pools, self.file_routes, self.source, runtime)

    def resolve(self, domain: str | None, formulation: str, module: str) -> ResolvedRoute:
        """The route of one module of a run, or `NoRouteError` naming the missing route.

        `domain` None: only routes of any domain (`*`) match.
        """
        wanted = f"{domain or ANY}/{formulation}/{module}"
        if domain is None:
            matching = [
                r for r in self.routes if r.domain == ANY and r.matches(ANY, formulation, module)
            ]
        else:
            resolve_domain(domain)  # UnknownDomainError for a name no route could match
            matching = [r for r in self.routes if r.matches(domain, formulation, module)]
        if not matching:
            of = f"domain {resolve_domain(domain).name} or *" if domain else "domain *"
            raise NoRouteError(
                wanted,
                f"no route for {wanted} (domain/formulation/module) in {self.source}; its "
                f"routes are {', '.join(r.key for r in self.routes)}; add one (a route of "
                f"{of}) or send another domain",
            )
        return self.pin(max(matching, key=lambda r: r.specificity(domain or ANY)))

    def pin(self, route: RouteSpec) -> ResolvedRoute:
        """`route` with its pool's replicas, as a run records it."""
        sampling = route.sampling.overrides() if route.sampling else {}
        urls = tuple(self.pools[route.pool].urls)
        return ResolvedRoute(route.key, route.pool, urls, route.model, sampling, route.trained)

    def resolve_run(self, domain: str, formulation: str) -> dict[str, ResolvedRoute]:
        return {m: self.resolve(domain, formulation, m) for m in MODULES}

    def pool_models(self) -> dict[str, list[str]]:
        """Pool -> the served model names its routes use, sorted."""
        out: dict[str, set[str]] = {}
        for route in self.routes:
            out.setdefault(route.pool, set()).add(route.model)
        return {pool: sorted(models) for pool, models in sorted(out.items())}

    def domain_report(self) -> dict[str, Any]:
        """`/readyz`'s `domains`: domains on trained modules, on untrained ones, unrouted."""
        trained: list[str] = []
        untrained: list[str] = []
        untrained_models: set[str] = set()
        for domain in sorted(DOMAINS):
            routes = []
            for formulation in FORMULATIONS:
                for module in MODULES:
                    try:
                        routes.append(self.resolve(domain, formulation, module))
                    except NoRouteError:
                        pass
            if not routes:
                continue
            if all(r.trained for r in routes):
                trained.append(domain)
            else:
                untrained.append(domain)
                untrained_models.update(r.model for r in routes if not r.trained)
        return {
            "trained": trained,
            "untrained": untrained,
            "untrained_model": untrained_models.pop() if len(untrained_models) == 1 else None,
        }

    def as_json(self) -> dict[str, Any]:
        runtime = {id(r) for r in self.runtime_routes}
        return {
            "source": self.source,
            "pools": {
                name: pool.model_dump(exclude_none=True) for name, pool in self.pools.items()
            },
            "routes": [
                {**r.model_dump(exclude_none=True), "key": r.key, "runtime": id(r) in runtime}
                for r in self.routes
            ],
            "ignored": self.ignored,
        }


class LiveRoutes:
    """The table a gateway serves now: the file (reloaded when it changes or on SIGHUP)
    plus the routes added at run time (read from Redis).

    A file that stops parsing leaves the last good table in place; `last_error` says why.
    """

    def __init__(self, settings: GatewaySettings, redis: aioredis.Redis | None = None) -> None:
        self.settings = settings
        self.redis = redis
        self.path = Path(settings.routes_file) if settings.routes_file else None
        self.last_error: str | None = None
        self._stamp: tuple[int, int] | None = None
        self._runtime: list[RouteSpec] = []
        self._base = self._read() if self.path else RouteTable.from_settings(settings)
        self.table = self._base
        self.loaded_at = time.time()

    def _read(self) -> RouteTable:
        assert self.path is not None
        self._stamp = self._stat()
        return RouteTable.from_file(self.path)

    def _stat(self) -> tuple[int, int] | None:
        assert self.path is not None
        try:
            st = os.stat(self.path)  # a ConfigMap update swaps a symlink: stat follows it
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def reload_file(self, force: bool = False) -> bool:
        """Re-read the file if it changed (or `force`); True when the table changed."""
        if self.path is None or (not force and self._stat() == self._stamp):
            return False
        try:
            base = self._read()
        except RouteFileError as exc:
            if str(exc) != self.last_error:
                log.error("route file not reloaded, the last good table stays: %s", exc)
            self.last_error = str(exc)
            return False
        self.last_error = None
        self._base = base
        self._rebuild()
        log.info("routes reloaded from %s: %d routes", self.path, len(self.table.routes))
        return True

    def _rebuild(self) -> None:
        self.table = self._base.with_runtime(self._runtime)
        self.loaded_at = time.time()

    async def refresh_runtime(self) -> None:
        """Read the run-time routes from Redis (every replica sees the same ones)."""
        if self.redis is None:
            return
        raw = await self.redis.hgetall(RUNTIME_ROUTES_KEY)
        runtime = []
        for key, value in sorted(raw.items()):
            try:
                runtime.append(RouteSpec.model_validate_json(value))
            except ValidationError as exc:
                log.error("run-time route %r in Redis is not a route: %s", key, exc)
        if [r.model_dump() for r in runtime] != [r.model_dump() for r in self._runtime]:
            self._runtime = runtime
            self._rebuild()

    async def add_runtime_route(self, route: RouteSpec) -> None:
        if self.redis is None:
            raise RuntimeError("run-time routes need Redis")
        if route.pool not in self._base.pools:
            raise NoRouteError(
                route.key,
                f"pool {route.pool!r} is not in {self._base.source}; the pools are "
                f"{', '.join(sorted(self._base.pools))}",
            )
        await self.redis.hset(RUNTIME_ROUTES_KEY, route.key, route.model_dump_json())
        await self.refresh_runtime()

    async def runtime_routes_to(self, model: str, pool: str) -> bool:
        """Whether Redis still holds a run-time route to `model` in `pool` (read now)."""
        if self.redis is None:
            return False
        for value in (await self.redis.hgetall(RUNTIME_ROUTES_KEY)).values():
            route = json.loads(value)
            if route.get("model") == model and route.get("pool") == pool:
                return True
        return False

    async def remove_runtime_routes(self, model: str, pool: str) -> list[str]:
        """Drop the run-time routes to `model` in `pool`; the keys removed."""
        if self.redis is None:
            return []
        raw = await self.redis.hgetall(RUNTIME_ROUTES_KEY)
        gone = []
        for key, value in raw.items():
            route = json.loads(value)
            if route.get("model") == model and route.get("pool") == pool:
                gone.append(key.decode() if isinstance(key, bytes) else str(key))
        if gone:
            await self.redis.hdel(RUNTIME_ROUTES_KEY, *gone)
        await self.refresh_runtime()
        return sorted(gone)

    async def watch(
        self, interval_s: float = 2.0, after_each: Callable[[], Awaitable[object]] | None = None
    ) -> None:
        """Poll the file and Redis every `interval_s` (a background task of the app), then
        run `after_each` (the app restores adapters a restarted model server lost)."""
        while True:
            self.reload_file()
            try:
                await self.refresh_runtime()
                if after_each is not None:
                    await after_each()
            except Exception as exc:  # Redis or a model server away: keep what we have
                log.warning("route watcher: %r; trying again in %g s", exc, interval_s)
            await asyncio.sleep(interval_s)


class RouteWatcher:
    """The app's background reloads of `routes`: polling, and SIGHUP where it can be had
    (the main thread of a Unix process)."""

    def __init__(
        self,
        routes: LiveRoutes | None,
        interval_s: float,
        after_each: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        self.routes = routes
        self.interval_s = interval_s
        self.after_each = after_each
        self._task: asyncio.Task[None] | None = None
        self._sighup = False

    def start(self) -> None:
        if self.routes is None:
            return
        routes = self.routes
        self._task = asyncio.create_task(
            routes.watch(self.interval_s, self.after_each), name="route watcher"
        )
        try:
            asyncio.get_running_loop().add_signal_handler(
                signal.SIGHUP, lambda: routes.reload_file(force=True)
            )
            self._sighup = True
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
            log.info("no SIGHUP handler here; the route file is still polled")

    async def stop(self) -> None:
        if self._sighup:
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
