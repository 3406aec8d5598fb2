"""One training annotation: a task solved as executed Lumos steps, the unit every module's
examples are rendered from.

An `Annotation` holds the steps as the serving loop records them (`lumos.trace.Step`):
the planner's output for each step (``"No, I will keep planning. "`` before every subgoal
after the first), the grounder's actions, and what executing them produced. Rendering the
planner's or the grounder's conversation from it (`training.render`) therefore goes
through the same prompt functions as serving.

Files of annotations are JSON lines, one `Annotation.model_dump_json()` a line.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from pydantic import BaseModel, Field

from lumos.domains.base import CONTINUE_PHRASE
from lumos.jsonl import read_jsonl
from lumos.trace import Step


class Annotation(BaseModel):
    """A task and the steps that solve it, with where the annotation came from."""

    id: str
    dataset: str = Field(description="a dataset (gsm8k) or a task family (maths)")
    task: str
    steps: list[Step]
    environment: str | None = None
    source: str = Field(default="", description="how it was made: rules:gsm8k, llm:MODEL, released")
    answer: str | None = Field(default=None, description="the dataset's answer, when known")


class Draft(BaseModel):
    """An annotation before execution: subgoals and their groundings, nothing run yet."""

    id: str
    dataset: str
    task: str
    subgoals: list[str] = Field(description="bare subgoals: 'Subgoal 1: ...'")
    groundings: list[str]
    answer: str | None = None
    source: str = ""


def planner_output(index: int, subgoal: str) -> str:
    """What the iterative planner writes for step `index` (1-based): later subgoals open
    with the continue phrase, as the released planners were trained to answer."""
    bare = bare_subgoal(subgoal)
    return bare if index == 1 else f"{CONTINUE_PHRASE} {bare}"


def bare_subgoal(planner_text: str) -> str:
    """``"No, I will keep planning. Subgoal 2: x"`` -> ``"Subgoal 2: x"``."""
    return planner_text.split(CONTINUE_PHRASE)[-1].strip()


def write_jsonl(path: Path, records: Iterable[BaseModel]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w", encoding="utf-8") as fh:
        for record in records:
            fh.write(record.model_dump_json() + "\n")
            n += 1
    return n


def read_annotations(path: Path) -> Iterator[Annotation]:
    for _, annotation in read_jsonl(path, Annotation.model_validate, expected="an annotation"):
        yield annotation
