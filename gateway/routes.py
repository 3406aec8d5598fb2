"""`/agent/*`: submit runs, read them, follow their events, cancel them.

Every run, whatever its mode, is stored in Redis and queued; some replica's worker executes
it. A sync request waits for the run's last event, a stream request relays its events as
they are appended, a background request answers at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sse_starlette import EventSourceResponse, ServerSentEvent

from gateway.auth import authenticate
from gateway.errors import APIError
from gateway.metrics import GatewayMetrics
from gateway.route_table import NoRouteError
from gateway.runs import TERMINAL_EVENTS, RunMode, RunRecord, StoredEvent, run_timings
from gateway.schemas import EventView, RunAccepted, RunRequest, RunView, run_urls, run_view
from gateway.settings import GatewaySettings
from gateway.store import QueueFull, RunStore
from lumos.domains import resolve_domain

router = APIRouter(prefix="/agent", tags=["runs"])

Principal = Annotated[str, Depends(authenticate)]
STREAM_ID = re.compile(r"^\d+-\d+$")
IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
CANCEL_WAIT_S = 5.0
SSE_PING_S = 15
QUEUE_FULL_RETRY_S = 5


class ErrorBody(BaseModel):
    """Every error the gateway answers (gateway/errors.py): what happened, and what to send
    instead."""

    detail: str = Field(description="what happened and what to send instead")
    code: str = Field(description="machine-readable: run_not_found, too_many_runs, ...")


class RequestProblem(BaseModel):
    """One problem pydantic found in the request."""

    loc: list[str | int] = Field(description="where: body, then the field")
    msg: str
    type: str


class RequestErrorBody(ErrorBody):
    """A request that cannot be read (`code` invalid_json or invalid_request) adds the
    problems found and an example of what to send; other 400/422s are an `ErrorBody`."""

    errors: list[RequestProblem] | None = Field(
        default=None, description="invalid_request only: every problem found"
    )
    expected: str | None = Field(
        default=None, description="invalid_json and invalid_request: an example request body"
    )


def _error(description: str, model: Any = ErrorBody) -> dict[str, Any]:
    return {"model": model, "description": description}


SSE_CONTENT: dict[str, Any] = {"text/event-stream": {"schema": {"type": "string"}}}
# What every /agent/runs/{run_id} route can answer besides its own statuses.
RUN_ERRORS: dict[int | str, dict[str, Any]] = {
    401: _error("missing or invalid API key (`WWW-Authenticate: Bearer`)"),
    404: _error("no such run: never submitted, expired, or another API key's (run_not_found)"),
    422: _error("invalid request (invalid_request)", RequestErrorBody),
    503: _error("the run store (Redis) is unavailable; retry after `Retry-After` seconds"),
}


def _store(request: Request) -> RunStore:
    store: RunStore = request.app.state.store
    return store


def _settings(request: Request) -> GatewaySettings:
    settings: GatewaySettings = request.app.state.settings
    return settings


def _metrics(request: Request) -> GatewayMetrics:
    metrics: GatewayMetrics = request.app.state.metrics
    return metrics


def _not_found(run_id: str) -> APIError:
    return APIError(
        404,
        "run_not_found",
        f"no run {run_id!r} (runs expire LUMOS_RUN_TTL_S after they finish, and each API key "
        "sees only its own); submit one with POST /agent/run",
    )


def _validated(body: RunRequest, settings: GatewaySettings) -> tuple[str, int, float]:
    """The stripped task, max_steps and deadline of a request, or a 4xx saying why not."""
    task = body.task.strip()
    if not task:
        raise APIError(422, "empty_task", 'task is empty; send the question to solve as "task"')
    if len(task) > settings.max_task_chars:
        raise APIError(
            413,
            "task_too_long",
            f"task is {len(task)} characters; this gateway accepts at most "
            f"{settings.max_task_chars} (LUMOS_MAX_TASK_CHARS); send a shorter task",
        )
    try:
        resolve_domain(body.domain)
    except ValueError as exc:
        raise APIError(422, "unknown_domain", str(exc)) from exc
    max_steps = body.max_steps or settings.max_steps
    if max_steps > settings.max_steps:
        raise APIError(
            422,
            "max_steps_too_large",
            f"max_steps {max_steps} is above this gateway's cap of {settings.max_steps} "
            f"(LUMOS_MAX_STEPS); send at most {settings.max_steps}",
        )
    deadline_s = body.deadline_s or settings.run_deadline_s
    if deadline_s > settings.run_deadline_s:
        raise APIError(
            422,
            "deadline_too_large",
            f"deadline_s {deadline_s:g} is above this gateway's cap of {settings.run_deadline_s:g} "
            f"(LUMOS_RUN_DEADLINE_S); send at most {settings.run_deadline_s:g}",
        )
    if body.stream and body.background:
        raise APIError(
            422,
            "conflicting_modes",
            "stream and background are both true; send one of them (a background run's "
            "events can be followed at its events_url)",
        )
    return task, max_steps, deadline_s


def _routes_of(request: Request, body: RunRequest) -> dict[str, Any] | None:
    """The routes the run takes (recorded on it), or 422 naming the missing route."""
    try:
        routes: dict[str, Any] | None = request.app.state.modules.route_run(
            body.domain, body.formulation.value
        )
    except NoRouteError as exc:
        raise APIError(422, "no_route", str(exc)) from exc
    return routes


def _fingerprint(body: RunRequest, task: str, max_steps: int, deadline_s: float) -> str:
    what = [task, body.domain, body.formulation.value, max_steps, deadline_s, body.environment]
    return hashlib.sha256(json.dumps(what).encode()).hexdigest()


@router.post(
    "/run",
    response_model=RunView,
    responses={
        200: {
            "description": "the finished run (sync), or its events as Server-Sent Events (stream)",
            "content": SSE_CONTENT,
        },
        202: {"model": RunAccepted, "description": "background run accepted"},
        400: _error(
            "body not valid JSON (invalid_json), invalid Idempotency-Key "
            "(invalid_idempotency_key), or a body that cannot be parsed at all (not UTF-8, "
            "nested too deep: invalid_body)",
            RequestErrorBody,
        ),
        401: RUN_ERRORS[401],
        409: _error("Idempotency-Key reused for a different request (idempotency_key_reused)"),
        413: _error("task or body too large (task_too_long, request_too_large)"),
        422: _error(
            "invalid request (invalid_request, empty_task, unknown_domain, no_route: no route "
            "for the run's domain, formulation and module, ...)",
            RequestErrorBody,
        ),
        429: _error(
            "too many unfinished runs for this API key (too_many_runs), or too many runs "
            "waiting for a worker in the whole deployment (queue_full); retry after "
            "`Retry-After` seconds"
        ),
        503: RUN_ERRORS[503],
        504: _error("sync run still not finished after its deadline (run_not_finished)"),
    },
    summary="Run an agent on a task",
)
async def submit_run(
    body: RunRequest,
    request: Request,
    principal: Principal,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> object:
    """Sync (default): the answer and the trace once the run is done. `stream`: Server-Sent
    Events, one per run event (started, subgoal, actions, results, final, error).
    `background`: 202 with the run's URL. The same `Idempotency-Key` returns the same run."""
    store = _store(request)
    accepted = await accept_run(request, principal, body, idempotency_key)
    run_id, headers = accepted.id, accepted.headers
    if accepted.mode == "background":
        response = RunAccepted(id=run_id, status=accepted.record.status, **run_urls(run_id))
        return JSONResponse(response.model_dump(mode="json"), 202, headers=headers)
    if accepted.mode == "stream":
        return EventSourceResponse(_relay(store, run_id, None), headers=headers, ping=SSE_PING_S)
    record = await wait_finished(request, store, run_id, accepted.wait_s)
    if not record.status.finished:
        raise APIError(
            504,
            "run_not_finished",
            f"run {run_id} is still {record.status.value} after {accepted.wait_s:g} s; follow "
            f"it with GET {run_urls(run_id)['url']}",
            headers=headers,
        )
    view = await _view(store, record)
    return JSONResponse(view.model_dump(mode="json"), headers=headers)


@dataclass(frozen=True)
class AcceptedRun:
    """A run `accept_run` stored (or found by its Idempotency-Key)."""

    id: str
    mode: RunMode
    record: RunRecord
    wait_s: float  # how long a sync caller waits for it to finish

    @property
    def headers(self) -> dict[str, str]:
        return {"Location": run_urls(self.id)["url"], "X-Run-Id": self.id}


async def accept_run(
    request: Request, principal: str, body: RunRequest, idempotency_key: str | None
) -> AcceptedRun:
    """Validate, admit and store a new run, or find the one its `Idempotency-Key` names:
    every entry point that starts runs (`/agent/run`, `/v1/chat/completions`) goes through
    here, so limits, idempotency and the submitted-runs metric are the same for all."""
    settings, store = _settings(request), _store(request)
    task, max_steps, deadline_s = _validated(body, settings)
    mode: RunMode = "stream" if body.stream else "background" if body.background else "sync"
    fingerprint = _fingerprint(body, task, max_steps, deadline_s)
    if idempotency_key is not None and not IDEMPOTENCY_KEY.match(idempotency_key):
        raise APIError(
            400,
            "invalid_idempotency_key",
            "Idempotency-Key must be 1-255 printable ASCII characters without spaces "
            "(a UUID is a good choice)",
        )

    run_id: str | None = None
    if idempotency_key is not None:
        run_id = await store.run_for_idempotency_key(principal, idempotency_key)
    if run_id is None:
        routes = _routes_of(request, body)
        new_id = uuid.uuid4().hex
        cap = settings.max_concurrent_runs_per_key
        if not await store.admit(principal, new_id, cap, deadline_s + 60.0):
            _metrics(request).runs_refused.labels("too_many_runs").inc()
            raise APIError(
                429,
                "too_many_runs",
                f"this API key already has {cap} unfinished runs, the cap "
                "(LUMOS_MAX_CONCURRENT_RUNS_PER_KEY); wait for one to finish or cancel one "
                "with POST /agent/runs/{id}/cancel, then retry",
                headers={"Retry-After": "1"},
            )
        record = RunRecord(
            routes=routes,
            id=new_id,
            mode=mode,
            domain=body.domain,
            formulation=body.formulation,
            task=task,
            max_steps=max_steps,
            deadline_s=deadline_s,
            environment=body.environment,
            owner=principal,
            created_at=time.time(),
            idempotency_key=idempotency_key,
            request_sha256=fingerprint,
        )
        try:
            run_id, created = await store.create(
                record,
                idempotency=idempotency_key,
                idempotency_ttl_s=settings.idempotency_ttl_s,
                max_waiting=settings.max_queued_runs,
            )
        except QueueFull as exc:
            await store.release(principal, new_id)
            _metrics(request).runs_refused.labels("queue_full").inc()
            raise APIError(
                429,
                "queue_full",
                f"{exc.waiting} runs already wait for a worker, this deployment's cap "
                f"(LUMOS_MAX_QUEUED_RUNS={settings.max_queued_runs}); the run was not stored: "
                "retry after `Retry-After` seconds",
                headers={"Retry-After": str(QUEUE_FULL_RETRY_S)},
            ) from None
        except BaseException:
            # A run that was never stored must not hold one of its key's run slots.
            await store.release(principal, new_id)
            raise
        if created:
            _metrics(request).runs_submitted.labels(mode).inc()
        else:  # the same key won a race a moment ago
            await store.release(principal, new_id)

    existing = await store.get(run_id)
    if existing is None:
        raise _not_found(run_id)
    if existing.request_sha256 != fingerprint:
        raise APIError(
            409,
            "idempotency_key_reused",
            f"Idempotency-Key {idempotency_key!r} was used for run {run_id} with a different "
            "request; send a new key for a new request",
        )
    wait_s = deadline_s + settings.claim_idle_ms / 1000 * settings.max_attempts + 60.0
    return AcceptedRun(run_id, mode, existing, wait_s)


async def wait_finished(request: Request, store: RunStore, run_id: str, wait_s: float) -> RunRecord:
    deadline = time.monotonic() + wait_s
    last = "0-0"
    record = await store.get(run_id)
    if record is None:
        raise _not_found(run_id)
    reread = False
    while True:
        # The run's hash is read again only when it can have changed status: a terminal
        # event arrived (it is written together with the finished status), or nothing
        # arrived for a second (a run ended some other way). Not after every step's events.
        if reread:
            record = await store.get(run_id)
            if record is None:
                raise _not_found(run_id)  # expired while we waited
        remaining = deadline - time.monotonic()
        if record.status.finished or remaining <= 0 or await request.is_disconnected():
            return record
        batch = await store.wait_events(run_id, last, int(min(1.0, remaining) * 1000) or 1)
        for stored in batch:
            last = stored.id
        reread = not batch or any(s.event.type in TERMINAL_EVENTS for s in batch)


async def _view(store: RunStore, record: RunRecord) -> RunView:
    events = await store.events(record.id)
    timings = record.timings or run_timings(record, [s.event for s in events])
    return run_view(record, events, timings)


async def run_events_until_end(
    store: RunStore, run_id: str, after: str | None
) -> AsyncIterator[StoredEvent]:
    """The run's stored events after `after`, then each new one, until its last event."""
    last = after or "0-0"
    while True:
        batch = await store.wait_events(run_id, last, 1000)
        for stored in batch:
            last = stored.id
            yield stored
            if stored.event.type in TERMINAL_EVENTS:
                return
        if not batch:
            record = await store.get(run_id)
            if record is None or record.status.finished:
                return  # the client already has the last event


async def _relay(store: RunStore, run_id: str, after: str | None) -> AsyncIterator[ServerSentEvent]:
    """The run's events after `after` as SSE, until its last event."""
    async for stored in run_events_until_end(store, run_id, after):
        yield ServerSentEvent(
            data=json.dumps(EventView.of(run_id, stored).model_dump(mode="json")),
            event=stored.event.type,
            id=stored.id,
        )


async def _owned(store: RunStore, run_id: str, principal: str) -> RunRecord:
    record = await store.get(run_id)
    if record is None or record.owner != principal:
        raise _not_found(run_id)
    return record


@router.get(
    "/runs/{run_id}",
    response_model=RunView,
    responses=RUN_ERRORS,
    summary="A run: status, answer, trace, timings",
)
async def get_run(run_id: str, request: Request, principal: Principal) -> RunView:
    store = _store(request)
    return await _view(store, await _owned(store, run_id, principal))


@router.get(
    "/runs/{run_id}/events",
    summary="A run's events as Server-Sent Events (resumable with Last-Event-ID)",
    response_class=EventSourceResponse,
    responses={
        200: {"description": "the run's events", "content": SSE_CONTENT},
        400: _error("Last-Event-ID is not an event id (invalid_last_event_id)"),
        **RUN_ERRORS,
    },
)
async def run_events(
    run_id: str,
    request: Request,
    principal: Principal,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> EventSourceResponse:
    """Every event of the run from the beginning, or after `Last-Event-ID` (the `id` of the
    last event received), then each new one as it happens; the stream ends after the run's
    final or error event."""
    store = _store(request)
    await _owned(store, run_id, principal)
    if last_event_id is not None and not STREAM_ID.match(last_event_id.strip()):
        raise APIError(
            400,
            "invalid_last_event_id",
            f"Last-Event-ID {last_event_id!r} is not an event id; send the id of the last event "
            "received (like 1732500000000-0), or no header to start from the first event",
        )
    after = last_event_id.strip() if last_event_id else None
    return EventSourceResponse(
        _relay(store, run_id, after), headers={"X-Run-Id": run_id}, ping=SSE_PING_S
    )


@router.post(
    "/runs/{run_id}/cancel",
    response_model=RunView,
    responses={
        200: {"description": "the run, cancelled"},
        202: {"model": RunView, "description": "the run, still stopping"},
        409: _error("the run already finished (run_finished)"),
        **RUN_ERRORS,
    },
    summary="Cancel a run",
)
async def cancel_run(run_id: str, request: Request, principal: Principal) -> object:
    """A queued run is cancelled at once; a running one stops at its worker's next check
    (within a fraction of a second): 200 with the cancelled run, or 202 while it stops."""
    store = _store(request)
    record = await _owned(store, run_id, principal)
    state = await store.request_cancel(run_id, f"cancelled by POST /agent/runs/{run_id}/cancel")
    if state == "missing":
        raise _not_found(run_id)
    if state == "cancelled_now":
        await store.release(record.owner, run_id)
    elif state != "cancelling":
        raise APIError(
            409, "run_finished", f"run {run_id} already {state}; there is nothing to cancel"
        )
    else:
        deadline = time.monotonic() + CANCEL_WAIT_S
        while time.monotonic() < deadline:
            current = await store.get(run_id)
            if current is None or current.status.finished:
                break
            await asyncio.sleep(0.05)
    current = await store.get(run_id)
    if current is None:
        raise _not_found(run_id)
    view = await _view(store, current)
    return JSONResponse(view.model_dump(mode="json"), 200 if current.status.finished else 202)
