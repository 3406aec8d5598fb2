"""One benchmark question through the gateway: ``POST /agent/run`` and what its answer says.

The reading of the response is tolerant on purpose (the gateway's schema may grow): the
events may sit under ``events`` or ``trace`` (or ``trace.events``), and each event is
``{"type", "step", "data"}`` or a flat ``{"type", ...}``.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from eval.metrics import WebStep
from lumos.prompts import is_stop

FAILED_STATUSES = frozenset({"failed", "error", "cancelled", "canceled", "timeout", "timed_out"})
WEB_OPS = frozenset({"CLICK", "TYPE", "SELECT"})
RETRY_STATUSES = frozenset({429, 502, 503, 504})
_SUBGOAL_RE = re.compile(r"Subgoal\s*\d+\s*:")


@dataclass
class RunOutcome:
    """What one run produced, as the eval needs it."""

    answer: str | None = None
    run_id: str | None = None
    status: str | None = None
    steps: int | None = None
    latency_s: float = 0.0
    error: str | None = None
    reward: float | None = None
    web_steps: list[WebStep] = field(default_factory=list)
    finished_by: str | None = None
    """What ended the run: ``planner`` (it stopped), ``max_steps``, ... (the final event's)."""
    groundings: int = 0
    """Grounder outputs seen (one per step), parsed or not."""
    parse_errors: int = 0
    """Groundings that were not a valid action list."""
    actions: int = 0
    """Actions the executor ran."""
    actions_failed: int = 0
    """Of those, the ones that came back with an error."""
    planned_steps: int | None = None
    """Subgoals the planner planned (`planned_steps`); None without events."""

    @property
    def failed(self) -> bool:
        return self.error is not None


def _events_of(body: dict[str, Any]) -> list[dict[str, Any]]:
    raw = body.get("events")
    if raw is None:
        trace = body.get("trace")
        raw = trace.get("events") if isinstance(trace, dict) else trace
    return [e for e in raw or [] if isinstance(e, dict)]


def _data_of(event: dict[str, Any]) -> dict[str, Any]:
    data = event.get("data")
    return data if isinstance(data, dict) else event


def _as_float(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _web_step(executed: dict[str, Any]) -> WebStep | None:
    op = str(executed.get("name", "")).upper()
    if op not in WEB_OPS:
        return None
    args = str(executed.get("args", ""))
    value = ""
    if op in ("TYPE", "SELECT") and ", TEXT:" in args:
        value = args[args.rfind(", TEXT:") + len(", TEXT:") :].strip()
    element = None
    values = executed.get("values") or []
    first = values[0] if values else None
    if isinstance(first, dict):
        for key in ("backend_node_id", "element_id", "id"):
            if first.get(key) is not None:
                element = str(first[key])
                break
        if not value and op in ("TYPE", "SELECT") and first.get("text") is not None:
            value = str(first["text"])
    return WebStep(element, op, value)


def planned_steps(events: list[dict[str, Any]], *, onetime: bool) -> int:
    """Subgoals the planner planned in a run.

    Iterative: one per step it planned before stopping (its stop subgoal, ``Yes, I will stop
    planning.``, is none; a step planned again after a resume counts once). Onetime: the
    ``Subgoal N:`` parts of the one plan, or 1 for a plan written without them.
    """
    subgoals = [(e.get("step"), _data_of(e)) for e in events if e.get("type") == "subgoal"]
    if onetime:
        plan = str(subgoals[-1][1].get("text") or "") if subgoals else ""
        return len(_SUBGOAL_RE.findall(plan)) or int(bool(plan.strip()))
    steps = {
        f"#{i}" if step is None else step
        for i, (step, data) in enumerate(subgoals)
        if not (data.get("stop") or is_stop(str(data.get("text") or "")))
    }
    return len(steps)


def parse_run(body: dict[str, Any], formulation: str | None = None) -> RunOutcome:
    """A gateway run response as a `RunOutcome` (latency is the caller's to set).

    The planned steps are counted as for a onetime run when `formulation`, the body's
    ``formulation`` or the final event's ``finished_by`` says ``onetime``.
    """
    events = _events_of(body)
    finals = [_data_of(e) for e in events if e.get("type") == "final"]
    final = finals[-1] if finals else {}
    errors = [_data_of(e) for e in events if e.get("type") == "error"]
    results = [_data_of(e) for e in events if e.get("type") == "results"]

    answer = body.get("answer")
    if answer is None:
        answer = final.get("answer")
    status = body.get("status")
    steps = final.get("steps")
    if steps is None:
        steps = len(results) if events else body.get("steps")

    error = None
    if status is not None and str(status).lower() in FAILED_STATUSES:
        error = _error_text(body.get("error")) or _error_text(errors[-1] if errors else None)
        error = error or f"run {status}"
    elif not finals and errors:
        # The run stopped on an error event without ever producing a final answer.
        error = _error_text(errors[-1])

    web_steps = []
    executed_all = [e for r in results for e in r.get("executed", []) if isinstance(e, dict)]
    for executed in executed_all:
        if (step := _web_step(executed)) is not None:
            web_steps.append(step)

    reward = _as_float(final.get("reward", body.get("reward")))
    if reward is None and executed_all:
        # WebShop: `Click(buy now)` returns the environment's reward as its value.
        last = executed_all[-1]
        values = last.get("values") or []
        if str(last.get("name", "")).lower() == "click" and values and not last.get("error"):
            reward = _as_float(values[0]) if isinstance(values[0], int | float) else None

    finished_by = final.get("finished_by")
    onetime = "onetime" in (formulation, body.get("formulation"), finished_by)
    return RunOutcome(
        answer=None if answer is None else str(answer),
        run_id=body.get("run_id") or body.get("id"),
        status=None if status is None else str(status),
        steps=int(steps) if steps is not None else None,
        error=error,
        reward=reward,
        web_steps=web_steps,
        finished_by=None if finished_by is None else str(finished_by),
        groundings=sum(1 for e in events if e.get("type") == "actions"),
        parse_errors=sum(1 for e in errors if e.get("reason") == "grounding_parse_error"),
        actions=len(executed_all),
        actions_failed=sum(1 for e in executed_all if e.get("error")),
        planned_steps=planned_steps(events, onetime=onetime) if events else None,
    )


def _error_text(error: Any) -> str | None:
    """An error as one line: ``{"reason", "message"}`` objects become ``reason: message``."""
    if error is None or error == "":
        return None
    if isinstance(error, dict):
        data = _data_of(error)
        reason, message = data.get("reason"), data.get("message")
        if reason or message:
            return ": ".join(str(part) for part in (reason, message) if part)
        return str(error)
    return str(error)


class TaskRunner(Protocol):
    """What the harness sends questions to: the agent (`AgentClient`) or a baseline."""

    async def run(
        self,
        task: str,
        *,
        domain: str,
        max_steps: int | None,
        question_id: str | None = None,
        environment: str | None = None,
    ) -> RunOutcome: ...


@dataclass(frozen=True)
class GatewayTarget:
    url: str
    api_key: str | None = None
    formulation: str = "iterative"
    timeout_s: float = 900.0
    """Wall-clock budget of one question, retries and waits included."""
    retries: int = 2
    """Retries of a run the gateway never reached or answered 502-504 (429 waits instead)."""


class AgentClient:
    """Runs tasks on one gateway through a shared `httpx.AsyncClient`.

    Every run carries an ``Idempotency-Key`` made of this client's random prefix and the
    question id, so a retry after a lost connection or a 504 re-attaches to the run already
    under way instead of starting a second one, while a later evaluation (a new client)
    starts fresh runs for the questions it retries.
    """

    def __init__(self, target: GatewayTarget, client: httpx.AsyncClient) -> None:
        self.target = target
        self._client = client
        self._key_prefix = uuid.uuid4().hex

    def idempotency_key(self, question_id: str) -> str:
        digest = hashlib.sha1(f"{self._key_prefix}:{question_id}".encode()).hexdigest()
        return f"lumos-eval-{digest}"

    async def run(
        self,
        task: str,
        *,
        domain: str,
        max_steps: int | None,
        question_id: str | None = None,
        environment: str | None = None,
    ) -> RunOutcome:
        body: dict[str, Any] = {
            "task": task,
            "domain": domain,
            "formulation": self.target.formulation,
        }
        if max_steps is not None:
            body["max_steps"] = max_steps
        if environment is not None:
            body["environment"] = environment
        headers = {"Idempotency-Key": self.idempotency_key(question_id or task)}
        if self.target.api_key:
            headers["Authorization"] = f"Bearer {self.target.api_key}"
        url = f"{self.target.url.rstrip('/')}/agent/run"
        started = time.perf_counter()
        outcome = await self._post(url, body, headers)
        outcome.latency_s = time.perf_counter() - started
        return outcome

    async def _post(self, url: str, body: dict[str, Any], headers: dict[str, str]) -> RunOutcome:
        deadline = time.monotonic() + self.target.timeout_s
        retries_left = self.target.retries
        delay = 1.0
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                resp = await self._client.post(url, json=body, headers=headers, timeout=remaining)
            except httpx.TimeoutException:
                break
            except httpx.TransportError as exc:
                if retries_left == 0:
                    return RunOutcome(error=f"gateway at {url} unreachable: {exc!r}")
                retries_left -= 1
                await asyncio.sleep(min(delay, remaining))
                delay *= 2
                continue
            busy = resp.status_code == 429  # the key's run cap: wait for a slot, however long
            if busy or (resp.status_code in RETRY_STATUSES and retries_left > 0):
                retries_left -= not busy
                retry_after = _as_float(resp.headers.get("retry-after"))
                await asyncio.sleep(
                    min(retry_after if retry_after is not None else delay, 30.0, remaining)
                )
                delay = min(delay * 2, 30.0)
                continue
            if resp.status_code >= 400:
                return RunOutcome(error=f"gateway answered {resp.status_code}: {resp.text[:300]}")
            try:
                payload = resp.json()
            except ValueError:
                return RunOutcome(error=f"gateway answered 200 with non-JSON: {resp.text[:200]}")
            if not isinstance(payload, dict):
                return RunOutcome(
                    error=f"gateway answered 200 with a JSON {type(payload).__name__}, not an object"
                )
            return parse_run(payload, self.target.formulation)
        return RunOutcome(error=f"no answer from {url} within {self.target.timeout_s:g}s")
