"""`lumos bench soak`'s report, from outcomes and memory samples (no stack needed)."""

from __future__ import annotations

import os

from bench.soak import RunOutcome, Sample, markdown, process_name, stack_processes, summarize


def test_the_soak_report_buckets_runs_failures_latency_and_memory_by_minute():
    outcomes = [
        RunOutcome(10, 4.0, "succeeded"),
        RunOutcome(30, 6.0, "succeeded"),
        RunOutcome(50, 9.0, "failed", "grounding_parse_error"),
        RunOutcome(70, 5.0, "succeeded"),
        RunOutcome(119, 7.0, "http_429", "queue_full"),
        RunOutcome(125, 8.0, "succeeded"),  # drained after the end: the last bucket
    ]
    samples = [
        Sample(0, {"gateway": 100.0, "redis": 10.0}, 1.0),
        Sample(55, {"gateway": 110.0, "redis": 10.0}, 1.5),
        Sample(60, {"gateway": 120.0, "redis": 11.0}, 1.6),
        Sample(115, {"gateway": 126.0, "redis": 11.0}, 1.8),
    ]
    report = summarize(outcomes, samples, 60, {"minutes": 2})
    first, second, third = report.minutes
    assert (first["runs"], first["succeeded"]) == (3, 2)
    assert first["failures_by_reason"] == {"grounding_parse_error": 1}
    assert first["latency_p50_s"] == 5.0  # of the succeeded runs only
    assert first["rss_mib"] == {"gateway": 110.0, "redis": 10.0}  # the bucket's last sample
    assert second["failures_by_reason"] == {"queue_full": 1}
    assert (second["redis_used_mib"], third["runs"], third["rss_mib"]) == (1.8, 1, {})
    totals = report.totals
    assert (totals["runs"], totals["succeeded"]) == (6, 4)
    assert totals["failures_by_reason"] == {"grounding_parse_error": 1, "queue_full": 1}
    # growth after the warm-up minute: 120 -> 126 MiB
    assert totals["rss_growth_after_warmup_pct"] == {"gateway": 5.0, "redis": 0.0}
    table = markdown(report)
    assert "| 1 | 3 | 2 | grounding_parse_error 1 | 5.0 |" in table
    assert "gateway +5.0" in table


def test_the_processes_of_the_stack_are_found_under_the_supervisor():
    found = stack_processes(os.getpid())
    assert os.getpid() in found.values()
    assert process_name(2**22 + 12345) is None  # gone
