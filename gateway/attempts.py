"""Attempts of a run: the `resumed` event that starts a takeover, and the trace that counted.

A run taken over by another worker keeps every event in its stream, as written: a client
following it sees what happened, in order. The events the previous attempt wrote for the
step it did not finish are redone by the new attempt; they are *superseded*. The run view
shows the trace without them (`counted_events`) and lists them apart.
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.runs import StoredEvent
from lumos.trace import RunEvent, Step


def resumed_event(
    attempt: int, previous_worker: str, completed: Sequence[Step], stored: Sequence[RunEvent]
) -> RunEvent:
    """The first event of attempt `attempt`, which continues after the `completed` steps."""
    from_step = len(completed) + 1
    superseded = sum(1 for ev in stored if ev.step >= from_step)
    return RunEvent(
        type="resumed",
        data={
            "attempt": attempt,
            "previous_worker": previous_worker,
            "from_step": from_step,
            "superseded_events": superseded,
        },
    )


def counted_events(events: Sequence[StoredEvent]) -> tuple[list[StoredEvent], list[StoredEvent]]:
    """(counted, superseded): a `resumed` event supersedes the earlier events of the steps
    it redoes (step >= its `from_step`); the `resumed` event itself counts."""
    counted: list[StoredEvent] = []
    superseded: list[StoredEvent] = []
    for stored in events:
        if stored.event.type == "resumed":
            from_step = int(stored.event.data.get("from_step", 1))
            superseded += [s for s in counted if s.event.step >= from_step]
            counted = [s for s in counted if s.event.step < from_step]
        counted.append(stored)
    return counted, superseded
