"""What the gateway knows about a run: its record (the Redis hash) and its stored events.

Pure data and the functions that derive timings from events; Redis I/O is in `store.py`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from lumos.trace import Formulation, RunEvent

RunMode = Literal["sync", "stream", "background"]


class RunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED)


TERMINAL_EVENTS = ("final", "error")


class FeedbackRequest(BaseModel):
    """`POST /agent/runs/{id}/feedback`: what a user says about a finished run."""

    model_config = ConfigDict(extra="forbid")

    score: float = Field(ge=0.0, le=1.0, description="0 (wrong, useless) to 1 (right, useful)")
    corrected_answer: str | None = Field(
        default=None,
        max_length=10_000,
        description="the answer the run should have given; a run whose answer differs is not "
        "exported as training data",
    )
    note: str | None = Field(default=None, max_length=10_000, description="free text")


class RunFeedback(FeedbackRequest):
    """Feedback as stored with the run (the latest given replaces earlier ones)."""

    given_at: float = Field(description="when the gateway stored it (Unix time)")


class RunRecord(BaseModel):
    """The hash `lumos:run:{id}`: everything about a run but its events."""

    id: str
    status: RunStatus = RunStatus.QUEUED
    mode: RunMode = "sync"
    domain: str
    formulation: Formulation = Formulation.ITERATIVE
    task: str
    max_steps: int
    deadline_s: float
    environment: str | None = None
    owner: str = Field(description="id of the API key that submitted the run (or anonymous)")
    answer: str | None = None
    error: str | None = None
    error_reason: str | None = None
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    worker: str | None = Field(default=None, description="consumer name of the last worker")
    attempts: int = Field(default=0, description="workers that started the run so far")
    steps: int | None = None
    timings: dict[str, Any] | None = None
    cancel_requested: bool = False
    idempotency_key: str | None = None
    request_sha256: str = ""
    routes: dict[str, Any] | None = Field(
        default=None,
        description="module -> the route it takes (route, pool, urls, model, sampling), fixed "
        "at submission: a route table reloaded later does not move the run",
    )
    feedback: RunFeedback | None = None

    def to_hash(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for key, value in self.model_dump(mode="json").items():
            if value is None:
                continue
            if isinstance(value, bool):
                out[key] = "1" if value else "0"
            elif isinstance(value, dict):
                out[key] = json.dumps(value)
            else:
                out[key] = str(value)
        return out

    @classmethod
    def from_hash(cls, raw: dict[str, str]) -> RunRecord:
        data: dict[str, Any] = dict(raw)
        for key in ("timings", "feedback", "routes"):
            if key in data:
                data[key] = json.loads(data[key])
        return cls.model_validate(data)


@dataclass(frozen=True)
class StoredEvent:
    """One entry of `lumos:run:{id}:events`: the event, its stream id and its attempt."""

    id: str
    event: RunEvent
    attempt: int

    @classmethod
    def from_entry(cls, entry_id: str, fields: dict[str, str]) -> StoredEvent:
        attempt = fields.get("attempt", "0")
        return cls(
            id=entry_id,
            event=RunEvent(
                type=fields["type"],  # type: ignore[arg-type]
                step=int(fields.get("step", "0")),
                data=json.loads(fields.get("data", "{}")),
            ),
            attempt=int(attempt) if attempt.isdigit() else 0,
        )

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "attempt": self.attempt, **self.event.model_dump(mode="json")}


def timings_from_events(events: Sequence[RunEvent]) -> dict[str, Any]:
    """Time and tokens spent per module, summed over a run's events."""
    out: dict[str, Any] = {
        "planner_s": 0.0,
        "grounder_s": 0.0,
        "executor_s": 0.0,
        "planner_calls": 0,
        "grounder_calls": 0,
        "executor_calls": 0,
        "prompt_tokens": 0,
        "completion_tokens": 0,
    }
    module_of = {"subgoal": "planner", "actions": "grounder", "results": "executor"}
    for ev in events:
        module = module_of.get(ev.type)
        if ev.type == "final" and "final_action" in ev.data:
            module = "executor"
        if module is None:
            continue
        out[f"{module}_s"] += float(ev.data.get("latency_s", 0.0))
        out[f"{module}_calls"] += 1
        out["prompt_tokens"] += int(ev.data.get("prompt_tokens") or 0)
        out["completion_tokens"] += int(ev.data.get("completion_tokens") or 0)
    for key in ("planner_s", "grounder_s", "executor_s"):
        out[key] = round(out[key], 6)
    return out


def run_timings(record: RunRecord, events: Sequence[RunEvent]) -> dict[str, Any]:
    """Per-module timings plus the run's own: time queued, running, in total."""
    out = timings_from_events(events)
    if record.started_at is not None:
        out["queued_s"] = round(record.started_at - record.created_at, 6)
        if record.finished_at is not None:
            out["run_s"] = round(record.finished_at - record.started_at, 6)
    if record.finished_at is not None:
        out["total_s"] = round(record.finished_at - record.created_at, 6)
    return out
