"""The evaluation report: a Markdown table per benchmark and a PNG of accuracy and latency.

Every number is computed from the predictions files alone, so a report can be rebuilt at any
time (``lumos eval report``). Metric means are over all questions, failed runs counting 0;
steps and latency are over the runs that did not fail (a refused connection says nothing
about how long a run takes).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eval.baselines import METHODS
from eval.metrics import mean, percentile
from eval.paper_numbers import paper_number
from eval.scoring import METRICS, Metric


@dataclass(frozen=True)
class MetricRow:
    metric: Metric
    value: float | None
    n_scored: int
    paper: float | None
    paper_confirmed: bool


@dataclass(frozen=True)
class BenchmarkSummary:
    benchmark: str
    formulation: str | None
    n: int
    errors: int
    mean_steps: float | None
    latency_p50_s: float | None
    latency_p95_s: float | None
    rows: list[MetricRow] = field(default_factory=list)
    hit_max_steps: int = 0  # runs (not failed) that ended at the step limit
    finished_known: int = 0  # runs (not failed) whose record says what ended them
    groundings: int = 0
    parse_errors: int = 0
    actions: int = 0
    actions_failed: int = 0
    planned_vs_gold: list[tuple[int, int]] = field(default_factory=list)
    """(planned, gold) steps of the runs (not failed) whose record has both."""

    @property
    def headline(self) -> MetricRow | None:
        """The benchmark's main metric, the one plotted against the paper."""
        return next(
            (row for row in self.rows if row.metric.headline), self.rows[0] if self.rows else None
        )


def summarize(benchmark: str, records: Sequence[dict[str, Any]]) -> BenchmarkSummary:
    ok = [r for r in records if r.get("error") is None]
    latencies = [float(r["latency_s"]) for r in ok if r.get("latency_s") is not None]
    steps = [float(r["steps"]) for r in ok if r.get("steps") is not None]
    formulations = {r.get("formulation") for r in records}
    # the paper's numbers are Lumos' own: not shown beside a non-agent baseline's rows
    baseline = bool(formulations & set(METHODS))
    rows = []
    for metric in METRICS[benchmark]:
        values = [
            float(r["scores"][metric.key]) for r in records if metric.key in r.get("scores", {})
        ]
        number, confirmed = (None, False)
        if metric.paper_key is not None and not baseline:
            number, confirmed = paper_number(benchmark, metric.paper_key)
        rows.append(
            MetricRow(
                metric, mean(values), len(values), number.value if number else None, confirmed
            )
        )
    return BenchmarkSummary(
        benchmark=benchmark,
        formulation=formulations.pop() if len(formulations) == 1 else None,
        n=len(records),
        errors=len(records) - len(ok),
        mean_steps=mean(steps),
        latency_p50_s=percentile(latencies, 50),
        latency_p95_s=percentile(latencies, 95),
        rows=rows,
        hit_max_steps=sum(1 for r in ok if r.get("finished_by") == "max_steps"),
        finished_known=sum(1 for r in ok if r.get("finished_by") is not None),
        groundings=sum(int(r.get("groundings") or 0) for r in records),
        parse_errors=sum(int(r.get("parse_errors") or 0) for r in records),
        actions=sum(int(r.get("actions") or 0) for r in records),
        actions_failed=sum(int(r.get("actions_failed") or 0) for r in records),
        planned_vs_gold=[
            (int(r["planned_steps"]), int(r["gold_steps"]))
            for r in ok
            if r.get("planned_steps") is not None and r.get("gold_steps") is not None
        ],
    )


def _rate(part: int, whole: int) -> str:
    return f"{part}/{whole} ({100 * part / whole:.1f} %)" if whole else "-"


def agent_line(s: BenchmarkSummary) -> str | None:
    """The agent's own health: step limit reached, groundings parsed, actions executed."""
    if not s.finished_known and not s.groundings:
        return None
    return (
        f"Runs that hit max_steps: {_rate(s.hit_max_steps, s.finished_known)}; groundings "
        f"that parsed: {_rate(s.groundings - s.parse_errors, s.groundings)}; actions executed "
        f"without error: {_rate(s.actions - s.actions_failed, s.actions)}."
    )


def planning_line(s: BenchmarkSummary) -> str | None:
    """Whether the planner plans as many steps as the problem needs (maths: gold steps known)."""
    pairs = s.planned_vs_gold
    if not pairs:
        return None
    several = sum(1 for planned, _ in pairs if planned > 1)
    close = sum(1 for planned, gold in pairs if abs(planned - gold) <= 1)
    planned_mean = sum(planned for planned, _ in pairs) / len(pairs)
    gold_mean = sum(gold for _, gold in pairs) / len(pairs)
    return (
        f"Planned steps: more than one step in {_rate(several, len(pairs))}; "
        f"|planned - gold| <= 1 in {_rate(close, len(pairs))}; "
        f"mean planned {planned_mean:.2f} vs gold {gold_mean:.2f}."
    )


def _num(value: float | None, fmt: str = "{:.1f}") -> str:
    return "-" if value is None else fmt.format(value)


def _paper_cell(row: MetricRow) -> str:
    if row.paper is None:
        return "-"
    return f"{row.paper:.1f}" if row.paper_confirmed else f"{row.paper:.1f}†"


def markdown(summaries: Sequence[BenchmarkSummary]) -> str:
    lines = ["# Lumos evaluation", ""]
    lines.append(
        "Metrics in percent (WebShop: average reward x 100). Failed runs count as wrong; steps and "
        "latency are over runs that did not fail. Latency is each run's wall clock seen by the "
        "eval client; p50/p95 interpolate linearly between ranks."
    )
    daggers = False
    for s in summaries:
        title = s.benchmark if s.formulation is None else f"{s.benchmark} ({s.formulation})"
        lines += ["", f"## {title}", ""]
        lines.append(
            "| metric | ours | paper | n | errors | mean steps | latency p50 (s) | latency p95 (s) |"
        )
        lines.append("|---|---:|---:|---:|---:|---:|---:|---:|")
        for row in s.rows:
            if row.value is None:
                continue
            daggers = daggers or (row.paper is not None and not row.paper_confirmed)
            lines.append(
                f"| {row.metric.label} | {row.value * row.metric.scale:.1f} | {_paper_cell(row)} | {row.n_scored} "
                f"| {s.errors} | {_num(s.mean_steps, '{:.2f}')} | {_num(s.latency_p50_s, '{:.2f}')} "
                f"| {_num(s.latency_p95_s, '{:.2f}')} |"
            )
        if (health := agent_line(s)) is not None:
            lines += ["", health]
        if (planning := planning_line(s)) is not None:
            lines += ["", planning]
        if any(row.value is None and row.metric.key == "llm_acc" for row in s.rows):
            lines.append("")
            lines.append("LLM-judged accuracy: no judge configured (`--judge-url`).")
    lines += [
        "",
        "Paper column: Lumos-I 7B as published (arXiv 2311.05657); `-` where no number was found.",
    ]
    if daggers:
        lines.append(
            "† Listed for the paper by a third-party index (wizwand.com) without naming the model "
            "variant; not confirmed to be Lumos-I 7B. See eval/paper_numbers.py."
        )
    return "\n".join(lines) + "\n"


def plot(summaries: Sequence[BenchmarkSummary], path: Path) -> Path | None:
    """Headline metric (ours vs paper) and latency p50/p95 per benchmark; None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    names = [s.benchmark for s in summaries]
    heads = [s.headline for s in summaries]
    ours = [h.value * h.metric.scale if h and h.value is not None else 0.0 for h in heads]
    xs = range(len(names))
    fig, (ax_acc, ax_lat) = plt.subplots(1, 2, figsize=(max(8, 2.2 * len(names) + 4), 4.5))
    width = 0.38
    ax_acc.bar([x - width / 2 for x in xs], ours, width, label="ours")
    # A benchmark without a published number gets no paper bar; unconfirmed ones are hatched.
    with_paper = [
        (x, h) for x, h in zip(xs, heads, strict=True) if h is not None and h.paper is not None
    ]
    bars = ax_acc.bar(
        [x + width / 2 for x, _ in with_paper],
        [h.paper for _, h in with_paper],
        width,
        label="paper (hatched: variant unconfirmed)",
    )
    for bar, (_, h) in zip(bars, with_paper, strict=True):
        if not h.paper_confirmed:
            bar.set_hatch("//")
    ax_acc.set_xticks(
        list(xs), [f"{n}\n{h.metric.key if h else ''}" for n, h in zip(names, heads, strict=True)]
    )
    ax_acc.set_ylabel("percent (WebShop: reward x 100)")
    ax_acc.set_title("headline metric")
    ax_acc.set_ylim(0, 118)
    ax_acc.legend(loc="upper left", fontsize="small")
    ax_lat.bar(
        [x - width / 2 for x in xs], [s.latency_p50_s or 0.0 for s in summaries], width, label="p50"
    )
    ax_lat.bar(
        [x + width / 2 for x in xs], [s.latency_p95_s or 0.0 for s in summaries], width, label="p95"
    )
    ax_lat.set_xticks(list(xs), names)
    ax_lat.set_ylabel("seconds per run")
    ax_lat.set_title("run latency")
    ax_lat.legend(fontsize="small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(
    groups: Sequence[tuple[str, Sequence[dict[str, Any]]]], out_dir: Path
) -> tuple[Path, Path | None, list[BenchmarkSummary]]:
    """Write ``report.md`` and ``report.png`` into `out_dir` from (benchmark, records) groups."""
    summaries = [summarize(b, recs) for b, recs in groups if recs]
    out_dir.mkdir(parents=True, exist_ok=True)
    md_path = out_dir / "report.md"
    md_path.write_text(markdown(summaries), encoding="utf-8")
    png_path = plot(summaries, out_dir / "report.png") if summaries else None
    return md_path, png_path, summaries
