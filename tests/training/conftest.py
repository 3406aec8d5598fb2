"""Fixtures of the training tests: the evaluation rows and a tiny local model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from eval.data_dir import REPO_EVAL_DATA as DATA_DIR


def _rows(name: str) -> list[dict[str, Any]]:
    path = DATA_DIR / name / "dev.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


@pytest.fixture(scope="session")
def gsm8k_rows() -> list[dict[str, Any]]:
    return _rows("gsm8k")


@pytest.fixture(scope="session")
def svamp_rows() -> list[dict[str, Any]]:
    return _rows("svamp")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random LLaMA (hidden 64, one head) built by the repository's scripts/build_tiny_model.py."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from scripts.build_tiny_model import main

    out = tmp_path_factory.mktemp("tiny") / "tiny-llama"
    args = [
        "--out",
        str(out),
        "--hidden",
        "64",
        "--heads",
        "1",  # head size 64: vLLM's CPU attention rejects 16
        "--vocab-size",
        "2048",
        "--data-dir",
        str(DATA_DIR),
    ]
    assert main(args) == 0
    return out


@pytest.fixture(scope="session")
def tiny_tokenizer() -> Any:
    pytest.importorskip("transformers")
    from scripts.build_tiny_model import FALLBACK_TEXT, LUMOS_TEXT, build_tokenizer

    return build_tokenizer(FALLBACK_TEXT + LUMOS_TEXT * 50, 2048)
