"""A circuit breaker per model server: a server that keeps failing is left alone for a while.

Without one, every run that reaches a dead server spends its whole retry budget on it, and
a hundred runs send four hundred requests into a connection that refuses them. With one:

- *closed*: requests go through; `threshold` failures in a row (connection refused, reset,
  timeout, 429, 5xx) open the circuit;
- *open* for `cooldown_s` (doubled at each reopening, up to `max_cooldown_s`): no request is
  sent; a caller waits for the end of the cooldown if its own retry budget and deadline
  allow it, else it fails at once with a message that says so;
- *half-open* after the cooldown: requests go through again; a success closes the circuit,
  a failure opens it again.

Pure logic over an injectable clock, shared by every client of one server URL; the counters
(`refused`, `opened`) are read by the gateway's metrics.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class CircuitBreaker:
    def __init__(
        self,
        name: str,
        *,
        threshold: int = 5,
        cooldown_s: float = 1.0,
        max_cooldown_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if threshold < 1:
            raise ValueError(f"threshold must be at least 1, got {threshold}")
        self.name = name
        self.threshold = threshold
        self.base_cooldown_s = cooldown_s
        self.max_cooldown_s = max_cooldown_s
        self.clock = clock
        self.failures = 0  # in a row
        self.cooldown_s = cooldown_s
        self.open_until = 0.0
        self.refused = 0  # calls that found the circuit open (sent nothing)
        self.opened = 0  # times the circuit opened

    @property
    def state(self) -> str:
        if self.failures < self.threshold:
            return "closed"
        return "open" if self.clock() < self.open_until else "half_open"

    def open_for(self) -> float:
        """Seconds until requests may be sent again (0: now)."""
        return max(0.0, self.open_until - self.clock()) if self.failures >= self.threshold else 0.0

    def refuse(self) -> float:
        """Count a call that found the circuit open; the seconds it stays open."""
        self.refused += 1
        return self.open_for()

    def record_success(self) -> None:
        self.failures = 0
        self.cooldown_s = self.base_cooldown_s

    def record_failure(self) -> None:
        now = self.clock()
        self.failures += 1
        if self.failures < self.threshold or now < self.open_until:
            return  # still closed, or already open (requests that were in flight)
        if self.failures > self.threshold:  # a half-open try failed: wait longer
            self.cooldown_s = min(self.max_cooldown_s, self.cooldown_s * 2)
        self.open_until = now + self.cooldown_s
        self.opened += 1


class CircuitBreakers:
    """One `CircuitBreaker` per server URL, made on first use."""

    def __init__(self, *, threshold: int = 5, cooldown_s: float = 1.0) -> None:
        self.threshold = threshold
        self.cooldown_s = cooldown_s
        self.by_url: dict[str, CircuitBreaker] = {}

    def get(self, url: str) -> CircuitBreaker:
        breaker = self.by_url.get(url)
        if breaker is None:
            breaker = CircuitBreaker(url, threshold=self.threshold, cooldown_s=self.cooldown_s)
            self.by_url[url] = breaker
        return breaker
