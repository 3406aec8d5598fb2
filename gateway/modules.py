"""The agent's three modules as the gateway reaches them: model servers and the executor.

`CompletionModule` and `HTTPExecutor` adapt the HTTP services to the loop's interfaces
(`LanguageModule`, `ActionExecutor`). A `ModuleProvider` hands each run its modules:
`RemoteModules` pins a run to one replica of each model server (prompt-cache affinity),
`FixedModules` serves objects given by the caller (tests), `ScriptedModules` answers from a
recording (the test and benchmark harness of `LUMOS_MODULES=scripted:<path>`).
"""

from __future__ import annotations

import asyncio
import json
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx
from pydantic import BaseModel, Field, ValidationError

from gateway.route_table import ANY, MODULES, LiveRoutes, NoRouteError, ResolvedRoute
from gateway.settings import GatewaySettings
from lumos.agent import ActionExecutor, ExecutionRequest, Generation, LanguageModule
from lumos.circuit import CircuitBreakers
from lumos.domains import DOMAINS
from lumos.llm import CompletionClient
from lumos.readiness import NotReadyError, wait_ready
from lumos.scripted import ScriptedExecutor, ScriptedModel
from lumos.trace import ExecutedAction

# The Lumos harness decodes greedily, one line per turn, at most 512 new tokens.
MAX_TOKENS = 512
STOP = ("\n",)
READY_PROBE_S = 0.9


def _all_domains_alike() -> dict[str, Any]:
    """`domains()` of modules given in-process (tests, the scripted harness)."""
    return {"trained": sorted(DOMAINS), "untrained": [], "untrained_model": None}


class ExecutorError(Exception):
    """The executor service failed; the message names its URL and what it answered."""

    def __init__(self, message: str, url: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.status_code = status_code


class CompletionModule:
    """A planner or grounder served by an OpenAI-compatible completions server.

    `sampling` (a route's overrides) replaces the Lumos decoding's temperature and
    max_tokens and adds vLLM sampling parameters; the stop at the newline stays.
    """

    def __init__(self, client: CompletionClient, sampling: dict[str, Any] | None = None) -> None:
        self.client = client
        self.sampling = dict(sampling or {})

    async def generate(self, prompt: str, *, regex: str | None = None) -> Generation:
        extra = dict(self.sampling)
        max_tokens = int(extra.pop("max_tokens", MAX_TOKENS))
        temperature = float(extra.pop("temperature", 0.0))
        completion = await self.client.complete(
            prompt,
            max_tokens=max_tokens,
            stop=STOP,
            temperature=temperature,
            regex=regex,
            extra=extra or None,
        )
        return Generation(
            text=completion.text,
            prompt_tokens=completion.prompt_tokens,
            completion_tokens=completion.completion_tokens,
            latency_s=completion.latency_s,
            model=completion.model or self.client.model,
            finish_reason=completion.finish_reason,
        )


class Unrouted:
    """The module of a run whose route no longer exists: every call fails saying so."""

    def __init__(self, error: NoRouteError) -> None:
        self.error = error

    async def generate(self, prompt: str, *, regex: str | None = None) -> Generation:
        raise self.error


class HTTPExecutor:
    """The execution module behind `POST {base_url}/v1/execute`."""

    def __init__(
        self, base_url: str, *, client: httpx.AsyncClient, timeout_s: float = 60.0
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.url = f"{self.base_url}/v1/execute"
        self.client = client
        self.timeout_s = timeout_s

    @staticmethod
    def request_body(request: ExecutionRequest) -> dict[str, Any]:
        return {
            "domain": request.domain,
            "actions": [
                {"outputs": list(a.outputs), "name": a.name, "args": a.args}
                for a in request.actions
            ],
            "variables": request.variables,
            "task": request.task,
            "subgoals": list(request.subgoals),
            "run_id": request.run_id,
        }

    async def execute(self, request: ExecutionRequest) -> list[ExecutedAction]:
        try:
            response = await self.client.post(
                self.url, json=self.request_body(request), timeout=self.timeout_s
            )
        except httpx.TimeoutException as exc:
            raise ExecutorError(
                f"{self.url} did not answer within {self.timeout_s:g} s ({type(exc).__name__})",
                self.url,
            ) from exc
        except httpx.TransportError as exc:
            raise ExecutorError(
                f"cannot reach {self.url}: {exc or type(exc).__name__}; is the executor running?",
                self.url,
            ) from exc
        if response.status_code != 200:
            raise ExecutorError(
                f"{self.url} answered {response.status_code}: {_error_text(response)}",
                self.url,
                response.status_code,
            )
        try:
            results = response.json()["results"]
            return [ExecutedAction.model_validate(r) for r in results]
        except (ValueError, KeyError, TypeError, ValidationError) as exc:
            raise ExecutorError(
                f"{self.url} answered 200 but not with {{results: [...]}}: {response.text[:300]!r}",
                self.url,
                response.status_code,
            ) from exc


def _error_text(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:500] or response.reason_phrase
    if isinstance(body, dict) and "detail" in body:
        detail = body["detail"]
        return detail if isinstance(detail, str) else json.dumps(detail)[:500]
    return response.text.strip()[:500]


def replica_index(run_id: str, replicas: int) -> int:
    """The replica every call of `run_id` goes to; stable across processes and restarts."""
    return zlib.crc32(run_id.encode()) % replicas


@dataclass(frozen=True)
class RunModules:
    planner: LanguageModule
    grounder: LanguageModule
    executor: ActionExecutor
    # served model names ({"planner": ..., "grounder": ...}) where the modules are remote
    models: dict[str, str] | None = None


@dataclass(frozen=True)
class ComponentCheck:
    """One dependency's readiness, as `/readyz` reports it."""

    status: str  # "ok" or "down"
    detail: str = ""
    latency_s: float = 0.0

    def as_json(self) -> dict[str, Any]:
        return {"status": self.status, "detail": self.detail, "latency_s": round(self.latency_s, 4)}


class ModuleProvider(Protocol):
    def for_run(
        self,
        run_id: str,
        completed_steps: int,
        formulation: str = "iterative",
        domain: str | None = None,
        routes: Mapping[str, Any] | None = None,
    ) -> RunModules:
        """The modules of one run of `formulation` in `domain`, resumed after
        `completed_steps` steps; `routes` are the ones recorded on the run, if any."""
        ...

    def route_run(self, domain: str, formulation: str) -> dict[str, Any] | None:
        """The routes a new run takes (recorded on it), None where modules are not routed;
        `NoRouteError` when the route table has none for it."""
        ...

    def domains(self) -> dict[str, Any]:
        """`/readyz`'s `domains`: which domains run on trained modules (`trained`), which on
        the untrained fallback (`untrained`, served by `untrained_model`)."""
        ...

    async def check(self) -> dict[str, ComponentCheck]:
        """Readiness of planner, grounder and executor."""
        ...

    async def aclose(self) -> None: ...


class RemoteModules:
    """Model servers and the executor over HTTP, with one shared `httpx.AsyncClient`.

    Which pool and served model answer each module of a run is the route table's answer
    (`gateway/route_table.py`), fixed when the run is submitted and recorded on it.
    """

    def __init__(
        self,
        settings: GatewaySettings,
        client: httpx.AsyncClient,
        routes: LiveRoutes | None = None,
    ) -> None:
        self.settings = settings
        self.client = client
        self.routes = routes if routes is not None else LiveRoutes(settings)
        # One breaker per model server, shared by every run's clients (lumos/circuit.py).
        self.breakers = CircuitBreakers()
        self.executor = HTTPExecutor(
            settings.executor_url, client=client, timeout_s=settings.module_timeout_s
        )

    def _module(self, route: ResolvedRoute, run_id: str) -> CompletionModule:
        s = self.settings
        url = route.urls[replica_index(run_id, len(route.urls))]  # affinity within the pool
        client = CompletionClient(
            url,
            route.model,
            client=self.client,
            timeout_s=s.module_timeout_s,
            max_retries=s.module_max_retries,
            deadline_s=s.run_deadline_s,
            api_key=s.model_api_key,
            regex_field=s.regex_field,
            breaker=self.breakers.get(url),
        )
        return CompletionModule(client, route.sampling)

    def route_run(self, domain: str, formulation: str) -> dict[str, Any]:
        routes = self.routes.table.resolve_run(domain, formulation)
        return {module: route.as_json() for module, route in routes.items()}

    def for_run(
        self,
        run_id: str,
        completed_steps: int,
        formulation: str = "iterative",
        domain: str | None = None,
        routes: Mapping[str, Any] | None = None,
    ) -> RunModules:
        table = self.routes.table
        modules: dict[str, LanguageModule] = {}
        models: dict[str, str] = {}
        for module in MODULES:
            try:
                if routes is not None and module in routes:
                    route = ResolvedRoute.from_json(routes[module])
                else:  # a run stored before routes were recorded, or no domain (tests)
                    route = table.resolve(domain, formulation, module)
            except NoRouteError as exc:
                modules[module] = Unrouted(exc)
                continue
            modules[module] = self._module(route, run_id)
            models[module] = route.model
        return RunModules(
            planner=modules["planner"],
            grounder=modules["grounder"],
            executor=self.executor,
            models=models,
        )

    def domains(self) -> dict[str, Any]:
        return self.routes.table.domain_report()

    async def check(self) -> dict[str, ComponentCheck]:
        """Every route: each replica of its pool answers and serves the route's model."""
        table = self.routes.table
        urls = sorted({u for pool in table.pools.values() for u in pool.urls})
        probes = await asyncio.gather(*(self._probe(u, "/v1/models") for u in urls))
        served = dict(zip(urls, probes, strict=True))
        by_module: dict[str, list[tuple[str, ComponentCheck]]] = {m: [] for m in MODULES}
        for spec in table.routes:
            route = table.pin(spec)
            check = self._route_check(route, served)
            for module in MODULES if spec.module == ANY else (spec.module,):
                by_module[module].append((f"{spec.key} -> {spec.model}", check))
        executor, _ = await self._probe(self.settings.executor_url, "/readyz")
        out = {m: self._summary(m, checks) for m, checks in by_module.items()}
        out["executor"] = executor
        return out

    def _route_check(
        self, route: ResolvedRoute, served: dict[str, tuple[ComponentCheck, tuple[str, ...]]]
    ) -> ComponentCheck:
        problems = []
        latency = 0.0
        for url in route.urls:
            check, models = served[url]
            latency = max(latency, check.latency_s)
            if check.status != "ok":
                problems.append(check.detail)
            elif route.model not in models:
                problems.append(
                    f"{url} does not serve model {route.model!r} (it serves "
                    f"{', '.join(models) or 'none'})"
                )
        if problems:
            return ComponentCheck("down", "; ".join(problems), latency)
        return ComponentCheck("ok", f"{len(route.urls)} replica(s) serve {route.model!r}", latency)

    def _summary(self, module: str, checks: list[tuple[str, ComponentCheck]]) -> ComponentCheck:
        latency = max((c.latency_s for _, c in checks), default=0.0)
        if not checks:
            return ComponentCheck("down", f"no route has a {module}", latency)
        down = [(key, c) for key, c in checks if c.status != "ok"]
        if down:
            fix = (
                "fix the pool or the model name in the route file"
                if self.routes.path is not None
                else "set LUMOS_PLANNER_MODEL / LUMOS_GROUNDER_MODEL (and the *_ONETIME ones, "
                "LUMOS_UNTRAINED_MODEL) to its served names"
            )
            return ComponentCheck(
                "down",
                f"{len(down)}/{len(checks)} routes down: "
                + "; ".join(f"route {key}: {c.detail}" for key, c in down)
                + f"; {fix}",
                latency,
            )
        routes = ", ".join(key for key, _ in checks)
        return ComponentCheck("ok", f"{len(checks)} route(s) up: {routes}", latency)

    async def _probe(self, url: str, path: str) -> tuple[ComponentCheck, tuple[str, ...]]:
        started = time.perf_counter()
        try:
            report = await wait_ready(
                url, READY_PROBE_S, self.client, (path,), request_timeout_s=READY_PROBE_S
            )
        except NotReadyError as exc:
            return ComponentCheck("down", str(exc), time.perf_counter() - started), ()
        return ComponentCheck("ok", url, time.perf_counter() - started), report.models

    async def aclose(self) -> None:
        return None  # the shared client belongs to the app


class FixedModules:
    """The same planner, grounder and executor objects for every run (injected in tests)."""

    def __init__(
        self, planner: LanguageModule, grounder: LanguageModule, executor: ActionExecutor
    ) -> None:
        self.modules = RunModules(planner, grounder, executor)

    def for_run(
        self,
        run_id: str,
        completed_steps: int,
        formulation: str = "iterative",
        domain: str | None = None,
        routes: Mapping[str, Any] | None = None,
    ) -> RunModules:
        return self.modules

    def route_run(self, domain: str, formulation: str) -> dict[str, Any] | None:
        return None

    def domains(self) -> dict[str, Any]:
        return _all_domains_alike()

    async def check(self) -> dict[str, ComponentCheck]:
        ok = ComponentCheck("ok", "in-process module given to create_app")
        return {"planner": ok, "grounder": ok, "executor": ok}

    async def aclose(self) -> None:
        return None


class ScriptedSpec(BaseModel):
    """A replay-style recording (`lumos replay` input; other keys are ignored)."""

    planner_outputs: list[str]
    grounder_outputs: list[str]
    tool_results: dict[str, Any] = Field(default_factory=dict)
    delay_s: float = Field(default=0.0, ge=0, description="sleep before every module call")


class _Delayed:
    """Sleeps `delay_s` before each call: a stand-in for a model's or tool's latency."""

    def __init__(self, inner: Any, delay_s: float) -> None:
        self.inner = inner
        self.delay_s = delay_s

    async def generate(self, prompt: str, *, regex: str | None = None) -> Generation:
        started = time.perf_counter()
        await asyncio.sleep(self.delay_s)
        gen: Generation = await self.inner.generate(prompt, regex=regex)
        return Generation(
            gen.text, gen.prompt_tokens, gen.completion_tokens, time.perf_counter() - started
        )

    async def execute(self, request: ExecutionRequest) -> list[ExecutedAction]:
        await asyncio.sleep(self.delay_s)
        result: list[ExecutedAction] = await self.inner.execute(request)
        return result


class ScriptedModules:
    """Test and benchmark harness: every run answered from one recording.

    One planner and one grounder output per step: a run resumed after `completed_steps`
    steps skips that many outputs of each, so a worker that picks up a dead worker's run
    continues the recording where the run stopped.
    """

    def __init__(self, spec: ScriptedSpec, source: str) -> None:
        self.spec = spec
        self.source = source

    @classmethod
    def from_setting(cls, modules: str) -> ScriptedModules:
        path = Path(modules.removeprefix("scripted:"))
        try:
            spec = ScriptedSpec.model_validate_json(path.read_text())
        except FileNotFoundError as exc:
            raise ValueError(f"LUMOS_MODULES={modules}: no such file {path}") from exc
        except ValidationError as exc:
            raise ValueError(
                f"LUMOS_MODULES={modules}: {path} is not a replay recording (expected "
                f'{{"planner_outputs": [...], "grounder_outputs": [...], "tool_results": {{}}, '
                f'"delay_s": 0}}): {exc}'
            ) from exc
        return cls(spec, str(path))

    def for_run(
        self,
        run_id: str,
        completed_steps: int,
        formulation: str = "iterative",
        domain: str | None = None,
        routes: Mapping[str, Any] | None = None,
    ) -> RunModules:
        s = self.spec
        return RunModules(
            planner=_Delayed(
                ScriptedModel("planner", s.planner_outputs[completed_steps:]), s.delay_s
            ),
            grounder=_Delayed(
                ScriptedModel("grounder", s.grounder_outputs[completed_steps:]), s.delay_s
            ),
            executor=_Delayed(ScriptedExecutor(s.tool_results), s.delay_s),
        )

    def route_run(self, domain: str, formulation: str) -> dict[str, Any] | None:
        return None

    def domains(self) -> dict[str, Any]:
        return _all_domains_alike()

    async def check(self) -> dict[str, ComponentCheck]:
        ok = ComponentCheck("ok", f"scripted from {self.source} (test harness)")
        return {"planner": ok, "grounder": ok, "executor": ok}

    async def aclose(self) -> None:
        return None
