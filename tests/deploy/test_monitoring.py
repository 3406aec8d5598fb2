"""Prometheus config and rules, Grafana provisioning and the generated dashboards."""

from __future__ import annotations

import http.server
import json
import math
import re
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from gateway.metrics import GatewayMetrics
from lumos.trace import RunEvent
from monitoring import dashboards
from services.executor.engine import ExecutorMetrics
from tests.deploy.repository import COMPOSE, MONITORING, load_yaml
from tests.deploy.tools import require_binary

PROMETHEUS_CONFIG = MONITORING / "prometheus.yml"
RULES = MONITORING / "rules" / "lumos.rules.yml"
RULE_TESTS = MONITORING / "rules" / "tests.yml"
GRAFANA = MONITORING / "grafana"

# vLLM's own metrics (the model servers are unmodified vLLM): histograms, gauges, counters.
VLLM_HISTOGRAMS = (
    "vllm:time_to_first_token_seconds",
    "vllm:inter_token_latency_seconds",
    "vllm:time_per_output_token_seconds",  # the name before vLLM 0.10
    "vllm:e2e_request_latency_seconds",
)
VLLM_GAUGES = ("vllm:num_requests_waiting", "vllm:num_requests_running", "vllm:kv_cache_usage_perc")
VLLM_COUNTERS = (
    "vllm:prefix_cache_queries",
    "vllm:prefix_cache_hits",
    "vllm:prompt_tokens",
    "vllm:generation_tokens",
)
PROMETHEUS_SERIES = {"up"}


def _exported_names(registry: CollectorRegistry) -> set[str]:
    """Every series name a registry exposes, whether or not it has samples yet."""
    suffixes = {
        "counter": ("_total",),
        "histogram": ("_bucket", "_count", "_sum"),
        "gauge": ("",),
        "summary": ("_count", "_sum", ""),
    }
    return {
        family.name + suffix
        for family in registry.collect()
        for suffix in suffixes.get(family.type, ("",))
    }


def _vllm_names() -> set[str]:
    names = {h + s for h in VLLM_HISTOGRAMS for s in ("_bucket", "_count", "_sum")}
    return names | set(VLLM_GAUGES) | {c + "_total" for c in VLLM_COUNTERS}


KNOWN_SERIES = (
    _exported_names(GatewayMetrics().registry)
    | _exported_names(ExecutorMetrics().registry)
    | _vllm_names()
    | PROMETHEUS_SERIES
)

PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool"}
PROMQL_KEYWORDS |= {"and", "or", "unless", "offset", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The series names a PromQL expression reads (not functions, labels or keywords)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range and subquery windows
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    names = set()
    for match in re.finditer(r"(?<![\w.$])[a-zA-Z_:][\w:]*", expr):
        if expr[match.end() :].lstrip().startswith("("):
            continue  # a function call
        if match.group().lower() not in PROMQL_KEYWORDS:
            names.add(match.group())
    return names


def _panel_targets(board: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]


def _dashboard_files() -> dict[str, dict[str, Any]]:
    return {
        p.name: json.loads(p.read_text()) for p in sorted((GRAFANA / "dashboards").glob("*.json"))
    }


# --- Prometheus: promtool ------------------------------------------------------------------


def _promtool(binary: str, *args: str) -> None:
    done = subprocess.run(
        [binary, *args], cwd=MONITORING, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, f"promtool {' '.join(args)}:\n{done.stdout}\n{done.stderr}"


def test_promtool_accepts_the_prometheus_config() -> None:
    _promtool(require_binary("promtool", "prometheus"), "check", "config", str(PROMETHEUS_CONFIG))


def test_promtool_accepts_the_rules() -> None:
    _promtool(require_binary("promtool", "prometheus"), "check", "rules", str(RULES))


def test_the_rules_pass_their_unit_tests() -> None:
    _promtool(require_binary("promtool", "prometheus"), "test", "rules", str(RULE_TESTS))


# --- Prometheus: structure ------------------------------------------------------------------


def test_prometheus_scrapes_every_service_where_compose_runs_it() -> None:
    config = load_yaml(PROMETHEUS_CONFIG)
    services = load_yaml(COMPOSE)["services"]
    targets = {
        job["job_name"]: [t for group in job["static_configs"] for t in group["targets"]]
        for job in config["scrape_configs"]
    }
    assert set(targets) == {"prometheus", "gateway", "executor", "planner", "grounder"}
    listening = {
        "gateway": services["gateway"]["environment"]["LUMOS_PORT"],
        "executor": services["executor"]["environment"]["LUMOS_EXECUTOR_PORT"],
        "planner": "8000",
        "grounder": "8000",
    }
    for job, port in listening.items():
        assert targets[job] == [f"{job}:{port}"]
    # the rule files the config loads are the ones checked here, and not the unit tests
    rule_files = [p for pattern in config["rule_files"] for p in MONITORING.glob(pattern)]
    assert rule_files == [RULES]


def _rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(RULES)["groups"] for rule in group["rules"]]


def test_alerts_cover_latency_errors_dead_servers_and_a_full_kv_cache() -> None:
    alerts = {rule["alert"]: rule for rule in _rules() if "alert" in rule}
    assert {
        "LumosRunLatencyHigh",
        "LumosRunErrorRateHigh",
        "LumosModelServerDown",
        "LumosKVCacheNearFull",
    } <= set(alerts)
    assert 'up{job=~"planner|grounder"} == 0' in alerts["LumosModelServerDown"]["expr"]
    assert "vllm:kv_cache_usage_perc > 0.9" in alerts["LumosKVCacheNearFull"]["expr"]
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
        assert "for" in rule, f"{name} would fire on a single bad evaluation"


def test_recording_rules_give_p50_p95_p99_per_module() -> None:
    recorded = {rule["record"]: rule["expr"] for rule in _rules() if "record" in rule}
    for q, name in (("0.50", "p50"), ("0.95", "p95"), ("0.99", "p99")):
        expr = recorded[f"module:lumos_module_latency_seconds:{name}_5m"]
        assert expr.startswith(f"histogram_quantile({q}, sum by (module, le)")


@pytest.mark.parametrize("rule", _rules(), ids=lambda r: r.get("alert") or r["record"])
def test_rules_read_only_exported_series(rule) -> None:
    unknown = metric_names(rule["expr"]) - KNOWN_SERIES
    assert not unknown, f"no service exports {sorted(unknown)}"


# --- Grafana ---------------------------------------------------------------------------------


def test_metric_name_parser_reads_promql() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (module, le) (rate(lumos_module_latency_seconds_bucket{job=~"a|b"}[$__rate_interval])))'
        " / on (job) group_left up or vllm:kv_cache_usage_perc offset 5m > bool 1e3"
    )
    assert metric_names(expr) == {
        "lumos_module_latency_seconds_bucket",
        "up",
        "vllm:kv_cache_usage_perc",
    }


def test_committed_dashboards_are_what_dashboards_py_generates() -> None:
    stale = dashboards.stale_files()
    assert not stale, f"{[p.name for p in stale]} are stale: run `python -m monitoring.dashboards`"
    assert set(_dashboard_files()) == set(dashboards.DASHBOARDS)


@pytest.mark.parametrize("name", sorted(dashboards.DASHBOARDS))
def test_dashboard_queries_read_only_exported_series(name: str) -> None:
    board = _dashboard_files()[name]
    for title, expr in _panel_targets(board):
        unknown = metric_names(expr) - KNOWN_SERIES
        assert not unknown, f"{name} / {title}: no service exports {sorted(unknown)}"
    for variable in board["templating"]["list"]:
        series = re.search(r"label_values\(([\w:]+),", variable["definition"]).group(1)
        assert series in KNOWN_SERIES, f"{name} variable {variable['name']}: {series}"


def test_agent_latency_dashboard_shows_what_an_operator_asks_first() -> None:
    board = _dashboard_files()["agent-latency.json"]
    assert board["title"] == "Agent latency"
    reads = {series for _, expr in _panel_targets(board) for series in metric_names(expr)}
    assert {
        "lumos_run_duration_seconds_bucket",
        "lumos_module_latency_seconds_bucket",
        "lumos_tool_latency_seconds_bucket",
        "lumos_run_steps_bucket",
        "lumos_grounding_parse_failures_total",
        "lumos_runs_in_progress",
        "lumos_module_tokens_total",
    } <= reads
    run_latency = [e for _, e in _panel_targets(board) if "lumos_run_duration_seconds_bucket" in e]
    assert {re.match(r"histogram_quantile\(([\d.]+)", e).group(1) for e in run_latency} == {
        "0.5",
        "0.95",
        "0.99",
    }
    assert all("sum by (domain, le)" in e for e in run_latency)


def test_model_servers_dashboard_shows_latency_queue_and_caches() -> None:
    board = _dashboard_files()["model-servers.json"]
    assert board["title"] == "Model servers"
    reads = {series for _, expr in _panel_targets(board) for series in metric_names(expr)}
    latency = {f"{h}_bucket" for h in VLLM_HISTOGRAMS}
    assert latency | set(VLLM_GAUGES) | {f"{c}_total" for c in VLLM_COUNTERS} <= reads
    (hit_rate,) = [e for t, e in _panel_targets(board) if t == "Prefix-cache hit rate"]
    assert (
        hit_rate.index("prefix_cache_hits_total")
        < hit_rate.index("/")
        < hit_rate.index("prefix_cache_queries_total")
    )


@pytest.mark.parametrize("name", sorted(dashboards.DASHBOARDS))
def test_dashboard_layout_is_well_formed(name: str) -> None:
    board = _dashboard_files()[name]
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    datasource_uid = load_yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")
    (uid,) = [d["uid"] for d in datasource_uid["datasources"]]
    occupied: set[tuple[int, int]] = set()
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        cells = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & occupied, f"{panel['title']} overlaps another panel"
        occupied |= cells
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == uid
            assert panel["targets"], panel["title"]


def test_compose_runs_prometheus_3() -> None:
    """Prometheus 2 would store vLLM's `vllm:x` samples as `vllm_x` (see _TextExposition)."""
    image = load_yaml(COMPOSE)["services"]["prometheus"]["image"]
    major = int(re.fullmatch(r"prom/prometheus:v(\d+)\.\d+\.\d+", image).group(1))
    assert major >= 3, image


def test_grafana_provisioning_reads_the_mounted_dashboards() -> None:
    provider = load_yaml(GRAFANA / "provisioning" / "dashboards" / "lumos.yml")["providers"][0]
    grafana = load_yaml(COMPOSE)["services"]["grafana"]
    mounts = dict(v.split(":")[:2] for v in grafana["volumes"])
    assert mounts["./monitoring/grafana/dashboards"] == provider["options"]["path"]
    assert mounts["./monitoring/grafana/provisioning"] == "/etc/grafana/provisioning"
    datasource = load_yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")[
        "datasources"
    ][0]
    assert datasource["url"] == "http://prometheus:9090"


# --- a real Prometheus running the dashboards' queries -----------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Traffic:
    """Keeps the gateway's, the executor's and a fake vLLM's metrics moving, as under load."""

    def __init__(self) -> None:
        self.gateway = GatewayMetrics()
        self.executor = ExecutorMetrics()
        self.vllm = CollectorRegistry()
        self._vllm_histograms = [
            Histogram(n, n, ["model_name"], registry=self.vllm) for n in VLLM_HISTOGRAMS
        ]
        self._vllm_gauges = [Gauge(n, n, ["model_name"], registry=self.vllm) for n in VLLM_GAUGES]
        self._vllm_counters = [
            Counter(n, n, ["model_name"], registry=self.vllm) for n in VLLM_COUNTERS
        ]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def tick(self, i: int) -> None:
        g = self.gateway
        g.runs_in_progress.set(i % 4)
        g.observe_event(
            RunEvent(
                type="subgoal",
                step=1,
                data={
                    "latency_s": 0.8,
                    "prompt_tokens": 500,
                    "completion_tokens": 20,
                    "model": "lumos-plan",
                },
            )
        )
        g.observe_event(
            RunEvent(
                type="actions",
                step=1,
                data={
                    "latency_s": 0.4,
                    "prompt_tokens": 600,
                    "completion_tokens": 30,
                    "model": "lumos-ground-maths" if i % 2 else "lumos-ground",
                },
            )
        )
        g.observe_event(
            RunEvent(
                type="results",
                step=1,
                data={"latency_s": 0.05, "executed": [{"name": "Calculator", "elapsed_s": 0.01}]},
            )
        )
        if i % 5 == 0:
            g.observe_event(RunEvent(type="error", data={"reason": "grounding_parse_error"}))
        outcome = "failed" if i % 5 == 0 else "succeeded"
        g.observe_finished(
            domain="maths",
            formulation="iterative",
            outcome=outcome,
            duration_s=3.0 + i % 3,
            steps=3,
        )
        e = self.executor
        e.latency.labels("Calculator", "maths").observe(0.01)
        e.cache_hits.labels("Calculator", "maths").inc()
        e.cache_misses.labels("Calculator", "maths").inc(i % 2)
        e.errors.labels("Calculator", "maths", "tool").inc(i % 2)
        for h in self._vllm_histograms:
            h.labels("lumos-plan").observe(0.02 * (1 + i % 3))
        for gauge in self._vllm_gauges:
            gauge.labels("lumos-plan").set(i % 3)
        for counter in self._vllm_counters:
            counter.labels("lumos-plan").inc(10)

    def _run(self) -> None:
        i = 0
        while not self._stop.wait(0.05):
            self.tick(i)
            i += 1

    def __enter__(self) -> _Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class _TextExposition(http.server.BaseHTTPRequestHandler):
    """/metrics in the classic text format whatever the Accept header asks for.

    The local Prometheus is 2.x, which asks for OpenMetrics, and prometheus_client answers
    that with `vllm_...` for `vllm:...` sample names (prometheus/client_python#1177). The
    compose stack's Prometheus 3 negotiates names intact (test_compose_runs_prometheus_3);
    this serves what it would get.
    """

    registry: CollectorRegistry

    def do_GET(self) -> None:
        body = generate_latest(self.registry)
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPE_LATEST)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _serve(registry: CollectorRegistry) -> http.server.ThreadingHTTPServer:
    handler = type("Handler", (_TextExposition,), {"registry": registry})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Prometheus scraping the three registries every second; yields its base URL."""
    binary = require_binary("prometheus", "prometheus")
    tmp_path = tmp_path_factory.mktemp("prometheus")
    with _Traffic() as traffic:
        registries = {
            "gateway": traffic.gateway.registry,
            "executor": traffic.executor.registry,
            "planner": traffic.vllm,
        }
        servers = {job: _serve(registry) for job, registry in registries.items()}
        jobs = {job: f"127.0.0.1:{server.server_address[1]}" for job, server in servers.items()}
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": [target]}]}
                for job, target in jobs.items()
            ],
        }
        (tmp_path / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
        port = _free_port()
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        base_url = f"http://127.0.0.1:{port}"
        try:
            _wait_for_scrapes(base_url, process, jobs)
            yield base_url
        finally:
            process.terminate()
            process.wait(timeout=30)
            for server in servers.values():
                server.shutdown()
                server.server_close()


def _query(base_url: str, expr: str) -> dict[str, Any]:
    response = httpx.get(f"{base_url}/api/v1/query", params={"query": expr}, timeout=10)
    body = response.json()
    assert response.status_code == 200 and body["status"] == "success", f"{expr}: {body}"
    return body["data"]


# One counter per scraped job that moves under _Traffic.
MOVING = (
    "lumos_module_latency_seconds_count",
    "lumos_executor_tool_latency_seconds_count",
    "vllm:e2e_request_latency_seconds_count",
)


def _wait_for_scrapes(
    base_url: str, process: subprocess.Popen[bytes], jobs: dict[str, str]
) -> None:
    """Until every job's counters move (rate() needs two scrapes)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(
                f"prometheus exited with {process.returncode}: {process.stderr.read().decode()[-2000:]}"
            )
        try:
            moving = _query(base_url, " or ".join(f"rate({c}[1m]) > 0" for c in MOVING))
            if {sample["metric"]["job"] for sample in moving["result"]} == set(jobs):
                return
        except (httpx.HTTPError, AssertionError, ValueError):
            pass
        time.sleep(0.5)
    pytest.fail("prometheus did not scrape the test targets within 60 s")


GRAFANA_VARIABLES = {"__rate_interval": "1m", "domain": ".*", "server": ".*"}


def _as_prometheus_sees_it(expr: str) -> str:
    """Grafana's variable substitution: `$__rate_interval` -> 1m, multi-value `All` -> .*"""

    def value(match: re.Match[str]) -> str:
        assert match.group(1) in GRAFANA_VARIABLES, f"unknown dashboard variable ${match.group(1)}"
        return GRAFANA_VARIABLES[match.group(1)]

    return re.sub(r"\$(\w+)", value, expr)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(dashboards.DASHBOARDS))
def test_every_dashboard_query_runs_on_a_real_prometheus(prometheus, name: str) -> None:
    base_url = prometheus
    board = _dashboard_files()[name]
    for title, expr in _panel_targets(board):
        data = _query(base_url, _as_prometheus_sees_it(expr))
        if "histogram_quantile" in expr:
            values = [float(sample["value"][1]) for sample in data["result"]]
            assert values, f"{name} / {title}: no data for {expr}"
            assert all(math.isfinite(v) for v in values), f"{name} / {title}: {values}"
    for variable in board["templating"]["list"]:
        series = re.search(r"label_values\(([\w:]+),", variable["definition"]).group(1)
        assert _query(base_url, series)["result"], f"variable {variable['name']} would list nothing"
