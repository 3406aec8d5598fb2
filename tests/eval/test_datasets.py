"""Benchmark loading: the task text the original harness builds, ids, and the file formats."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eval.data_dir import REPO_EVAL_DATA
from eval.datasets import (
    BENCHMARKS,
    DatasetError,
    get_benchmark,
    load_questions,
    question_id,
)


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_svamp_task_is_body_space_question_stripped(tmp_path):
    _jsonl(
        tmp_path / "svamp/dev.jsonl",
        [
            {
                "ID": "chal-9",
                "Body": " Dan had $ 3 left.",
                "Question": "How much did it cost? ",
                "Answer": 1.0,
            }
        ],
    )
    (q,) = load_questions(BENCHMARKS["svamp"], data_dir=tmp_path)
    assert q.task == "Dan had $ 3 left. How much did it cost?"
    assert (q.id, q.gold, q.meta["gold_value"]) == ("chal-9", "1", 1.0)


def test_gsm8k_and_qa_tasks_are_the_stripped_question(tmp_path):
    _jsonl(
        tmp_path / "gsm8k/dev.jsonl", [{"question": " How many?\n", "answer": "2+2=4\n#### 1,004"}]
    )
    _jsonl(
        tmp_path / "strategyqa/dev.jsonl", [{"question": "Would a pear sink? ", "answer": False}]
    )
    (g,) = load_questions(BENCHMARKS["gsm8k"], data_dir=tmp_path)
    (s,) = load_questions(BENCHMARKS["strategyqa"], data_dir=tmp_path)
    assert (g.task, g.gold) == ("How many?", "1004")
    assert (s.task, s.gold) == ("Would a pear sink?", "false")


def test_ids_are_stable_hashes_and_repeats_are_numbered(tmp_path):
    _jsonl(
        tmp_path / "hotpotqa/dev.jsonl",
        [
            {"question": "Q?", "answer": "a"},
            {"question": "Other?", "answer": "b"},
            {"question": "Q?", "answer": "a"},
        ],
    )
    ids = [q.id for q in load_questions(BENCHMARKS["hotpotqa"], data_dir=tmp_path)]
    first = question_id({}, "Q?")
    assert ids == [first, question_id({}, "Other?"), f"{first}#2"]
    assert first == question_id({"question": "ignored"}, "Q?")  # depends on the task text only
    assert question_id({"_id": "5a8b"}, "Q?") == "5a8b"


def test_limit_takes_the_first_questions(tmp_path):
    _jsonl(
        tmp_path / "hotpotqa/dev.jsonl", [{"question": f"Q{i}?", "answer": "a"} for i in range(5)]
    )
    assert [q.task for q in load_questions(BENCHMARKS["hotpotqa"], data_dir=tmp_path, limit=2)] == [
        "Q0?",
        "Q1?",
    ]


def test_mind2web_reads_the_compact_format_and_the_mind2web_release(tmp_path):
    compact = _jsonl(
        tmp_path / "m2w.jsonl",
        [
            {
                "id": "t1",
                "task": " Book a flight ",
                "steps": [{"op": "click", "pos_element_ids": [7]}],
            }
        ],
    )
    release = tmp_path / "test_domain" / "part0.json"
    release.parent.mkdir()
    release.write_text(
        json.dumps(
            [
                {
                    "annotation_id": "a1",
                    "confirmed_task": "Find a hotel",
                    "website": "example",
                    "actions": [
                        {
                            "operation": {"op": "TYPE", "value": "Paris"},
                            "pos_candidates": [{"backend_node_id": "42"}],
                            "neg_candidates": [],
                        }
                    ],
                }
            ]
        )
    )
    (c,) = load_questions(BENCHMARKS["mind2web"], path=compact)
    (r,) = load_questions(BENCHMARKS["mind2web"], path=release.parent)
    assert (c.id, c.task, c.gold) == (
        "t1",
        "Book a flight",
        [{"op": "CLICK", "value": "", "pos_element_ids": ["7"]}],
    )
    assert (r.id, r.task, r.gold) == (
        "a1",
        "Find a hotel",
        [{"op": "TYPE", "value": "Paris", "pos_element_ids": ["42"]}],
    )


def test_webshop_reads_instructions(tmp_path):
    path = _jsonl(
        tmp_path / "ws.jsonl",
        [{"id": "fixed_0", "instruction": "i need a red shirt, price lower than 40 dollars "}],
    )
    (q,) = load_questions(BENCHMARKS["webshop"], path=path)
    assert (q.id, q.task, q.gold) == (
        "fixed_0",
        "i need a red shirt, price lower than 40 dollars",
        None,
    )


def test_bad_data_says_where_and_what(tmp_path):
    _jsonl(tmp_path / "gsm8k/dev.jsonl", [{"question": "Q?", "answer": "no final line"}])
    with pytest.raises(
        DatasetError, match=r"dev.jsonl:1: GSM8K answer has no '#### <number>' line"
    ):
        load_questions(BENCHMARKS["gsm8k"], data_dir=tmp_path)
    with pytest.raises(DatasetError, match="missing field 'question'"):
        load_questions(BENCHMARKS["hotpotqa"], path=_jsonl(tmp_path / "h.jsonl", [{"q": "x"}]))
    with pytest.raises(DatasetError, match="no data file at"):
        load_questions(BENCHMARKS["svamp"], data_dir=tmp_path)


def test_repository_data_loads_with_the_original_task_text():
    (svamp,) = load_questions(BENCHMARKS["svamp"], data_dir=REPO_EVAL_DATA, limit=1)
    assert svamp.task == (
        "Each pack of dvds costs 76 dollars. If there is a discount of 25 dollars on each pack "
        "How much do you have to pay to buy each pack?"
    )
    assert svamp.gold == "51"
    (gsm,) = load_questions(BENCHMARKS["gsm8k"], data_dir=REPO_EVAL_DATA, limit=1)
    assert gsm.gold == "18"


def test_benchmarks_run_as_their_task_family():
    # StrategyQA is sent by name so the gateway applies its yes/no answer rules.
    domains = {name: b.domain for name, b in BENCHMARKS.items()}
    assert domains == {
        "hotpotqa": "complex_qa",
        "strategyqa": "strategyqa",
        "gsm8k": "maths",
        "svamp": "maths",
        "mind2web": "web_agent",
        "webshop": "webshop",
    }


def test_split_keeps_the_test_or_train_part_by_the_training_rule(tmp_path):
    from eval.split import is_test

    questions = [f"How many apples are {n} plus {n}?" for n in range(40)]
    _jsonl(
        tmp_path / "gsm8k" / "dev.jsonl", [{"question": q, "answer": "#### 1"} for q in questions]
    )
    benchmark = get_benchmark("gsm8k")
    test = load_questions(benchmark, data_dir=tmp_path, split="test")
    train = load_questions(benchmark, data_dir=tmp_path, split="train")
    expected_test = [q for q in questions if is_test(q)]
    assert 0 < len(expected_test) < len(questions)
    assert [q.task for q in test] == expected_test
    assert [q.task for q in train] == [q for q in questions if not is_test(q)]
    assert len(load_questions(benchmark, data_dir=tmp_path)) == 40
    with pytest.raises(DatasetError, match="unknown split 'dev'"):
        load_questions(benchmark, data_dir=tmp_path, split="dev")
