"""Where the evaluation data is: ``data/eval/`` of this repository, or ``LUMOS_EVAL_DATA_DIR``.

Standard library only, so the scripts that run under the vLLM environment's Python
(`scripts/build_tiny_model.py`) can import it too.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "LUMOS_EVAL_DATA_DIR"
REPO_EVAL_DATA = Path(__file__).resolve().parents[1] / "data" / "eval"


def eval_data_dir() -> Path:
    """The folder holding ``<benchmark>/dev.jsonl``: ``$LUMOS_EVAL_DATA_DIR`` when set."""
    override = os.environ.get(ENV_VAR, "").strip()
    return Path(override) if override else REPO_EVAL_DATA
