"""The soak of `lumos bench soak` in short: make run's stack (here on the session's tiny
model, without adapters) under steady load for 30 s, reported in 10-second buckets.

The long one, on the default model with the Lumos-mini adapters, is a command:
`lumos bench soak --minutes 10` (figures in RELIABILITY.md).
"""

from __future__ import annotations

import json

import pytest

from bench import soak
from tests.vllm_server import TINY_MODEL_DIR, VLLM_VENV, _unavailable, build_tiny_model

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

# The tiny model is random: a grounding can be cut before its first action is complete.
MODEL_NOISE = {"grounding_parse_error"}
# Its noise fills the prompt fast (512-token subgoals): past two steps a prompt can outgrow
# its 4096-token context, and vLLM refuses it (grounder_failed), as in the e2e tests.
MAX_STEPS = 2


def test_a_short_soak_completes_runs_and_reports_latency_and_memory_per_bucket(tmp_path):
    python = VLLM_VENV / "bin" / "python"
    if not python.exists():
        _unavailable(f"{VLLM_VENV} is missing; create it with scripts/setup_vllm.sh")
    model = build_tiny_model(python, TINY_MODEL_DIR)
    report = soak.run(
        tmp_path, minutes=0.5, concurrency=2, model=model, adapters="none",
        sample_s=2.0, bucket_s=10.0, ready_s=600, max_steps=MAX_STEPS,
    )  # fmt: skip
    totals = report.totals
    assert totals["runs"] > 0, report
    assert set(totals["failures_by_reason"]) <= MODEL_NOISE, totals
    assert totals["succeeded"] > 0 and totals["latency_p99_s"] is not None
    assert len(report.minutes) >= 3
    processes = set(report.minutes[0]["rss_mib"])
    assert {"gateway", "executor", "redis", "vllm-api"} <= processes, processes
    assert report.minutes[0]["redis_used_mib"] > 0
    saved = json.loads((tmp_path / "soak.json").read_text())
    assert saved["totals"]["runs"] == totals["runs"]
    assert "| minute |" in (tmp_path / "soak.md").read_text()
