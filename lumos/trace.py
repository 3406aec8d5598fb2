"""What a run is made of: its completed steps and the events it emits.

A `Step` is one plan -> ground -> execute iteration. Prompts are rendered from the list of
completed steps, so a run can be resumed from its stored events alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from lumos.actions import Action, ActionResult


class Formulation(StrEnum):
    ITERATIVE = "iterative"
    ONETIME = "onetime"


class ExecutedAction(BaseModel):
    """One executed action as it travels in traces and over HTTP."""

    model_config = ConfigDict(frozen=True)

    outputs: tuple[str, ...]
    name: str
    args: str
    values: tuple[Any, ...] = ()
    error: str | None = None
    elapsed_s: float = 0.0

    @classmethod
    def from_result(cls, r: ActionResult) -> ExecutedAction:
        return cls(
            outputs=r.action.outputs,
            name=r.action.name,
            args=r.action.args,
            values=r.values,
            error=r.error,
            elapsed_s=r.elapsed_s,
        )

    @property
    def action(self) -> Action:
        return Action(self.outputs, self.name, self.args)

    def lumos_line(self) -> str:
        """The action as the original Lumos harness logs it after execution.

        ``R2 = Calculator(R1*2) = 18``; several outputs join their values with ``", "``;
        an action that produced nothing is logged bare (``R2 = Calculator(R1*2)``).
        """
        head = self.action.format()
        if self.error is not None or not self.values:
            return head
        return head + " = " + ", ".join(_as_text(v) for v in self.values)

    def bindings(self) -> dict[str, Any]:
        if self.error is not None:
            return {}
        return dict(zip(self.outputs, self.values, strict=False))


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


class Step(BaseModel):
    """One completed iteration of the loop (or the single pass of Lumos-O)."""

    index: int = Field(ge=1, description="1-based subgoal number")
    subgoal: str = Field(description="planner output for this step, stripped")
    grounding: str = Field(description="grounder output for this step, stripped")
    executed: list[ExecutedAction] = Field(default_factory=list)

    def bindings(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for e in self.executed:
            out.update(e.bindings())
        return out


def variables_of(steps: Sequence[Step]) -> dict[str, Any]:
    """All variables bound so far, later bindings overriding earlier ones."""
    out: dict[str, Any] = {}
    for s in steps:
        out.update(s.bindings())
    return out


# "resumed": written by the serving side when another worker takes a run over (its
# attempt, the previous worker, the step it resumes from); the loop never emits it.
EventType = Literal["started", "subgoal", "actions", "results", "final", "error", "resumed"]


class RunEvent(BaseModel):
    """One thing that happened in a run, in the order it happened.

    `step` is the 1-based step the event belongs to (0 for run-level events).
    """

    type: EventType
    step: int = 0
    data: dict[str, Any] = Field(default_factory=dict)
