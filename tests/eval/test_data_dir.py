"""The evaluation data ships with the repository and is found without any folder beside it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from eval.cli import build_parser
from eval.data_dir import ENV_VAR, REPO_EVAL_DATA, eval_data_dir
from eval.datasets import BENCHMARKS, load_questions

REPO = Path(__file__).resolve().parents[2]
SHIPPED = ("gsm8k", "hotpotqa", "strategyqa", "svamp")


def test_default_data_dir_is_the_repositorys_data_eval(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert eval_data_dir() == REPO / "data" / "eval"
    assert eval_data_dir().is_relative_to(REPO)
    for name in SHIPPED:
        assert (eval_data_dir() / BENCHMARKS[name].default_file).is_file(), name


def test_eval_cli_reads_the_repository_data_by_default(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    args = build_parser().parse_args(["run", "gsm8k"])
    assert args.data_dir == REPO_EVAL_DATA


def test_the_setting_points_every_reader_at_another_folder(monkeypatch, tmp_path):
    (tmp_path / "gsm8k").mkdir()
    row = {"question": "What is 2 + 2?", "answer": "2 + 2 = <<2+2=4>>4\n#### 4"}
    (tmp_path / "gsm8k" / "dev.jsonl").write_text(json.dumps(row) + "\n")
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    assert eval_data_dir() == tmp_path
    assert build_parser().parse_args(["run", "gsm8k"]).data_dir == tmp_path
    (question,) = load_questions(BENCHMARKS["gsm8k"])
    assert (question.task, question.gold) == ("What is 2 + 2?", "4")


def _readme_counts() -> dict[str, int]:
    text = (REPO_EVAL_DATA / "README.md").read_text(encoding="utf-8")
    return {
        m.group(1): int(m.group(2))
        for m in re.finditer(r"^\| `(\w+)/dev\.jsonl` \| (\d+) \|", text, flags=re.M)
    }


@pytest.mark.parametrize("name", SHIPPED)
def test_readme_gives_each_files_record_count(name, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    path = REPO_EVAL_DATA / name / "dev.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    assert _readme_counts()[name] == len(rows)
    assert len(load_questions(BENCHMARKS[name])) == len(rows)
