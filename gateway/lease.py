"""A worker's leases on the runs it executes, renewed by a thread, not by the event loop.

A run's queue entry that stays idle for `claim_idle_ms` is taken to belong to a dead worker
and is claimed by another. The idle time used to be reset by a coroutine of the worker's
event loop, so a worker starved of CPU (alive, making progress, just late) lost its runs:
another worker, or its own claim loop, started a second attempt of a run still running.

Here a daemon thread with its own Redis connection renews every lease this process holds
each `heartbeat_s`. A thread is scheduled by the OS whatever the event loop is doing, so:

- a slow but alive worker keeps its runs (the thread beats while the loop crawls);
- a dead worker (process killed, machine gone) loses them after `claim_idle_ms`, as before;
- a worker whose event loop has not ticked for `stall_s` (hung in a blocking call, not
  merely slow) is treated as dead: the thread stops renewing, so its runs are taken over.

The renewal is conditional (`HEARTBEAT` in store.py): it succeeds only while this consumer
still owns the entry, so a worker never takes back a run another worker has claimed; such a
lease is marked lost and the run's coroutine stops writing (the attempt fence in
`RunStore.append` stops it in any case).
"""

from __future__ import annotations

import logging
import threading
import time

import redis
from redis.exceptions import RedisError

from gateway.store import GROUP, HEARTBEAT, QUEUE

log = logging.getLogger("gateway.lease")

# A loop that has not ticked for this many claim-idle periods (at least MIN_STALL_S) is hung.
STALL_FACTOR = 10
MIN_STALL_S = 30.0


def stall_limit_s(claim_idle_ms: int) -> float:
    return max(MIN_STALL_S, STALL_FACTOR * claim_idle_ms / 1000)


class LeaseKeeper:
    """Renews the queue entries of one consumer from a thread; `pulse()` from the loop."""

    def __init__(
        self,
        redis_url: str,
        consumer: str,
        *,
        heartbeat_s: float,
        stall_s: float,
    ) -> None:
        self.consumer = consumer
        self.heartbeat_s = heartbeat_s
        self.stall_s = stall_s
        self._redis = redis.Redis.from_url(
            redis_url, socket_connect_timeout=heartbeat_s, socket_timeout=heartbeat_s
        )
        self._renew = self._redis.register_script(HEARTBEAT)
        self._lock = threading.Lock()
        self._held: set[str] = set()
        self._lost: set[str] = set()
        self._pulse_at = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"leases {consumer}", daemon=True)
        self.renewals = 0  # successful renewals, for tests and logs
        self.skipped_stalled = 0  # rounds skipped because the loop looked hung

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(self.heartbeat_s + 5)
        self._redis.close()

    def pulse(self) -> None:
        """The event loop is alive (called from it every `heartbeat_s`)."""
        self._pulse_at = time.monotonic()

    def hold(self, entry_id: str) -> None:
        with self._lock:
            self._held.add(entry_id)
            self._lost.discard(entry_id)

    def release(self, entry_id: str) -> None:
        with self._lock:
            self._held.discard(entry_id)
            self._lost.discard(entry_id)

    def holds(self, entry_id: str) -> bool:
        with self._lock:
            return entry_id in self._held

    def lost(self, entry_id: str) -> bool:
        """True once another worker has claimed the entry."""
        with self._lock:
            return entry_id in self._lost

    def renew_now(self) -> None:
        """One round of renewals (the thread's body; tests call it directly)."""
        stalled_s = time.monotonic() - self._pulse_at
        if stalled_s > self.stall_s:
            self.skipped_stalled += 1
            log.warning(
                "worker %s: event loop silent for %.0f s (limit %.0f s); its runs are no "
                "longer renewed and will be taken over",
                self.consumer,
                stalled_s,
                self.stall_s,
            )
            return
        with self._lock:
            entries = sorted(self._held - self._lost)
        for entry_id in entries:
            try:
                owned = self._renew(keys=[QUEUE], args=[GROUP, entry_id, self.consumer])
            except RedisError as exc:  # renewed on the next round; Redis may be back
                log.warning("worker %s: cannot renew lease %s: %s", self.consumer, entry_id, exc)
                return
            if owned:
                self.renewals += 1
                continue
            with self._lock:
                if entry_id in self._held:
                    self._lost.add(entry_id)
            log.warning(
                "worker %s: lease %s was claimed by another worker", self.consumer, entry_id
            )

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                self.renew_now()
            except Exception:  # the thread must outlive any surprise; say what it was
                log.exception("worker %s: lease renewal failed", self.consumer)
