"""Read the released Lumos annotation files and turn each record into an `Annotation`.

The released files (allenai/lumos ``data/train/<family>/train_annots/*.jsonl``, the same
as the Hugging Face datasets ``ai2lumos/lumos_<family>_<plan|ground>_<iterative|onetime>``)
hold one conversation a line::

    {"dataset": "maths", "id": "maths_0", "messages": [{"role": "user", "content": ...},
                                                      {"role": "assistant", "content": ...}, ...]}

in the original *training* wording (see `lumos.prompts`). Rather than train on that text,
each record is parsed back into its task, subgoals, groundings and fed-back results, and
rendered again with `training.render`, so the model learns the prompts it is served with.

What a record holds, by file:

- plan, iterative: subgoals (``"No, I will keep planning. "`` before all but the first) and
  each step's result (``"The executed result for Subgoal k is X. Should we stop
  planning?"``; web agent: ``"We have already ..."``), then ``"Yes, I will stop planning."``
- plan, onetime: the subgoals joined by ``"; "``
- ground, iterative: each subgoal and its actions; complex QA's follow-ups also list the
  earlier steps' results
- ground, onetime: the joined subgoals and all actions joined by ``"; "`` (kept on step 1)

A result that a file does not record is absent from its steps; rendering needs results
only for the planner's feedback and complex QA's grounder follow-ups.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel

from lumos.actions import Action, ActionParseError, parse_actions
from lumos.domains.base import STOP_PHRASE
from lumos.jsonl import JsonlError, read_jsonl
from lumos.trace import ExecutedAction, Formulation, Step
from training.annotation import Annotation, bare_subgoal, planner_output
from training.render import Module


class Message(BaseModel):
    role: str
    content: str


class ReleasedRecord(BaseModel):
    """One line of a released annotation file."""

    dataset: str
    id: str
    messages: list[Message]


class ReleasedFormatError(ValueError):
    """A released record that does not have the shape its file kind promises."""


def read_released(path: Path) -> Iterator[ReleasedRecord]:
    try:
        for _, record in read_jsonl(path, ReleasedRecord.model_validate):
            yield record
    except JsonlError as exc:
        raise ReleasedFormatError(
            f"{exc.path}:{exc.line}: not a released Lumos record "
            f"({{'dataset', 'id', 'messages': [{{'role', 'content'}}]}}): {exc.reason}"
        ) from exc


_PLAN_TASK_RE = re.compile(r"Task: (.*); Initial Environment Description: (.*?)\.?$", re.DOTALL)
_GROUND_TASK_RE = re.compile(r"\n\nTask: (.*) \nSubgoals? to be grounded: (.*)$", re.DOTALL)
_RESULT_RE = re.compile(
    r"^The execut(?:ed|ion) result for Subgoal \d+ is (.*?)\.? Should we stop planning\?$",
    re.DOTALL,
)
_FOLLOWUP_RE = re.compile(r"^Subgoal to be grounded: (.*)$", re.DOTALL)
_RESULTS_INTRO = " The grounding could be based on the following results:"
_RESULT_ITEM_RE = re.compile(r" The execution result for (Subgoal \d+) is ")
_ONETIME_SPLIT_RE = re.compile(r"; (?=Subgoal \d+:)")
_RECORDED = "Recorded"  # stand-in action name for a result whose action the file omits


def _turns(record: ReleasedRecord) -> tuple[list[str], list[str]]:
    users = [m.content.strip() for m in record.messages if m.role == "user"]
    assistants = [m.content.strip() for m in record.messages if m.role == "assistant"]
    roles = [m.role for m in record.messages if m.role != "system"]
    expected = ["user", "assistant"] * (len(roles) // 2)
    if roles != expected or not roles:
        raise ReleasedFormatError(
            f"record {record.id}: expected alternating user/assistant turns, got {roles}"
        )
    return users, assistants


def _step(index: int, subgoal: str, grounding: str, result: str | None) -> Step:
    executed: list[ExecutedAction] = []
    if result is not None:
        action = _last_action(grounding) or Action((f"R{index}",), _RECORDED, "")
        executed.append(
            ExecutedAction(
                outputs=action.outputs, name=action.name, args=action.args, values=(result,)
            )
        )
    return Step(
        index=index, subgoal=planner_output(index, subgoal), grounding=grounding, executed=executed
    )


def _last_action(grounding: str) -> Action | None:
    try:
        return parse_actions(grounding)[-1] if grounding.strip() else None
    except ActionParseError:
        return None


def _plan_task(text: str, record_id: str) -> tuple[str, str | None]:
    m = _PLAN_TASK_RE.search(text)
    if not m:
        raise ReleasedFormatError(f"record {record_id}: no 'Task: ...; Initial Environment' turn")
    env = m.group(2).strip()
    return m.group(1).strip(), None if env == "None" else env


def _ground_task(text: str, record_id: str) -> tuple[str, str]:
    m = _GROUND_TASK_RE.search(text)
    if not m:
        raise ReleasedFormatError(f"record {record_id}: no 'Task: ... Subgoal to be grounded' turn")
    return m.group(1).strip(), m.group(2).strip()


def _followup(text: str, record_id: str) -> tuple[str, dict[str, str]]:
    """A later grounder turn: its subgoal and any results it lists (complex QA)."""
    m = _FOLLOWUP_RE.match(text)
    if not m:
        raise ReleasedFormatError(f"record {record_id}: expected 'Subgoal to be grounded: ...'")
    body, _, listed = m.group(1).partition(_RESULTS_INTRO)
    results: dict[str, str] = {}
    parts = _RESULT_ITEM_RE.split(listed)
    for label, value in zip(parts[1::2], parts[2::2], strict=True):
        results[label] = value.strip()
    return body.strip(), results


def to_annotation(
    record: ReleasedRecord, module: Module | str, formulation: Formulation | str
) -> Annotation:
    """The record as an annotation; `module` and `formulation` name the file it came from."""
    module, formulation = Module(module), Formulation(formulation)
    users, assistants = _turns(record)
    steps: list[Step] = []
    if module is Module.PLAN:
        task, env = _plan_task(users[0], record.id)
        if formulation is Formulation.ONETIME:
            subgoals = _ONETIME_SPLIT_RE.split(assistants[0])
            steps = [_step(k, s, "", None) for k, s in enumerate(subgoals, start=1)]
        else:
            if STOP_PHRASE not in assistants[-1]:
                raise ReleasedFormatError(f"record {record.id}: the last answer does not stop")
            for k, (subgoal, feedback) in enumerate(
                zip(assistants[:-1], users[1:], strict=True), 1
            ):
                m = _RESULT_RE.match(feedback)
                steps.append(_step(k, bare_subgoal(subgoal), "", m.group(1) if m else None))
        return _annotation(record, task, steps, env)
    task, first = _ground_task(users[0], record.id)
    if formulation is Formulation.ONETIME:
        subgoals = _ONETIME_SPLIT_RE.split(first)
        steps = [
            _step(k, s, assistants[0] if k == 1 else "", None) for k, s in enumerate(subgoals, 1)
        ]
        return _annotation(record, task, steps, None)
    subgoals = [first]
    listed: dict[str, str] = {}
    for text in users[1:]:
        subgoal, results = _followup(text, record.id)
        subgoals.append(subgoal)
        listed.update(results)
    for k, (subgoal, grounding) in enumerate(zip(subgoals, assistants, strict=True), start=1):
        label = bare_subgoal(subgoal).split(":")[0].strip()
        steps.append(_step(k, bare_subgoal(subgoal), grounding, listed.get(label)))
    return _annotation(record, task, steps, None)


def _annotation(
    record: ReleasedRecord, task: str, steps: list[Step], env: str | None
) -> Annotation:
    if not steps:
        raise ReleasedFormatError(f"record {record.id}: no steps")
    return Annotation(
        id=record.id,
        dataset=record.dataset,
        task=task,
        steps=steps,
        environment=env,
        source="released",
    )
