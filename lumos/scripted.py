"""Scripted modules: a planner, grounder and executor that answer from a recording.

They run the real loop without any model or tool, for `lumos replay`, for tests
of the loop itself and as the fast model of the orchestration benchmarks. They are
stand-ins for debugging and measurement, never a serving path.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from lumos.agent import ExecutionRequest, Generation
from lumos.trace import ExecutedAction


class ScriptExhaustedError(RuntimeError):
    """The loop asked a scripted module for more outputs than were recorded."""


class ScriptedModel:
    """Returns recorded completions in order and remembers every prompt it was sent."""

    def __init__(self, name: str, outputs: Iterable[str]) -> None:
        self.name = name
        self.outputs = list(outputs)
        self.prompts: list[str] = []
        self.regexes: list[str | None] = []

    async def generate(self, prompt: str, *, regex: str | None = None) -> Generation:
        self.prompts.append(prompt)
        self.regexes.append(regex)
        n = len(self.prompts)
        if n > len(self.outputs):
            raise ScriptExhaustedError(
                f"the {self.name} was called {n} times but only {len(self.outputs)} "
                f"outputs were recorded; add more to {self.name}_outputs"
            )
        return Generation(text=self.outputs[n - 1])


class ScriptedExecutor:
    """Answers each action with the recorded value of its result variable(s)."""

    def __init__(self, tool_results: Mapping[str, Any]) -> None:
        self.tool_results = dict(tool_results)
        self.requests: list[ExecutionRequest] = []

    async def execute(self, request: ExecutionRequest) -> list[ExecutedAction]:
        self.requests.append(request)
        out: list[ExecutedAction] = []
        for action in request.actions:
            missing = [v for v in action.outputs if v not in self.tool_results]
            if missing:
                out.append(
                    ExecutedAction(
                        outputs=action.outputs,
                        name=action.name,
                        args=action.args,
                        error=f"no recorded result for {', '.join(missing)}",
                    )
                )
                continue
            out.append(
                ExecutedAction(
                    outputs=action.outputs,
                    name=action.name,
                    args=action.args,
                    values=tuple(self.tool_results[v] for v in action.outputs),
                )
            )
        return out
