"""Prometheus metrics of the gateway, each app with its own registry.

Everything is observed from a run's events (the same facts the trace holds), by the worker
that executes the run.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from lumos.circuit import CircuitBreakers
from lumos.trace import RunEvent

# 5 ms to 5 min, roughly 1-2.5-5 per decade: model calls, tool calls and whole runs.
LATENCY_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 180.0, 300.0,
)  # fmt: skip
STEP_BUCKETS = (1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 24, 32)
SCORE_BUCKETS = (0.0, 0.25, 0.5, 0.75, 1.0)

MODULE_OF_EVENT = {"subgoal": "planner", "actions": "grounder", "results": "executor"}


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        # Empty until the app tracks its model servers' breakers; the series exist anyway.
        self._circuits = CircuitCollector(CircuitBreakers())
        r.register(self._circuits)
        self.run_duration = Histogram(
            "lumos_run_duration_seconds",
            "Wall time of a finished run from its first start, by outcome "
            "(succeeded, failed, cancelled).",
            ["domain", "formulation", "outcome"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.module_latency = Histogram(
            "lumos_module_latency_seconds",
            "Latency of one call to a module (planner, grounder, executor).",
            ["module"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.model_latency = Histogram(
            "lumos_model_latency_seconds",
            "Latency of one planner or grounder call, by the served model (or adapter) that "
            "answered it, as its route chose.",
            ["module", "model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.tool_latency = Histogram(
            "lumos_tool_latency_seconds",
            "Execution time of one action, by tool, as the executor reports it.",
            ["tool"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.run_steps = Histogram(
            "lumos_run_steps",
            "Completed plan/ground/execute steps of a finished run.",
            ["domain", "formulation"],
            buckets=STEP_BUCKETS,
            registry=r,
        )
        self.module_tokens = Counter(
            "lumos_module_tokens",
            "Tokens of model calls, by module and kind (prompt, completion).",
            ["module", "kind"],
            registry=r,
        )
        self.grounding_parse_failures = Counter(
            "lumos_grounding_parse_failures",
            "Grounder outputs that were not a valid action list.",
            registry=r,
        )
        self.runs_resumed = Counter(
            "lumos_runs_resumed",
            "Runs taken over by a worker after their previous worker stopped (died, shut down, "
            "or lost its lease): each a `resumed` event.",
            registry=r,
        )
        self.grounding_cuts = Counter(
            "lumos_grounding_cuts",
            "Groundings cut by the token limit whose complete actions ran (the cut one dropped).",
            registry=r,
        )
        self.run_errors = Counter(
            "lumos_run_errors",
            "Runs that ended with an error, by reason (planner_failed, deadline_exceeded, ...).",
            ["reason"],
            registry=r,
        )
        self.runs_in_progress = Gauge(
            "lumos_runs_in_progress",
            "Runs this process's workers are executing now.",
            registry=r,
        )
        self.runs_refused = Counter(
            "lumos_runs_refused",
            "Runs refused at submission, by reason: too_many_runs (the API key's cap), "
            "queue_full (LUMOS_MAX_QUEUED_RUNS).",
            ["reason"],
            registry=r,
        )
        self.runs_submitted = Counter(
            "lumos_runs_submitted",
            "Runs accepted by this process, by mode (sync, stream, background).",
            ["mode"],
            registry=r,
        )
        self.feedback_score = Histogram(
            "lumos_run_feedback_score",
            "Scores of feedback given on finished runs (0 wrong .. 1 right).",
            ["domain", "formulation"],
            buckets=SCORE_BUCKETS,
            registry=r,
        )
        self.feedback_corrections = Counter(
            "lumos_run_feedback_corrections",
            "Feedback that gave a corrected answer.",
            ["domain", "formulation"],
            registry=r,
        )

    def observe_event(self, ev: RunEvent) -> None:
        module = MODULE_OF_EVENT.get(ev.type)
        if module is not None and "latency_s" in ev.data:
            self.module_latency.labels(module).observe(float(ev.data["latency_s"]))
        if module in ("planner", "grounder") and "model" in ev.data and "latency_s" in ev.data:
            self.model_latency.labels(module, str(ev.data["model"])).observe(
                float(ev.data["latency_s"])
            )
        if module in ("planner", "grounder"):
            for kind in ("prompt", "completion"):
                tokens = int(ev.data.get(f"{kind}_tokens") or 0)
                if tokens:
                    self.module_tokens.labels(module, kind).inc(tokens)
        if ev.type == "resumed":
            self.runs_resumed.inc()
        if ev.type == "actions" and "cut_at_token_limit" in ev.data:
            self.grounding_cuts.inc()
        if ev.type == "results":
            for executed in ev.data.get("executed", []):
                self.tool_latency.labels(executed["name"]).observe(
                    float(executed.get("elapsed_s", 0.0))
                )
        elif ev.type == "final" and "final_action" in ev.data:
            action = ev.data["final_action"]
            self.module_latency.labels("executor").observe(float(ev.data.get("latency_s", 0.0)))
            self.tool_latency.labels(action["name"]).observe(float(action.get("elapsed_s", 0.0)))
        elif ev.type == "error":
            reason = str(ev.data.get("reason", "unknown"))
            self.run_errors.labels(reason).inc()
            if reason == "grounding_parse_error":
                self.grounding_parse_failures.inc()

    def observe_finished(
        self, *, domain: str, formulation: str, outcome: str, duration_s: float, steps: int
    ) -> None:
        self.run_duration.labels(domain, formulation, outcome).observe(duration_s)
        self.run_steps.labels(domain, formulation).observe(steps)

    def track_circuits(self, breakers: CircuitBreakers) -> None:
        """Expose these model servers' circuit breakers (lumos/circuit.py), read at scrape."""
        self._circuits.breakers = breakers

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class CircuitCollector(Collector):
    """`lumos_model_server_circuit_open`, `..._calls_refused`, `..._circuit_opened` per server."""

    def __init__(self, breakers: CircuitBreakers) -> None:
        self.breakers = breakers

    def collect(self) -> Iterator[Metric]:
        is_open = GaugeMetricFamily(
            "lumos_model_server_circuit_open",
            "1 while no request is sent to the model server (it failed repeatedly).",
            labels=["server"],
        )
        refused = CounterMetricFamily(
            "lumos_model_server_calls_refused",
            "Model calls that found the server's circuit open and sent nothing.",
            labels=["server"],
        )
        opened = CounterMetricFamily(
            "lumos_model_server_circuit_opened",
            "Times the server's circuit opened after consecutive failures.",
            labels=["server"],
        )
        for url, breaker in sorted(self.breakers.by_url.items()):
            is_open.add_metric([url], 1.0 if breaker.state == "open" else 0.0)
            refused.add_metric([url], breaker.refused)
            opened.add_metric([url], breaker.opened)
        yield from (is_open, refused, opened)
