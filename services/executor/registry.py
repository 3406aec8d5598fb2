"""Which tools each domain has, built from the executor's settings.

The action lists are the original Lumos grounding instructions'. One action name can mean
different tools in different domains: maths' Calculator computes (sympy), complex QA's
Calculator is answered by QA over the formula's operands, as the original
eval/hotpotqa/run_eval.py did. Tools of the complex-QA, web and WebShop modules are built
through their module's ``build_tools(settings) -> Iterable[Tool]`` when it has one; a module
that is missing or fails to build leaves its tools out with a warning, so the service
still starts, and executing such an action says why it is unavailable.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lumos.domains import DOMAINS

from .sandbox import DockerSandbox, ProcessSandbox, Sandbox, SandboxLimits, SandboxUnavailable
from .settings import ExecutorSettings
from .tools.base import Tool
from .tools.code import Code
from .tools.maths import MATH_TOOLS, Offload

log = logging.getLogger(__name__)

# each domain's action list, in the order its grounding instruction names them
DOMAIN_TOOLS: dict[str, tuple[str, ...]] = {name: d.tool_names for name, d in DOMAINS.items()}

# the other tool modules, in the order they are built
EXTERNAL_MODULES = ("knowledge", "retrieve", "qa", "web.tools", "webshop")


@dataclass
class ToolRegistry:
    tools: dict[str, dict[str, Tool]] = field(default_factory=dict)
    unavailable: dict[str, dict[str, str]] = field(default_factory=dict)
    sandbox: Sandbox | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def domains(self) -> tuple[str, ...]:
        return tuple(DOMAIN_TOOLS)

    def get(self, domain: str, name: str) -> Tool | None:
        return self.tools.get(domain, {}).get(name)

    def add(self, domain: str, tool: Tool) -> None:
        self.tools.setdefault(domain, {})[tool.name] = tool
        self.unavailable.get(domain, {}).pop(tool.name, None)

    def domain_tools(self, domain: str) -> list[Tool]:
        """The domain's available tools in its action-list order."""
        have = self.tools.get(domain, {})
        return [have[n] for n in DOMAIN_TOOLS.get(domain, ()) if n in have]

    def unavailable_reason(self, domain: str, name: str) -> str:
        expected = DOMAIN_TOOLS.get(domain, ())
        if name not in expected:
            return (
                f"unknown action {name!r} for domain {domain!r}; "
                f"expected one of {', '.join(expected)}"
            )
        why = self.unavailable.get(domain, {}).get(name, "it was not configured")
        return f"action {name!r} is not available in this executor: {why}"

    async def aclose(self) -> None:
        seen: set[int] = set()
        for tools in self.tools.values():
            for tool in tools.values():
                for obj in (tool, *vars(tool).values()):
                    closer = getattr(obj, "aclose", None)
                    if callable(closer) and id(obj) not in seen:
                        seen.add(id(obj))
                        try:
                            await closer()
                        except Exception as exc:
                            log.warning("closing %s failed: %s", type(obj).__name__, exc)


def sandbox_limits(settings: ExecutorSettings) -> SandboxLimits:
    return SandboxLimits(
        timeout_s=settings.code_timeout_s,
        cpu_s=settings.code_cpu_s,
        memory_mb=settings.code_memory_mb,
        file_size_mb=settings.code_file_size_mb,
        max_processes=settings.code_max_processes,
        max_open_files=settings.code_max_open_files,
        output_bytes=settings.code_output_bytes,
        run_as_uid=settings.code_run_as_uid,
    )


def build_sandbox(settings: ExecutorSettings) -> Sandbox:
    """The configured Code sandbox; raises `SandboxUnavailable` with what to do instead."""
    limits = sandbox_limits(settings)
    if settings.code_backend == "docker":
        return DockerSandbox(
            limits,
            image=settings.code_docker_image,
            cpus=settings.code_docker_cpus,
            concurrency=settings.code_concurrency,
        )
    return ProcessSandbox(limits, concurrency=settings.code_concurrency)


def _fallback_builders() -> dict[str, Callable[[Any, ExecutorSettings], list[Tool]]]:
    """How to build the other modules' tools when they define no `build_tools`."""

    def knowledge(m: Any, s: ExecutorSettings) -> list[Tool]:
        if s.knowledge_backend == "wikipedia":
            backend = m.WikipediaBackend(s.wikipedia_api_url)
        elif s.corpus_path is not None:
            backend = m.OfflineCorpus(s.corpus_path)
        else:
            raise RuntimeError(
                "the offline knowledge backend needs LUMOS_EXECUTOR_CORPUS_PATH "
                "(or set LUMOS_EXECUTOR_KNOWLEDGE_BACKEND=wikipedia)"
            )
        return [m.KnowledgeQuery(backend)]

    def retrieve(m: Any, s: ExecutorSettings) -> list[Tool]:
        dense = str(s.dense_model_path) if s.dense_model_path else None
        return [m.ParagraphRetrieve(dense_model_path=dense)]

    def qa(m: Any, s: ExecutorSettings) -> list[Tool]:
        answerer = m.make_answerer(s.qa_base_url, s.qa_model)
        return [m.QA(answerer), m.QACalculator(answerer)]

    def web(m: Any, s: ExecutorSettings) -> list[Tool]:
        sessions = m.BrowserSessions(s.browser_path) if Path(s.browser_path).exists() else None
        return [cls(sessions) for cls in (m.WebClick, m.WebType, m.WebSelect)]

    def webshop(m: Any, s: ExecutorSettings) -> list[Tool]:
        if not s.webshop_url:
            raise RuntimeError("WebShop tools need LUMOS_EXECUTOR_WEBSHOP_URL")
        env = m.WebShopEnvironment(s.webshop_url)
        return [cls(env) for cls in (m.Search, m.FeatureRetrieve, m.Pick, m.Click)]

    return {
        "knowledge": knowledge,
        "retrieve": retrieve,
        "qa": qa,
        "web.tools": web,
        "webshop": webshop,
    }


def _external_tools(module_name: str, settings: ExecutorSettings) -> Iterable[Tool]:
    module = importlib.import_module(f"services.executor.tools.{module_name}")
    build = getattr(module, "build_tools", None)
    if callable(build):
        return list(build(settings))
    return _fallback_builders()[module_name](module, settings)


def _module_actions(module_name: str) -> dict[str, tuple[str, ...]]:
    """domain -> actions a module is expected to provide (for 'unavailable' reasons)."""
    provides: dict[str, dict[str, tuple[str, ...]]] = {
        "knowledge": {"complex_qa": ("KnowledgeQuery",)},
        "retrieve": {"complex_qa": ("ParagraphRetrieve",)},
        "qa": {"complex_qa": ("QA", "Calculator")},
        "web.tools": {"web_agent": ("CLICK", "TYPE", "SELECT")},
        "webshop": {"webshop": ("Search", "FeatureRetrieve", "Pick", "Click")},
    }
    return provides[module_name]


def build_registry(
    settings: ExecutorSettings,
    *,
    offload: Offload | None = None,
    sandbox: Sandbox | None = None,
    external: bool = True,
) -> ToolRegistry:
    """All domains' tools. `offload` runs the maths tools' sympy work (a `ComputePool`'s
    ``call``); `sandbox` overrides the Code sandbox built from settings."""
    registry = ToolRegistry(
        unavailable={
            d: dict.fromkeys(names, "it was not configured") for d, names in DOMAIN_TOOLS.items()
        }
    )
    for cls in MATH_TOOLS:
        math_tool = cls(offload)
        _apply_timeout(math_tool, settings)
        registry.add("maths", math_tool)

    if sandbox is None:
        try:
            sandbox = build_sandbox(settings)
        except SandboxUnavailable as exc:
            log.warning("Code tool unavailable: %s", exc)
            for domain in ("maths", "complex_qa"):
                registry.unavailable[domain]["Code"] = str(exc)
    if sandbox is not None:
        registry.sandbox = sandbox
        note = getattr(sandbox, "note", None)
        if note:
            registry.notes.append(f"code sandbox ({sandbox.name}): {note}")
        code = Code(
            sandbox, sandbox_limits(settings), max_source_chars=settings.code_max_source_chars
        )
        _apply_timeout(code, settings)
        for domain in ("maths", "complex_qa"):
            registry.add(domain, code)

    if external:
        for module_name in EXTERNAL_MODULES:
            expected = _module_actions(module_name)
            try:
                tools = list(_external_tools(module_name, settings))
            except Exception as exc:
                why = f"services.executor.tools.{module_name}: {type(exc).__name__}: {exc}"
                log.warning("tools left out: %s", why)
                for domain, names in expected.items():
                    for name in names:
                        registry.unavailable[domain][name] = why
                continue
            for tool in tools:
                _apply_timeout(tool, settings)
                domains = getattr(tool, "domains", None) or [
                    d for d, names in expected.items() if tool.name in names
                ]
                for domain in domains:
                    if registry.get(domain, tool.name) is None:
                        registry.add(domain, tool)
    return registry


def _apply_timeout(tool: Tool, settings: ExecutorSettings) -> None:
    timeout = settings.tool_timeouts.get(tool.name) or settings.tool_timeout_s
    if timeout:
        tool.timeout_s = timeout
