"""The Redis run store: every run, its events, the shared queue of runs to execute.

Key layout (all strings are UTF-8)::

    lumos:run:{id}               hash    the run's record (`RunRecord`)
    lumos:run:{id}:events        stream  its events: fields type, step, data (JSON), attempt
    lumos:runs:queue             stream  runs to execute: field run_id; group `workers`
    lumos:idem:{owner}:{key}     string  Idempotency-Key -> run id (SET NX, with a TTL)
    lumos:inflight:{owner}       zset    unfinished runs of an API key, scored by expiry

Writes that must not interleave are Lua scripts: an event is appended only by the worker
holding the run's current attempt (a fencing token), and a run's last event and its final
status are written together.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from gateway.runs import RunRecord, StoredEvent
from lumos.trace import RunEvent

PREFIX = "lumos"
QUEUE = f"{PREFIX}:runs:queue"
GROUP = "workers"

_FINISHED = "status == 'succeeded' or status == 'failed' or status == 'cancelled'"

# KEYS: idem (optional, first), run hash, queue. ARGV: run id, ttl, cap on waiting runs
# (0: none), then hash field/values. -> {1, id} created, {0, id} the key's run, {-1, waiting}
# the queue is full. Waiting: entries of the queue not delivered to any worker yet.
_CREATE = f"""
local run_key, queue_key = KEYS[#KEYS - 1], KEYS[#KEYS]
if #KEYS == 3 then
  local existing = redis.call('GET', KEYS[1])
  if existing then return {{0, existing}} end
end
local cap = tonumber(ARGV[3])
if cap > 0 then
  local waiting = redis.call('XLEN', queue_key)
  local pending = redis.pcall('XPENDING', queue_key, '{GROUP}')
  if type(pending) == 'table' and pending.err == nil then
    waiting = waiting - tonumber(pending[1])
  end
  if waiting >= cap then return {{-1, tostring(waiting)}} end
end
if #KEYS == 3 then redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2]) end
redis.call('HSET', run_key, unpack(ARGV, 4))
redis.call('XADD', queue_key, '*', 'run_id', ARGV[1])
return {{1, ARGV[1]}}
"""

# KEYS: run hash. ARGV: worker, now, max attempts. -> {state, attempt, previous worker}
_BEGIN_ATTEMPT = f"""
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {{'missing', 0, ''}} end
if {_FINISHED} then return {{status, 0, ''}} end
local previous = redis.call('HGET', KEYS[1], 'worker') or ''
local attempts = tonumber(redis.call('HGET', KEYS[1], 'attempts') or '0')
if attempts >= tonumber(ARGV[3]) then return {{'exhausted', attempts, previous}} end
attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'status', 'running', 'worker', ARGV[1])
if not redis.call('HGET', KEYS[1], 'started_at') then
  redis.call('HSET', KEYS[1], 'started_at', ARGV[2])
end
return {{'running', attempts, previous}}
"""

# KEYS: run hash, events. ARGV: attempt ('*': any), type, step, data, ttl, then the
# hash fields of a finished run. -> stream id, or false when fenced off / already finished.
_APPEND = f"""
local status = redis.call('HGET', KEYS[1], 'status')
if not status or {_FINISHED} then return false end
local attempts = redis.call('HGET', KEYS[1], 'attempts') or '0'
if ARGV[1] ~= '*' and attempts ~= ARGV[1] then return false end
local id = redis.call('XADD', KEYS[2], '*', 'type', ARGV[2], 'step', ARGV[3],
                      'data', ARGV[4], 'attempt', attempts)
if #ARGV > 5 then
  redis.call('HSET', KEYS[1], unpack(ARGV, 6))
  if tonumber(ARGV[5]) > 0 then
    redis.call('EXPIRE', KEYS[1], ARGV[5])
    redis.call('EXPIRE', KEYS[2], ARGV[5])
  end
end
return id
"""

# KEYS: run hash, events. ARGV: now, error data, message, ttl.
# -> 'missing' | a finished status | 'cancelled_now' (it was queued) | 'cancelling'
_CANCEL = f"""
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 'missing' end
if {_FINISHED} then return status end
if status == 'queued' then
  local attempts = redis.call('HGET', KEYS[1], 'attempts') or '0'
  redis.call('XADD', KEYS[2], '*', 'type', 'error', 'step', '0', 'data', ARGV[2],
             'attempt', attempts)
  redis.call('HSET', KEYS[1], 'status', 'cancelled', 'finished_at', ARGV[1],
             'error', ARGV[3], 'error_reason', 'cancelled', 'steps', '0')
  if tonumber(ARGV[4]) > 0 then
    redis.call('EXPIRE', KEYS[1], ARGV[4])
    redis.call('EXPIRE', KEYS[2], ARGV[4])
  end
  return 'cancelled_now'
end
redis.call('HSET', KEYS[1], 'cancel_requested', '1')
return 'cancelling'
"""

# KEYS: inflight zset. ARGV: now, cap, expiry, run id -> 1 admitted, 0 over the cap
_ADMIT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[4])
redis.call('EXPIREAT', KEYS[1], math.ceil(tonumber(ARGV[3])))
return 1
"""

# KEYS: queue. ARGV: group, entry id, consumer. Refresh the entry's idle time only while
# this consumer still owns it: a worker that lost its run must not steal it back.
# (Sent by the lease thread of gateway/lease.py, over its own connection.)
HEARTBEAT = """
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1, ARGV[3])
if #pending == 0 then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[3], 0, ARGV[2], 'JUSTID')
return 1
"""


class QueueFull(Exception):
    """As many runs as the cap already wait for a worker; this one was not stored."""

    def __init__(self, waiting: int) -> None:
        super().__init__(f"{waiting} runs wait for a worker")
        self.waiting = waiting


@dataclass(frozen=True)
class AttemptStart:
    """What `RunStore.start_attempt` found: state, the new attempt, the previous worker."""

    state: str  # running, missing, exhausted, or the status of a finished run
    attempt: int
    previous_worker: str | None


def run_key(run_id: str) -> str:
    return f"{PREFIX}:run:{run_id}"


def events_key(run_id: str) -> str:
    return f"{PREFIX}:run:{run_id}:events"


def idempotency_key(owner: str, key: str) -> str:
    return f"{PREFIX}:idem:{owner}:{key}"


def inflight_key(owner: str) -> str:
    return f"{PREFIX}:inflight:{owner}"


class RunStore:
    """Runs in Redis. One instance per process over the process's connection pool."""

    def __init__(self, redis: aioredis.Redis, *, run_ttl_s: int = 0) -> None:
        self.redis = redis
        self.run_ttl_s = run_ttl_s
        self._create = redis.register_script(_CREATE)
        self._begin = redis.register_script(_BEGIN_ATTEMPT)
        self._append = redis.register_script(_APPEND)
        self._cancel = redis.register_script(_CANCEL)
        self._admit = redis.register_script(_ADMIT)

    # -- runs ---------------------------------------------------------------------------

    async def create(
        self,
        record: RunRecord,
        *,
        idempotency: str | None = None,
        idempotency_ttl_s: int = 86_400,
        max_waiting: int = 0,
    ) -> tuple[str, bool]:
        """Store a new queued run and enqueue it; with an idempotency key already used,
        store nothing. Returns (run id, created). `max_waiting` > 0: raise `QueueFull`
        instead when that many runs already wait for a worker."""
        keys = [run_key(record.id), QUEUE]
        if idempotency is not None:
            keys.insert(0, idempotency_key(record.owner, idempotency))
        args: list[Any] = [record.id, idempotency_ttl_s, max_waiting]
        for field, value in record.to_hash().items():
            args += [field, value]
        created, run_id = await self._create(keys=keys, args=args)
        if int(created) < 0:
            raise QueueFull(int(_text(run_id)))
        return _text(run_id), bool(created)

    async def run_for_idempotency_key(self, owner: str, key: str) -> str | None:
        value = await self.redis.get(idempotency_key(owner, key))
        return None if value is None else _text(value)

    async def get(self, run_id: str) -> RunRecord | None:
        raw = await self.redis.hgetall(run_key(run_id))
        if not raw:
            return None
        return RunRecord.from_hash({_text(k): _text(v) for k, v in raw.items()})

    async def events(self, run_id: str, after: str | None = None) -> list[StoredEvent]:
        start = "-" if after is None else f"({after}"
        entries: Any = await self.redis.xrange(events_key(run_id), min=start)
        return [_stored(entry_id, fields) for entry_id, fields in entries]

    async def wait_events(self, run_id: str, after: str, block_ms: int) -> list[StoredEvent]:
        """Events after stream id `after`, waiting up to `block_ms` for the first."""
        answer = await self.redis.xread({events_key(run_id): after}, block=block_ms, count=100)
        return [_stored(entry_id, fields) for entry_id, fields in _first_stream(answer)]

    async def begin_attempt(self, run_id: str, worker: str, max_attempts: int) -> tuple[str, int]:
        """Mark the run running under `worker`; (state, attempt) where state is running,
        missing, exhausted (too many attempts) or the status of a finished run."""
        start = await self.start_attempt(run_id, worker, max_attempts)
        return start.state, start.attempt

    async def start_attempt(self, run_id: str, worker: str, max_attempts: int) -> AttemptStart:
        """`begin_attempt`, also saying which worker ran the previous attempt."""
        state, attempt, previous = await self._begin(
            keys=[run_key(run_id)], args=[worker, time.time(), max_attempts]
        )
        return AttemptStart(_text(state), int(attempt), _text(previous) or None)

    async def append(
        self,
        run_id: str,
        event: RunEvent,
        *,
        attempt: int | None,
        finish: dict[str, Any] | None = None,
    ) -> str | None:
        """Append `event` if `attempt` is still the run's current one (None: any), and
        with `finish` also write those fields and expire the run. None: not written."""
        args: list[Any] = [
            "*" if attempt is None else str(attempt),
            event.type,
            str(event.step),
            json.dumps(event.data, ensure_ascii=False, default=str),
            self.run_ttl_s if finish else 0,
        ]
        for field, value in (finish or {}).items():
            if value is None:
                continue
            args += [field, json.dumps(value) if isinstance(value, dict) else str(value)]
        entry_id = await self._append(keys=[run_key(run_id), events_key(run_id)], args=args)
        return None if entry_id is None else _text(entry_id)

    async def request_cancel(self, run_id: str, message: str) -> str:
        data = json.dumps({"reason": "cancelled", "message": message})
        state = await self._cancel(
            keys=[run_key(run_id), events_key(run_id)],
            args=[time.time(), data, message, self.run_ttl_s],
        )
        return _text(state)

    async def cancel_requested(self, run_id: str) -> bool:
        return await self.redis.hget(run_key(run_id), "cancel_requested") == b"1"

    # -- concurrency per API key ---------------------------------------------------------

    async def admit(self, owner: str, run_id: str, cap: int, hold_s: float) -> bool:
        """Count `run_id` against `owner`'s cap for at most `hold_s` (a crashed process
        cannot leak a slot for longer). False when the cap is reached."""
        if cap <= 0:
            return True
        now = time.time()
        admitted = await self._admit(
            keys=[inflight_key(owner)], args=[now, cap, now + hold_s, run_id]
        )
        return bool(admitted)

    async def hold(self, owner: str, run_id: str, hold_s: float) -> None:
        """Extend a running run's slot (it may run long after it was admitted)."""
        await self.redis.zadd(inflight_key(owner), {run_id: time.time() + hold_s}, xx=True)

    async def release(self, owner: str, run_id: str) -> None:
        await self.redis.zrem(inflight_key(owner), run_id)

    # -- the queue of runs ---------------------------------------------------------------

    async def ensure_group(self) -> None:
        try:
            await self.redis.xgroup_create(QUEUE, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def next_queued(self, consumer: str, block_ms: int) -> tuple[str, str] | None:
        """Deliver a new queue entry to `consumer`: (entry id, run id)."""
        try:
            answer = await self.redis.xreadgroup(
                GROUP, consumer, {QUEUE: ">"}, count=1, block=block_ms
            )
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):  # Redis lost its data: recreate the group
                raise
            await self.ensure_group()
            return None
        entries = _first_stream(answer)
        if not entries:
            return None
        entry_id, fields = entries[0]
        return _text(entry_id), _text(fields[b"run_id"])

    async def claim_abandoned(self, consumer: str, min_idle_ms: int) -> tuple[str, str] | None:
        """Take over one entry whose worker stopped heartbeating: (entry id, run id)."""
        try:
            answer: Any = await self.redis.xautoclaim(
                QUEUE, GROUP, consumer, min_idle_time=min_idle_ms, start_id="0-0", count=1
            )
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self.ensure_group()
            return None
        claimed = answer[1]
        for entry_id, fields in claimed:
            if fields and b"run_id" in fields:
                return _text(entry_id), _text(fields[b"run_id"])
            await self.done(_text(entry_id))  # deleted from the stream meanwhile
        return None

    async def abandon(self, entry_id: str, consumer: str, idle_ms: int) -> None:
        """Give an entry up at shutdown: make it claimable by another worker at once."""
        await self.redis.xclaim(QUEUE, GROUP, consumer, 0, [entry_id], idle=idle_ms, justid=True)

    async def done(self, entry_id: str) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xack(QUEUE, GROUP, entry_id)
            pipe.xdel(QUEUE, entry_id)
            await pipe.execute()

    async def ping(self) -> None:
        await self.redis.ping()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _first_stream(answer: Any) -> list[Any]:
    """The entries of the one stream an XREAD/XREADGROUP asked for (RESP2 list or RESP3 map)."""
    if not answer:
        return []
    if isinstance(answer, dict):
        return list(next(iter(answer.values())) or [])
    return list(answer[0][1] or [])


def _stored(entry_id: Any, fields: dict[Any, Any]) -> StoredEvent:
    return StoredEvent.from_entry(_text(entry_id), {_text(k): _text(v) for k, v in fields.items()})
