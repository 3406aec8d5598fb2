"""Training data never includes the test split; the annotate CLI writes the train part."""

from __future__ import annotations

import json

from eval.split import is_test, split
from training.annotate import annotate_rules, main, task_of
from training.annotation import read_annotations, write_jsonl
from training.data import load_examples


def test_test_split_annotations_are_dropped_before_training(
    svamp_rows, tiny_tokenizer, tmp_path
) -> None:
    rows = svamp_rows[:60]
    _, test = split(rows, lambda r: task_of("svamp", r))
    assert test, "the first 60 SVAMP rows hold test questions"
    path = tmp_path / "all.jsonl"
    write_jsonl(path, annotate_rules("svamp", rows).passed)  # train and test mixed on purpose
    examples, report = load_examples([path], "plan", "iterative", tiny_tokenizer, 1024)
    assert report.test_dropped == len(test)
    assert len(examples) == report.annotations - len(test)
    _, kept = load_examples([path], "plan", "iterative", tiny_tokenizer, 1024, exclude_test=False)
    assert kept.test_dropped == 0


def test_annotate_cli_writes_only_train_questions_and_prints_the_pass_rate(
    tmp_path, capsys
) -> None:
    from tests.training.conftest import DATA_DIR

    out = tmp_path / "svamp.jsonl"
    assert main(["--dataset", "svamp", "--out", str(out), "--data-dir", str(DATA_DIR)]) == 0
    printed = capsys.readouterr().out
    assert "svamp (train, rules): 650/651 passed (99.8%)" in printed
    annotations = list(read_annotations(out))
    assert len(annotations) == 650 and not any(is_test(a.task) for a in annotations)
    assert json.loads(out.read_text().splitlines()[0])["source"] == "rules:svamp"


def test_a_seeded_sample_mixes_the_files_and_is_the_same_every_time(
    svamp_rows, tiny_tokenizer, tmp_path
) -> None:
    train_rows, _ = split(svamp_rows[:80], lambda r: task_of("svamp", r))
    passed = annotate_rules("svamp", train_rows).passed
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    write_jsonl(first, passed[:30])
    write_jsonl(second, passed[30:60])
    files = [first, second]

    def load(**kw):
        return load_examples(files, "plan", "iterative", tiny_tokenizer, 1024, **kw)

    everything, _ = load()
    head, _ = load(max_examples=20)
    assert head == everything[:20]  # without a seed: the first ones, file order
    sample, report = load(max_examples=20, sample_seed=7)
    again, _ = load(max_examples=20, sample_seed=7)
    other, _ = load(max_examples=20, sample_seed=8)
    assert sample == again and sample != other
    assert len(sample) == 20 and all(e in everything for e in sample)
    from_second = sum(e in everything[30:] for e in sample)
    assert 0 < from_second < 20  # drawn from both files, not the first 20
    assert (report.examples, report.sampled_from) == (20, 60)
    assert report.tokens == sum(len(e.input_ids) for e in sample)
    assert "20 examples (a seeded sample of 60)" in report.summary()


def test_one_step_annotations_over_the_cap_are_dropped_multi_step_ones_kept(
    svamp_rows, tiny_tokenizer, tmp_path
) -> None:
    train_rows, _ = split(svamp_rows[:120], lambda r: task_of("svamp", r))
    passed = annotate_rules("svamp", train_rows).passed
    one = [a for a in passed if len(a.steps) == 1]
    several = [a for a in passed if len(a.steps) > 1]
    assert len(one) > 5 and several  # SVAMP has both
    path = tmp_path / "svamp.jsonl"
    write_jsonl(path, passed)

    def load(**kw):
        return load_examples([path], "plan", "iterative", tiny_tokenizer, 1024, **kw)

    everything, _ = load()
    capped, report = load(max_one_step=3)
    assert len(capped) == len(several) + 3
    assert report.one_step_dropped == len(one) - 3
    assert f"{len(one) - 3} one-step over the cap" in report.summary()
    # the first three one-step annotations in file order stay, with every multi-step one
    keep = {a.id for a in several} | {a.id for a in one[:3]}
    assert capped == [e for a, e in zip(passed, everything, strict=True) if a.id in keep]
    assert load(max_one_step=-1)[0] == everything


def test_annotations_of_another_source_are_dropped_when_their_task_is_a_held_out_question(
    svamp_rows, tiny_tokenizer, tmp_path
) -> None:
    # Runs exported from the gateway (training.runs_export) name their domain, not the
    # benchmark: a run of `lumos eval --split test` must still never reach training.
    rows = svamp_rows[:60]
    train, test = split(rows, lambda r: task_of("svamp", r))
    annotations = annotate_rules("svamp", rows).passed
    for a in annotations:
        a.dataset = "maths"
    path = tmp_path / "runs.jsonl"
    write_jsonl(path, annotations)
    examples, report = load_examples([path], "plan", "iterative", tiny_tokenizer, 1024)
    held_out = {task_of("svamp", r) for r in test}
    assert report.test_dropped == sum(a.task in held_out for a in annotations) == len(test)
    assert len(examples) == report.annotations - len(test) and len(train) > 0
    # a task that differs from every held-out question is kept, whatever its hash
    for a in annotations:
        a.task = a.task + " Answer in words."
    write_jsonl(path, annotations)
    _, reworded = load_examples([path], "plan", "iterative", tiny_tokenizer, 1024)
    assert reworded.test_dropped == 0
