"""The fixed train/test split of the evaluation questions we also train on (GSM8K, SVAMP).

A question is test when the SHA-256 of its task text (stripped, UTF-8) read as a big-endian
integer is 8 or 9 modulo 10; everything else (0-7) may be trained on. The rule looks at the
text alone, so it holds across files, reorderings and machines: `eval` asks
`is_test(question.task)` to score on the held-out part only, `training` to leave it out.
It lives in `eval` because `training` builds on `eval` (its datasets and metrics), never
the other way round.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from typing import TypeVar

TEST_BUCKETS = frozenset({8, 9})
BUCKETS = 10

T = TypeVar("T")


def bucket(task: str) -> int:
    """The question's bucket, 0-9: SHA-256 of the stripped task text modulo 10."""
    digest = hashlib.sha256(task.strip().encode("utf-8")).digest()
    return int.from_bytes(digest, "big") % BUCKETS


def is_test(task: str) -> bool:
    """Whether this question is held out for evaluation (never trained on)."""
    return bucket(task) in TEST_BUCKETS


def split(items: Iterable[T], task_of: Callable[[T], str]) -> tuple[list[T], list[T]]:
    """(train, test) in input order, by `is_test(task_of(item))`."""
    train: list[T] = []
    test: list[T] = []
    for item in items:
        (test if is_test(task_of(item)) else train).append(item)
    return train, test
