"""Background workers: execute runs from the shared Redis queue, resume abandoned ones.

Every gateway replica runs one `RunWorker` (a consumer of the group `workers`) with a
number of slots. A worker holds a lease on the queue entry of each run it executes, renewed
by a thread (gateway/lease.py) so that a slow worker keeps its runs; an entry idle for
`claim_idle_ms` belongs to a dead worker and is claimed by another, which rebuilds the
completed steps from the run's events and continues after them. Each start of a run is an
*attempt*; only the current attempt may append events (see `RunStore.append`), so a worker
that was presumed dead but wakes up cannot write into a run taken over by another. A
resumed attempt first appends a `resumed` event (its attempt, the previous worker, the step
it resumes from); the events of earlier attempts it redoes stay in the stream, and the run
view leaves them out of the trace (gateway/attempts.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from typing import Any

from redis.exceptions import RedisError

from gateway.attempts import resumed_event
from gateway.lease import LeaseKeeper, stall_limit_s
from gateway.metrics import GatewayMetrics
from gateway.modules import ModuleProvider
from gateway.runs import TERMINAL_EVENTS, RunRecord, RunStatus, run_timings
from gateway.settings import GatewaySettings
from gateway.store import RunStore
from lumos.agent import Agent, AgentConfig, steps_from_events
from lumos.trace import Formulation, RunEvent

log = logging.getLogger("gateway.worker")

CANCEL_POLL_S = 0.2
STOP_WAIT_S = 5.0
HOLD_MARGIN_S = 60.0


class AttemptLost(Exception):
    """Another worker took the run over; this attempt must stop without writing."""


class StopRequested(Exception):
    """The watcher decided the run stops (`cancelled` or `lost`)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class RunWorker:
    def __init__(
        self,
        store: RunStore,
        modules: ModuleProvider,
        metrics: GatewayMetrics,
        settings: GatewaySettings,
        name: str | None = None,
    ) -> None:
        self.store = store
        self.modules = modules
        self.metrics = metrics
        self.settings = settings
        self.name = name or worker_name()
        self._slots = asyncio.Semaphore(settings.worker_concurrency)
        self._loop_task: asyncio.Task[None] | None = None
        self._running: dict[asyncio.Task[None], str] = {}  # task -> queue entry id
        self._stopping = False
        self.leases = LeaseKeeper(
            settings.redis_url,
            self.name,
            heartbeat_s=settings.heartbeat_s,
            stall_s=stall_limit_s(settings.claim_idle_ms),
        )
        self._pulse_task: asyncio.Task[None] | None = None

    @property
    def busy(self) -> int:
        return len(self._running)

    def start(self) -> None:
        self.leases.start()
        self._pulse_task = asyncio.create_task(self._pulse(), name=f"pulse {self.name}")
        self._loop_task = asyncio.create_task(self._consume(), name=f"worker {self.name}")

    async def _pulse(self) -> None:
        """Tell the lease thread that this event loop still runs (however slowly)."""
        while True:
            self.leases.pulse()
            await asyncio.sleep(self.settings.heartbeat_s)

    async def stop(self) -> None:
        """Stop taking runs; runs in progress are handed back to the queue at once."""
        self._stopping = True
        if self._loop_task is not None:
            # A cancellation can be lost inside a Redis client call; the loop also checks
            # `_stopping` after each blocking read (at most a second), so cancel until done.
            while not self._loop_task.done():
                self._loop_task.cancel()
                await asyncio.wait({self._loop_task}, timeout=1.0)
            await asyncio.gather(self._loop_task, return_exceptions=True)
        running = dict(self._running)
        for task in running:
            task.cancel()
        if running:
            await asyncio.wait(running, timeout=STOP_WAIT_S)
        for entry_id in running.values():
            self.leases.release(entry_id)  # a renewal now would undo the hand-back
        await asyncio.to_thread(self.leases.stop)
        if self._pulse_task is not None:
            self._pulse_task.cancel()
        for entry_id in running.values():
            try:
                await self.store.abandon(entry_id, self.name, self.settings.claim_idle_ms + 1)
            except RedisError as exc:  # another worker will claim it after claim_idle_ms
                log.warning("could not hand back queue entry %s: %s", entry_id, exc)

    # -- taking runs ---------------------------------------------------------------------

    async def _consume(self) -> None:
        claim_every_s = max(0.05, min(1.0, self.settings.claim_idle_ms / 4000))
        last_claim = float("-inf")
        group_ready = False
        while not self._stopping:
            await self._slots.acquire()
            try:
                if not group_ready:
                    await self.store.ensure_group()
                    group_ready = True
                entry = None
                if time.monotonic() - last_claim >= claim_every_s:
                    last_claim = time.monotonic()
                    entry = await self.store.claim_abandoned(self.name, self.settings.claim_idle_ms)
                    if entry is not None and entry[0] in self._running.values():
                        # Our own run, its lease late (Redis slow, this machine starved): the
                        # claim only renewed it. Never start a second attempt of it here.
                        log.warning("run %s looked abandoned but this worker runs it", entry[1])
                        entry = None
                    elif entry is not None:
                        last_claim = float("-inf")  # there may be more
                        log.info("claimed abandoned run %s (entry %s)", entry[1], entry[0])
                if entry is None:
                    entry = await self.store.next_queued(self.name, int(claim_every_s * 1000))
            except asyncio.CancelledError:
                self._slots.release()
                raise
            except Exception as exc:  # Redis away: keep trying, the queue is in Redis
                self._slots.release()
                log.warning("worker %s cannot read the queue: %r; retrying in 1 s", self.name, exc)
                await asyncio.sleep(1.0)
                continue
            if entry is None or self._stopping:
                self._slots.release()
                if entry is not None:  # read while stopping: hand it back
                    await self.store.abandon(entry[0], self.name, self.settings.claim_idle_ms + 1)
                continue
            entry_id, run_id = entry
            self.leases.hold(entry_id)
            task = asyncio.create_task(self._execute(entry_id, run_id), name=f"run {run_id}")
            self._running[task] = entry_id
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        entry_id = self._running.pop(task, None)
        if entry_id is not None:
            self.leases.release(entry_id)
        self._slots.release()
        if not task.cancelled() and task.exception() is not None:
            log.error("run task %s failed", task.get_name(), exc_info=task.exception())

    # -- executing one run ---------------------------------------------------------------

    async def _execute(self, entry_id: str, run_id: str) -> None:
        try:
            start = await self.store.start_attempt(run_id, self.name, self.settings.max_attempts)
        except RedisError as exc:
            log.warning("cannot start run %s: %s; it stays queued", run_id, exc)
            return
        state, attempt = start.state, start.attempt
        if state != "running" and state != "exhausted":
            await self.store.done(entry_id)  # finished (or expired) already
            return
        record = await self.store.get(run_id)
        if record is None:
            await self.store.done(entry_id)
            return
        if state == "exhausted":
            await self._finish_early(
                entry_id,
                record,
                "too_many_attempts",
                f"{record.attempts} workers started this run and none finished it; "
                "look for what kills the worker (logs of the gateway replicas) and submit it again",
            )
            return
        if record.cancel_requested:
            await self._finish_early(
                entry_id,
                record,
                "cancelled",
                f"cancelled by POST /agent/runs/{run_id}/cancel",
                attempt=attempt,
            )
            return
        stored = [s.event for s in await self.store.events(run_id)]
        self.metrics.runs_in_progress.inc()
        try:
            previous = start.previous_worker if attempt > 1 else None
            finished = await self._attempt(entry_id, record, attempt, stored, previous)
        finally:
            self.metrics.runs_in_progress.dec()
        if finished:
            await self.store.done(entry_id)
            await self.store.release(record.owner, run_id)

    async def _attempt(
        self,
        entry_id: str,
        record: RunRecord,
        attempt: int,
        stored: list[RunEvent],
        previous_worker: str | None = None,
    ) -> bool:
        """Run the agent from where the events stop; True once the run has finished.
        `previous_worker`: this attempt takes the run over from that worker."""
        completed = steps_from_events(stored)
        events = list(stored)
        already_started = any(ev.type == "started" for ev in stored)
        modules = self.modules.for_run(
            record.id, len(completed), str(record.formulation), record.domain, record.routes
        )
        assert record.started_at is not None
        deadline_at = record.started_at + record.deadline_s
        remaining_s = deadline_at - time.time()

        stop_reason: dict[str, str] = {}
        current = asyncio.current_task()
        assert current is not None
        watcher = asyncio.create_task(self._watch(entry_id, record, stop_reason, current))
        try:
            agent = Agent(
                modules.planner,
                modules.grounder,
                modules.executor,
                AgentConfig(
                    domain=record.domain,
                    formulation=Formulation(record.formulation),
                    max_steps=record.max_steps,
                    constrain_grounding=self.settings.constrain_grounding,
                    environment=record.environment,
                ),
            )
            if previous_worker is not None:
                resumed = resumed_event(attempt, previous_worker, completed, stored)
                events.append(resumed)
                if not await self._record(record, attempt, resumed, events):
                    raise AttemptLost
            if remaining_s <= 0:
                raise TimeoutError
            async with asyncio.timeout(remaining_s):
                async for ev in agent.run(record.task, completed=completed, run_id=record.id):
                    if ev.type == "started" and already_started:
                        continue  # a run resumed before its first step completed
                    if ev.type == "started" and modules.models:
                        # the served model names this run plans and grounds with
                        ev = ev.model_copy(update={"data": {**ev.data, "models": modules.models}})
                    events.append(ev)
                    if not await self._record(record, attempt, ev, events):
                        raise AttemptLost
                    if ev.type in TERMINAL_EVENTS:
                        return True
                    # redis-py can lose a cancellation that lands in one of its calls, so
                    # the watcher's verdict and the deadline are also checked between events.
                    if "reason" in stop_reason:
                        raise StopRequested(stop_reason["reason"])
                    if self._stopping:
                        raise asyncio.CancelledError  # shutdown; its cancel was lost
                    if time.time() >= deadline_at:
                        raise TimeoutError
            message = "the agent stopped without a final event"
            return await self._fail(record, attempt, events, "gateway_error", message)
        except TimeoutError:
            if current.cancelling():  # the timeout's own cancellation was lost
                current.uncancel()
            message = (
                f"the run did not finish within its deadline of {record.deadline_s:g} s; "
                f"send a larger deadline_s (at most {self.settings.run_deadline_s:g}) or fewer max_steps"
            )
            return await self._fail(record, attempt, events, "deadline_exceeded", message)
        except AttemptLost:
            log.warning(
                "run %s was taken over by another worker; attempt %d stops", record.id, attempt
            )
            return False
        except (asyncio.CancelledError, StopRequested) as exc:
            reason = stop_reason.get("reason")
            if reason is None:
                raise  # shutdown: `stop()` hands the run back to the queue
            if isinstance(exc, asyncio.CancelledError) or current.cancelling():
                current.uncancel()
            if reason == "lost":
                log.warning("run %s: lost its queue entry; attempt %d stops", record.id, attempt)
                return False
            message = f"cancelled by POST /agent/runs/{record.id}/cancel"
            return await self._fail(record, attempt, events, "cancelled", message)
        except RedisError as exc:
            # The run stays pending: this or another worker resumes it once Redis is back.
            log.warning("run %s: Redis failed (%s); leaving it for a later attempt", record.id, exc)
            return False
        except Exception as exc:
            log.exception("run %s failed in the gateway", record.id)
            message = f"the gateway failed while running it: {type(exc).__name__}: {exc}"
            return await self._fail(record, attempt, events, "gateway_error", message)
        finally:
            watcher.cancel()

    async def _record(
        self, record: RunRecord, attempt: int, ev: RunEvent, events: list[RunEvent]
    ) -> bool:
        finish = self._finish_fields(record, ev, events) if ev.type in TERMINAL_EVENTS else None
        entry_id = await self.store.append(record.id, ev, attempt=attempt, finish=finish)
        if entry_id is None:
            return False
        self.metrics.observe_event(ev)
        if finish is not None:
            self._observe_finished(record, finish)
        return True

    def _finish_fields(
        self, record: RunRecord, ev: RunEvent, events: list[RunEvent]
    ) -> dict[str, Any]:
        now = time.time()
        steps = sum(1 for e in events if e.type == "results")
        done = record.model_copy(update={"finished_at": now})
        fields: dict[str, Any] = {
            "finished_at": now,
            "steps": steps,
            "timings": run_timings(done, events),
        }
        if ev.type == "final":
            fields["status"] = RunStatus.SUCCEEDED.value
            fields["answer"] = ev.data.get("answer")
        else:
            reason = str(ev.data.get("reason", "error"))
            cancelled = reason == "cancelled"
            fields["status"] = (RunStatus.CANCELLED if cancelled else RunStatus.FAILED).value
            fields["error"] = str(ev.data.get("message", reason))
            fields["error_reason"] = reason
        return fields

    def _observe_finished(self, record: RunRecord, finish: dict[str, Any]) -> None:
        started = record.started_at or record.created_at
        self.metrics.observe_finished(
            domain=record.domain,
            formulation=str(record.formulation),
            outcome=finish["status"],
            duration_s=max(0.0, finish["finished_at"] - started),
            steps=int(finish["steps"]),
        )

    async def _fail(
        self, record: RunRecord, attempt: int, events: list[RunEvent], reason: str, message: str
    ) -> bool:
        step = max((e.step for e in events), default=0)
        ev = RunEvent(type="error", step=step, data={"reason": reason, "message": message})
        events.append(ev)
        await self._record(record, attempt, ev, events)
        return True

    async def _finish_early(
        self,
        entry_id: str,
        record: RunRecord,
        reason: str,
        message: str,
        attempt: int | None = None,
    ) -> None:
        events = [s.event for s in await self.store.events(record.id)]
        if record.started_at is None:
            record = record.model_copy(update={"started_at": time.time()})
        await self._fail(
            record, attempt if attempt is not None else record.attempts, events, reason, message
        )
        await self.store.done(entry_id)
        await self.store.release(record.owner, record.id)

    async def _watch(
        self, entry_id: str, record: RunRecord, stop_reason: dict[str, str], task: asyncio.Task[Any]
    ) -> None:
        """Stop the run when it is cancelled or taken over; keep its API key's slot.

        The lease itself is renewed by the lease thread, not here (see gateway/lease.py).
        """
        last_hold = time.monotonic()
        assert record.started_at is not None
        hold_s = record.started_at + record.deadline_s - time.time() + HOLD_MARGIN_S
        while True:
            await asyncio.sleep(min(CANCEL_POLL_S, self.settings.heartbeat_s))
            if self.leases.lost(entry_id):
                stop_reason["reason"] = "lost"
                task.cancel()
                return
            try:
                if await self.store.cancel_requested(record.id):
                    stop_reason["reason"] = "cancelled"
                    task.cancel()
                    return
                if time.monotonic() - last_hold >= self.settings.heartbeat_s:
                    await self.store.hold(record.owner, record.id, max(hold_s, HOLD_MARGIN_S))
                    last_hold = time.monotonic()
            except RedisError as exc:
                log.warning("run %s: cancel check failed: %s", record.id, exc)
