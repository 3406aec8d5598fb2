"""Request and response bodies of the gateway's HTTP API (its OpenAPI schema)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from gateway.attempts import counted_events
from gateway.runs import RunFeedback, RunMode, RunRecord, RunStatus, StoredEvent
from lumos.trace import Formulation


class RunRequest(BaseModel):
    """`POST /agent/run`."""

    model_config = ConfigDict(extra="forbid")

    task: str = Field(description="The task (question, instruction) to solve.")
    domain: str = Field(description="Task family: complex_qa, maths, web_agent or webshop.")
    formulation: Formulation = Field(
        default=Formulation.ITERATIVE,
        description="iterative (plan, ground, execute, repeat) or onetime (all at once).",
    )
    max_steps: int | None = Field(
        default=None,
        ge=1,
        description="At most this many steps (default and cap: LUMOS_MAX_STEPS).",
    )
    deadline_s: float | None = Field(
        default=None,
        gt=0,
        description="Fail the run after this many seconds (cap: LUMOS_RUN_DEADLINE_S).",
    )
    environment: str | None = Field(
        default=None,
        max_length=100_000,
        description="Environment text for web domains (page, state).",
    )
    stream: bool = Field(
        default=False, description="Answer with Server-Sent Events, one per event."
    )
    background: bool = Field(default=False, description="Answer 202 at once with the run's URL.")

    @field_validator("task", "domain", "environment")
    @classmethod
    def _encodable(cls, value: str | None) -> str | None:
        # JSON may carry lone surrogates (\ud800) that no UTF-8 store can hold: refuse them
        # here, where the caller learns what to fix, instead of failing inside Redis.
        if value is not None:
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise ValueError(
                    f"contains an unpaired surrogate (U+{ord(value[exc.start]):04X}) at "
                    f"character {exc.start}; send valid Unicode text"
                ) from None
        return value


class EventView(BaseModel):
    """One event of a run; `id` is its Redis stream id (the SSE id, for Last-Event-ID)."""

    id: str
    run_id: str
    type: str
    step: int
    data: dict[str, Any]
    attempt: int = Field(description="which start of the run wrote it (1 unless resumed)")

    @classmethod
    def of(cls, run_id: str, stored: StoredEvent) -> EventView:
        return cls.model_validate({"run_id": run_id, **stored.as_json()})


class RunError(BaseModel):
    reason: str
    message: str


class RunAccepted(BaseModel):
    """The 202 answer of a background run."""

    id: str
    status: RunStatus
    url: str
    events_url: str
    cancel_url: str


class RunView(BaseModel):
    """A run as `GET /agent/runs/{id}` shows it."""

    id: str
    status: RunStatus
    mode: RunMode
    domain: str
    formulation: Formulation
    task: str
    max_steps: int
    deadline_s: float
    answer: str | None
    error: RunError | None
    steps: int = Field(description="completed steps")
    attempts: int
    worker: str | None
    created_at: str
    started_at: str | None
    finished_at: str | None
    timings: dict[str, Any] = Field(description="seconds, calls and tokens per module")
    routes: dict[str, Any] | None = Field(
        default=None,
        description="planner and grounder: the route each takes (route, pool, urls, model, "
        "sampling), fixed when the run was submitted; null where the modules are not routed",
    )
    url: str
    events_url: str
    feedback: RunFeedback | None = Field(
        default=None, description="the latest POST /agent/runs/{id}/feedback, if any"
    )
    trace: list[EventView] = Field(
        description="the run's events as they counted: without those of steps a later "
        "attempt redid (see superseded); GET events_url replays every event written"
    )
    superseded: list[EventView] = Field(
        default_factory=list,
        description="events of a step that a worker started and another one redid after "
        "taking the run over (a `resumed` event in the trace says when); usually empty",
    )


def iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()


def run_urls(run_id: str) -> dict[str, str]:
    url = f"/agent/runs/{run_id}"
    return {"url": url, "events_url": f"{url}/events", "cancel_url": f"{url}/cancel"}


def run_view(record: RunRecord, events: list[StoredEvent], timings: dict[str, Any]) -> RunView:
    error = None
    if record.error is not None:
        error = RunError(reason=record.error_reason or "error", message=record.error)
    steps = record.steps
    if steps is None:
        steps = sum(1 for s in events if s.event.type == "results")
    urls = run_urls(record.id)
    counted, superseded = counted_events(events)
    return RunView(
        id=record.id,
        status=record.status,
        mode=record.mode,
        domain=record.domain,
        formulation=record.formulation,
        task=record.task,
        max_steps=record.max_steps,
        deadline_s=record.deadline_s,
        answer=record.answer,
        error=error,
        steps=steps,
        attempts=record.attempts,
        worker=record.worker,
        created_at=iso(record.created_at) or "",
        started_at=iso(record.started_at),
        finished_at=iso(record.finished_at),
        timings=timings,
        routes=record.routes,
        url=urls["url"],
        events_url=urls["events_url"],
        feedback=record.feedback,
        trace=[EventView.of(record.id, s) for s in counted],
        superseded=[EventView.of(record.id, s) for s in superseded],
    )


class ComponentReadiness(BaseModel):
    status: Literal["ok", "down"]
    detail: str = Field(description="what was checked, or why it is down")
    latency_s: float


class WorkerReadiness(BaseModel):
    name: str
    busy: int = Field(description="runs this process executes now")
    slots: int = Field(description="LUMOS_WORKER_CONCURRENCY")


class DomainModules(BaseModel):
    """Which domains' runs use modules trained for them (LUMOS_TRAINED_DOMAINS)."""

    trained: list[str] = Field(description="domains whose runs use the trained planner/grounder")
    untrained: list[str] = Field(description="domains the configured models were not trained for")
    untrained_model: str | None = Field(
        description="served model (LUMOS_UNTRAINED_MODEL) that plans and grounds runs of the "
        "untrained domains with their prompts; null: the trained models serve them too"
    )


class Readiness(BaseModel):
    """`GET /readyz`."""

    status: Literal["ready", "not_ready"]
    checks: dict[str, ComponentReadiness] = Field(
        description="redis, planner, grounder, executor: each checked now"
    )
    worker: WorkerReadiness | None = Field(description="null: this process serves the API only")
    domains: DomainModules
