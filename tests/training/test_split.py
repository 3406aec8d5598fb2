"""The fixed train/test split of GSM8K and SVAMP."""

from __future__ import annotations

from eval.datasets import load_gsm8k, load_svamp
from eval.split import bucket, is_test, split
from tests.training.conftest import DATA_DIR
from training.annotate import task_of


def test_bucket_is_sha256_of_stripped_text_mod_10_and_never_changes() -> None:
    # frozen values: a changed rule would silently move questions between train and test
    assert bucket("hello") == 0
    assert bucket("  hello\n") == 0
    assert bucket("Janet’s ducks lay 16 eggs per day.") == 5
    assert not is_test("hello")


def test_split_is_disjoint_covers_everything_and_keeps_order(gsm8k_rows, svamp_rows) -> None:
    for name, rows in (("gsm8k", gsm8k_rows), ("svamp", svamp_rows)):
        train, test = split(rows, lambda r, n=name: task_of(n, r))
        assert len(train) + len(test) == len(rows)
        train_tasks = {task_of(name, r) for r in train}
        assert not train_tasks & {task_of(name, r) for r in test}
        assert train == [r for r in rows if not is_test(task_of(name, r))]


def test_split_sizes_are_about_80_20(gsm8k_rows, svamp_rows) -> None:
    sizes = {}
    for name, rows in (("gsm8k", gsm8k_rows), ("svamp", svamp_rows)):
        train, test = split(rows, lambda r, n=name: task_of(n, r))
        sizes[name] = (len(train), len(test))
    assert sizes == {"gsm8k": (912, 207), "svamp": (651, 149)}


def test_eval_can_use_the_same_split_on_its_question_text(gsm8k_rows, svamp_rows) -> None:
    gsm8k = load_gsm8k(DATA_DIR / "gsm8k" / "dev.jsonl")
    svamp = load_svamp(DATA_DIR / "svamp" / "dev.jsonl")
    assert sum(is_test(q.task) for q in gsm8k) == 207
    assert sum(is_test(q.task) for q in svamp) == 149
