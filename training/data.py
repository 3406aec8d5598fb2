"""Training files -> annotations -> one module's encoded examples.

A training file is JSON lines of either kind, told apart by each line's keys:
released Lumos records (``messages``; `training.released`) or our annotations (``steps``;
`training.annotation`). Annotations of the evaluation datasets we also annotate (GSM8K,
SVAMP) whose question is in the test split are dropped (`eval.split`), and so is an
annotation of any other source whose task is one of those held-out questions word for word
(runs exported from the gateway say only their domain, ``maths``; a run of `lumos eval
--split test` must not train the model it evaluates).
"""

from __future__ import annotations

import functools
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eval.datasets import DatasetError, get_benchmark, load_questions
from eval.split import is_test
from lumos.jsonl import read_jsonl
from lumos.trace import Formulation
from training.annotation import Annotation
from training.encode import Encoded, encode
from training.released import ReleasedRecord, to_annotation
from training.render import Module, RenderError, render

EVAL_DATASETS = frozenset({"gsm8k", "svamp"})


@functools.cache
def held_out_tasks() -> frozenset[str]:
    """The task texts of the GSM8K and SVAMP test split (`eval.split`), stripped.

    Read from the evaluation data (`eval.data_dir`); a benchmark whose file is missing
    there adds none (its annotations are still caught by their dataset's name).
    """
    tasks: set[str] = set()
    for name in sorted(EVAL_DATASETS):
        try:
            questions = load_questions(get_benchmark(name), split="test")
        except (DatasetError, OSError):
            continue
        tasks.update(q.task.strip() for q in questions)
    return frozenset(tasks)


def is_held_out(dataset: str, task: str) -> bool:
    """Whether an annotation's question is one evaluation holds out from training."""
    if dataset in EVAL_DATASETS:
        return is_test(task)
    return task.strip() in held_out_tasks()


@dataclass
class DataReport:
    files: list[str] = field(default_factory=list)
    annotations: int = 0
    test_dropped: int = 0
    unparsable: list[str] = field(default_factory=list)  # "file:line: why", for the log
    unrenderable: int = 0
    truncated_away: int = 0
    examples: int = 0
    tokens: int = 0
    trained_tokens: int = 0
    sampled_from: int = 0  # usable examples before a seeded sample of max_examples
    one_step_dropped: int = 0  # one-step annotations over max_one_step

    def summary(self) -> str:
        sample = f" (a seeded sample of {self.sampled_from})" if self.sampled_from else ""
        return (
            f"{self.examples} examples{sample} from {self.annotations} annotations in "
            f"{len(self.files)} file(s); skipped {len(self.unparsable)} unparsable lines; "
            f"dropped {self.test_dropped} test-split, {self.one_step_dropped} one-step over the cap, "
            f"{self.unrenderable} unrenderable, {self.truncated_away} with no answer left "
            f"after truncation; {self.tokens} tokens, {self.trained_tokens} with loss"
        )


def read_training_file(
    path: Path, module: Module, formulation: Formulation
) -> Iterator[Annotation | ValueError]:
    """Each line's annotation, or the error that says why the line is not one."""

    def annotation(row: Any) -> Annotation:
        if "messages" in row:
            return to_annotation(ReleasedRecord.model_validate(row), module, formulation)
        if "steps" in row:
            return Annotation.model_validate(row)
        raise ValueError("neither a released record ('messages') nor an annotation ('steps')")

    # JSON, pydantic and ReleasedFormatError alike: the line's error takes its place
    for _, item in read_jsonl(path, annotation, bad_lines="yield"):
        yield item


def load_examples(
    files: Sequence[str | Path],
    module: Module | str,
    formulation: Formulation | str,
    tokenizer: Any,
    max_length: int,
    *,
    exclude_test: bool = True,
    max_examples: int = 0,
    sample_seed: int | None = None,
    max_one_step: int = -1,
) -> tuple[list[Encoded], DataReport]:
    """Every usable example of `files`, encoded; `max_examples` > 0 keeps that many.

    Which ones: the first in file order, or with `sample_seed` a random sample drawn with
    that seed across all files (so a mix of datasets, the same sample every run).
    `max_one_step` >= 0 keeps only that many one-step annotations (the first in file order).
    """
    module, formulation = Module(module), Formulation(formulation)
    report = DataReport(files=[str(f) for f in files])
    examples: list[Encoded] = []
    one_step = 0
    for f in files:
        for annotation in read_training_file(Path(f), module, formulation):
            if isinstance(annotation, ValueError):
                report.unparsable.append(str(annotation)[:300])
                continue
            report.annotations += 1
            if len(annotation.steps) == 1 and max_one_step >= 0:
                if one_step >= max_one_step:
                    report.one_step_dropped += 1
                    continue
                one_step += 1
            if exclude_test and is_held_out(annotation.dataset, annotation.task):
                report.test_dropped += 1
                continue
            try:
                example = render(annotation, module, formulation)
            except (RenderError, ValueError):
                report.unrenderable += 1
                continue
            encoded = encode(example, tokenizer, max_length)
            if encoded is None:
                report.truncated_away += 1
                continue
            examples.append(encoded)
            report.tokens += len(encoded.input_ids)
            report.trained_tokens += encoded.trained_tokens
            if max_examples and sample_seed is None and len(examples) >= max_examples:
                report.examples = len(examples)
                return examples, report
    if max_examples and sample_seed is not None and len(examples) > max_examples:
        report.sampled_from = len(examples)
        examples = random.Random(sample_seed).sample(examples, max_examples)
        report.tokens = sum(len(e.input_ids) for e in examples)
        report.trained_tokens = sum(e.trained_tokens for e in examples)
    report.examples = len(examples)
    return examples, report
