"""Grafana dashboards as code: the one source of monitoring/grafana/dashboards/*.json.

    python -m monitoring.dashboards           # write the JSON files
    python -m monitoring.dashboards --check   # exit 1 when a committed file is stale

Plain dictionaries in Grafana's dashboard JSON model (schema 39); a few builders keep the
panels short. tests/deploy/test_monitoring.py checks the committed files against this.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

Panel = dict[str, Any]

DASHBOARD_DIR = Path(__file__).parent / "grafana" / "dashboards"
# Matches the uid in grafana/provisioning/datasources/prometheus.yml.
DATASOURCE = {"type": "prometheus", "uid": "prometheus"}
RATE = "$__rate_interval"  # Grafana's scrape-interval-aware rate window
QUANTILES = (0.5, 0.95, 0.99)
ROW_HEIGHT = 8
GRID_WIDTH = 24


# --- PromQL -----------------------------------------------------------------------------


def selector(**matchers: str) -> str:
    """`{a=~"x",b="y"}`; a value starting with `~` or `!` is a regex or negative match."""
    if not matchers:
        return ""
    parts = []
    for label, value in matchers.items():
        if value.startswith(("~", "!")):
            op, value = ("=~" if value[0] == "~" else "!~"), value[1:]
        else:
            op = "="
        parts.append(f'{label}{op}"{value}"')
    return "{" + ",".join(parts) + "}"


def rate(metric: str, sel: str = "") -> str:
    return f"rate({metric}{sel}[{RATE}])"


def quantile(q: float, histogram: str, by: Sequence[str] = (), sel: str = "") -> str:
    """The q-quantile of a Prometheus histogram over the rate window, per `by` labels."""
    labels = ", ".join([*by, "le"])
    return f"histogram_quantile({q:g}, sum by ({labels}) ({rate(histogram + '_bucket', sel)}))"


def ratio(numerator: str, denominator: str) -> str:
    return f"({numerator}) / ({denominator})"


# --- panels -------------------------------------------------------------------------------


def target(expr: str, legend: str = "") -> dict[str, Any]:
    return {"datasource": DATASOURCE, "expr": expr, "legendFormat": legend or "__auto"}


def quantile_targets(histogram: str, by: Sequence[str], sel: str = "") -> list[dict[str, Any]]:
    """p50/p95/p99 of `histogram`, one series per `by` label combination."""
    label = " ".join("{{" + name + "}}" for name in by)
    return [
        target(quantile(q, histogram, by, sel), f"{label} p{round(q * 100)}".strip())
        for q in QUANTILES
    ]


def timeseries(
    title: str,
    targets: Sequence[dict[str, Any]],
    *,
    unit: str = "s",
    description: str = "",
    stacked: bool = False,
    max_value: float | None = None,
) -> Panel:
    defaults: dict[str, Any] = {
        "unit": unit,
        "min": 0,
        "custom": {
            "drawStyle": "line",
            "lineWidth": 1,
            "fillOpacity": 20 if stacked else 0,
            "showPoints": "never",
            "spanNulls": True,
            "stacking": {"mode": "normal" if stacked else "none", "group": "A"},
        },
    }
    if max_value is not None:
        defaults["max"] = max_value
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": _with_ref_ids(targets),
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "legend": {"displayMode": "table", "placement": "bottom", "calcs": ["mean", "max"]},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
    }


def stat(
    title: str, targets: Sequence[dict[str, Any]], *, unit: str = "none", description: str = ""
) -> Panel:
    return {
        "type": "stat",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": _with_ref_ids(targets),
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "value",
            "graphMode": "area",
            "textMode": "auto",
        },
    }


def _with_ref_ids(targets: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**t, "refId": chr(ord("A") + i)} for i, t in enumerate(targets)]


def query_variable(name: str, label: str, query: str) -> dict[str, Any]:
    """A multi-select dashboard variable over a label's values, `All` meaning any value."""
    return {
        "type": "query",
        "name": name,
        "label": label,
        "datasource": DATASOURCE,
        "query": {"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
        "definition": query,
        "refresh": 2,
        "multi": True,
        "includeAll": True,
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "sort": 1,
    }


def dashboard(
    uid: str,
    title: str,
    description: str,
    rows: Sequence[tuple[str, Sequence[Panel]]],
    variables: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    """A dashboard of titled rows; the panels of a row share its width equally."""
    panels: list[Panel] = []
    y = 0
    next_id = 1
    for row_title, row_panels in rows:
        panels.append(
            {
                "type": "row",
                "title": row_title,
                "id": next_id,
                "collapsed": False,
                "panels": [],
                "gridPos": {"h": 1, "w": GRID_WIDTH, "x": 0, "y": y},
            }
        )
        next_id += 1
        y += 1
        width = GRID_WIDTH // len(row_panels)
        for i, panel in enumerate(row_panels):
            grid = {"h": ROW_HEIGHT, "w": width, "x": i * width, "y": y}
            panels.append({**panel, "id": next_id, "gridPos": grid})
            next_id += 1
        y += ROW_HEIGHT
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["lumos"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "annotations": {"list": []},
        "templating": {"list": list(variables)},
        "panels": panels,
    }


# --- the dashboards -----------------------------------------------------------------------


def agent_latency() -> dict[str, Any]:
    """Where a run's time goes: runs, modules, tools, errors, tokens (gateway's metrics)."""
    domain = selector(domain="~$domain")
    finished = "lumos_run_duration_seconds_count"
    failed = selector(domain="~$domain", outcome="!succeeded|cancelled")
    runs = (
        "Runs",
        [
            timeseries(
                "Run latency by domain (p50 / p95 / p99)",
                quantile_targets("lumos_run_duration_seconds", ["domain"], domain),
                description="Wall time of finished runs, from first start to the final answer.",
            ),
            timeseries(
                "Steps per run by domain (p50 / p95, mean)",
                [
                    target(quantile(0.5, "lumos_run_steps", ["domain"], domain), "{{domain}} p50"),
                    target(quantile(0.95, "lumos_run_steps", ["domain"], domain), "{{domain}} p95"),
                    target(
                        ratio(
                            f"sum by (domain) ({rate('lumos_run_steps_sum', domain)})",
                            f"sum by (domain) ({rate('lumos_run_steps_count', domain)})",
                        ),
                        "{{domain}} mean",
                    ),
                ],
                unit="none",
                description="Plan/ground/execute iterations of finished runs.",
            ),
            stat(
                "Runs in progress",
                [target("sum(lumos_runs_in_progress)", "runs")],
                description="Runs the gateway's workers execute now, all replicas.",
            ),
        ],
    )
    modules = (
        "Modules",
        [
            timeseries(
                "Latency per module (p50 / p95 / p99)",
                quantile_targets("lumos_module_latency_seconds", ["module"]),
                description="One call to the planner, the grounder or the executor, as the gateway sees it.",
            ),
            timeseries(
                "Latency per model (p50 / p95)",
                [
                    target(
                        quantile(q, "lumos_model_latency_seconds", ["module", "model"]),
                        f"{{{{module}}}} {{{{model}}}} p{round(q * 100)}",
                    )
                    for q in (0.5, 0.95)
                ],
                description="One planner or grounder call, by the served model or adapter its "
                "route chose (LUMOS_ROUTES_FILE): compare adapters, domains' checkpoints, pools.",
            ),
            timeseries(
                "Time spent per module",
                [
                    target(
                        f"sum by (module) ({rate('lumos_module_latency_seconds_sum')})",
                        "{{module}}",
                    )
                ],
                unit="s",
                stacked=True,
                description="Seconds of module calls per second: where the time of all runs goes.",
            ),
            timeseries(
                "Tokens per module",
                [
                    target(
                        f"sum by (module, kind) ({rate('lumos_module_tokens_total')})",
                        "{{module}} {{kind}}",
                    )
                ],
                unit="short",
                description="Prompt and completion tokens per second of planner and grounder calls.",
            ),
        ],
    )
    tools = (
        "Tools",
        [
            timeseries(
                "Tool latency p95 by tool",
                [target(quantile(0.95, "lumos_tool_latency_seconds", ["tool"]), "{{tool}}")],
                description="Execution time of one action, as the executor reports it to the gateway.",
            ),
            timeseries(
                "Tool calls by tool",
                [target(f"sum by (tool) ({rate('lumos_tool_latency_seconds_count')})", "{{tool}}")],
                unit="reqps",
            ),
            timeseries(
                "Executor: tool latency p95 by domain",
                [
                    target(
                        quantile(0.95, "lumos_executor_tool_latency_seconds", ["tool", "domain"]),
                        "{{domain}} {{tool}}",
                    )
                ],
                description="Measured inside the executor, cache hits included.",
            ),
            timeseries(
                "Executor: result-cache hit ratio",
                [
                    target(
                        ratio(
                            f"sum by (tool) ({rate('lumos_executor_cache_hits_total')})",
                            f"sum by (tool) ({rate('lumos_executor_cache_hits_total')})"
                            f" + sum by (tool) ({rate('lumos_executor_cache_misses_total')})",
                        ),
                        "{{tool}}",
                    )
                ],
                unit="percentunit",
                max_value=1,
                description="Cacheable (deterministic) actions answered from Redis.",
            ),
        ],
    )
    errors = (
        "Errors",
        [
            timeseries(
                "Finished runs by outcome",
                [target(f"sum by (outcome) ({rate(finished, domain)})", "{{outcome}}")],
                unit="reqps",
                stacked=True,
            ),
            timeseries(
                "Run error rate",
                [
                    target(
                        ratio(f"sum({rate(finished, failed)})", f"sum({rate(finished, domain)})"),
                        "failed",
                    )
                ],
                unit="percentunit",
                max_value=1,
                description="Finished runs that did not succeed; cancelled runs are not errors.",
            ),
            timeseries(
                "Run errors by reason, parse failures, tool errors",
                [
                    target(
                        f"sum by (reason) ({rate('lumos_run_errors_total')})",
                        "run error: {{reason}}",
                    ),
                    target(
                        f"sum({rate('lumos_grounding_parse_failures_total')})",
                        "grounding parse failures",
                    ),
                    target(
                        f"sum by (tool, kind) ({rate('lumos_executor_tool_errors_total')})",
                        "tool error: {{tool}} ({{kind}})",
                    ),
                ],
                unit="short",
                description="Per second. Parse failures: grounder outputs that were not a valid action list.",
            ),
            timeseries(
                "Feedback: mean score by domain, corrections",
                [
                    target(
                        ratio(
                            f"sum by (domain) ({rate('lumos_run_feedback_score_sum', domain)})",
                            f"sum by (domain) ({rate('lumos_run_feedback_score_count', domain)})",
                        ),
                        "{{domain}} mean score",
                    ),
                    target(
                        ratio(
                            f"sum by (domain) ({rate('lumos_run_feedback_corrections_total', domain)})",
                            f"sum by (domain) ({rate('lumos_run_feedback_score_count', domain)})",
                        ),
                        "{{domain}} corrected",
                    ),
                ],
                unit="percentunit",
                max_value=1,
                description="POST /agent/runs/{id}/feedback: the mean score (0 wrong .. 1 right) "
                "and the share of feedback that gave a corrected answer.",
            ),
        ],
    )
    return dashboard(
        "lumos-agent-latency",
        "Agent latency",
        "Lumos agent runs: latency by domain and module, tools, steps, errors, tokens.",
        [runs, modules, tools, errors],
        variables=[
            query_variable(
                "domain", "Domain", "label_values(lumos_run_duration_seconds_count, domain)"
            )
        ],
    )


def model_servers() -> dict[str, Any]:
    """vLLM's own metrics of the planner and grounder servers, per server (job)."""
    sel = selector(job="~$server")

    def per_server(histogram: str) -> list[dict[str, Any]]:
        return quantile_targets(histogram, ["job"], sel)

    # vLLM >= 0.10 names it inter_token_latency; older releases time_per_output_token.
    inter_token = [
        target(
            f"{quantile(q, 'vllm:inter_token_latency_seconds', ['job'], sel)}"
            f" or {quantile(q, 'vllm:time_per_output_token_seconds', ['job'], sel)}",
            f"{{{{job}}}} p{round(q * 100)}",
        )
        for q in QUANTILES
    ]
    latency = (
        "Latency",
        [
            timeseries(
                "Time to first token (p50 / p95 / p99)",
                per_server("vllm:time_to_first_token_seconds"),
            ),
            timeseries("Inter-token latency (p50 / p95 / p99)", inter_token),
            timeseries(
                "End-to-end request latency (p50 / p95 / p99)",
                per_server("vllm:e2e_request_latency_seconds"),
            ),
        ],
    )
    load = (
        "Load",
        [
            timeseries(
                "Requests waiting / running",
                [
                    target(f"sum by (job) (vllm:num_requests_waiting{sel})", "{{job}} waiting"),
                    target(f"sum by (job) (vllm:num_requests_running{sel})", "{{job}} running"),
                ],
                unit="none",
                description="Waiting requests mean the server is saturated (KV cache or batch size).",
            ),
            timeseries(
                "KV-cache use",
                [
                    target(
                        f"max by (job, instance) (vllm:kv_cache_usage_perc{sel})",
                        "{{job}} {{instance}}",
                    )
                ],
                unit="percentunit",
                max_value=1,
                description="Above 90% for 5 minutes raises LumosKVCacheNearFull.",
            ),
            timeseries(
                "Prefix-cache hit rate",
                [
                    target(
                        ratio(
                            f"sum by (job) ({rate('vllm:prefix_cache_hits_total', sel)})",
                            f"sum by (job) ({rate('vllm:prefix_cache_queries_total', sel)})",
                        ),
                        "{{job}}",
                    )
                ],
                unit="percentunit",
                max_value=1,
                description="Prompt tokens served from the prefix cache. Each step of a run extends "
                "the previous prompt, so with per-run replica affinity this should approach 1.",
            ),
        ],
    )
    throughput = (
        "Throughput",
        [
            timeseries(
                "Tokens per second",
                [
                    target(
                        f"sum by (job) ({rate('vllm:prompt_tokens_total', sel)})", "{{job}} prompt"
                    ),
                    target(
                        f"sum by (job) ({rate('vllm:generation_tokens_total', sel)})",
                        "{{job}} generation",
                    ),
                ],
                unit="short",
            ),
            timeseries(
                "Requests per second",
                [
                    target(
                        f"sum by (job) ({rate('vllm:e2e_request_latency_seconds_count', sel)})",
                        "{{job}}",
                    )
                ],
                unit="reqps",
            ),
            stat(
                "Servers up",
                [target('sum by (job) (up{job=~"planner|grounder"})', "{{job}}")],
                description="Scrape targets answering; LumosModelServerDown fires after 2 minutes at 0.",
            ),
        ],
    )
    return dashboard(
        "lumos-model-servers",
        "Model servers",
        "vLLM planner and grounder servers: latency, queue, KV and prefix cache, tokens.",
        [latency, load, throughput],
        variables=[
            query_variable("server", "Server", "label_values(vllm:num_requests_running, job)")
        ],
    )


DASHBOARDS = {"agent-latency.json": agent_latency, "model-servers.json": model_servers}


def render(board: dict[str, Any]) -> str:
    return json.dumps(board, indent=2, sort_keys=True) + "\n"


def stale_files(directory: Path = DASHBOARD_DIR) -> list[Path]:
    """The dashboard files that are missing or differ from what this module generates."""
    return [
        directory / name
        for name, build in DASHBOARDS.items()
        if not (directory / name).is_file() or (directory / name).read_text() != render(build())
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate the Grafana dashboards of Lumos.")
    parser.add_argument(
        "--check", action="store_true", help="only report stale files, exit 1 if any"
    )
    parser.add_argument("--out", type=Path, default=DASHBOARD_DIR)
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files(args.out)
        for path in stale:
            print(f"{path} is out of date; run `python -m monitoring.dashboards`", file=sys.stderr)
        return 1 if stale else 0
    args.out.mkdir(parents=True, exist_ok=True)
    for name, build in DASHBOARDS.items():
        (args.out / name).write_text(render(build()))
        print(f"wrote {args.out / name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
