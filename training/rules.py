"""Rule-based annotations where a dataset's reasoning is already structured.

- GSM8K: every solution line with calculator marks (``16 - 3 - 4 = <<16-3-4=9>>9 eggs``)
  becomes a subgoal, each mark a ``Calculator`` action over the mark's formula as written.
  Numbers stay numbers: the subgoal shows the formula with the values earlier steps produced
  (the iterative planner reads them in its feedback), and the grounder copies it. Writing a
  number that equals an earlier result as that result's variable (``R1*2``) asked the
  grounder to tell which variable holds 9 without ever seeing a value: the first Lumos-mini
  grounder guessed wrong in 3 of 6 checked GSM8K last steps.
- SVAMP: the ``Equation`` field (``( ( 6.0 * 4.0 ) + 2.0 )``) is a tree of binary
  operations; each operation, innermost first, becomes a subgoal with one ``Calculator``
  action over numbers and earlier results.

The last subgoal of every draft says that it computes the answer ("Subgoal 3: Calculate the
final answer: ..."; `FINAL_SUBGOAL`): the planner that writes it has just decided that the
plan ends there, and the stop question that follows becomes one it can read off its own
last subgoal. Without it a small planner trained on these drafts learnt no stop decision at
all, only a prior (training/RESULTS.md).

The drafts are not trusted: `training.validate` executes them and keeps those that reach
the dataset's answer.
"""

from __future__ import annotations

import ast
import re
from fractions import Fraction
from typing import Any

from eval.datasets import question_id, svamp_task
from eval.metrics import gsm8k_gold
from training.annotation import Draft

MARK_RE = re.compile(r"<<([^<>]*)>>")
# "= $<<a*b=c>>c" in the prose: the equals sign, the mark and the result written after it
_PROSE_RESULT_RE = re.compile(r"\s*=\s*\$?\s*<<[^<>]*>>\s*\$?[0-9][0-9,]*(?:\.[0-9]+)?")
FINAL_SUBGOAL = "Calculate the final answer"


class ConversionError(ValueError):
    """A dataset row the rules cannot turn into a draft (why is in the message)."""


def _prose(line: str) -> str:
    """The solution line without its results: what the step computes, in words."""
    text = _PROSE_RESULT_RE.sub("", line)
    text = MARK_RE.sub("", text)
    return " ".join(text.split()).rstrip(".") + "."


def final_subgoal(subgoal: str) -> str:
    """``"Subgoal 3: Calculate: x."`` or ``"Subgoal 3: Calculate x."`` -> the last step's
    wording, ``"Subgoal 3: Calculate the final answer: x."``."""
    head, sep, rest = subgoal.partition(": Calculate")
    if not sep:
        raise ConversionError(f"not a Calculate subgoal: {subgoal!r}")
    return f"{head}: {FINAL_SUBGOAL}: {rest.removeprefix(':').strip()}"


def gsm8k_draft(row: dict[str, Any]) -> Draft:
    """A draft from one GSM8K row (``question``, ``answer`` with marks and ``#### N``)."""
    task = str(row["question"]).strip()
    answer = str(row["answer"])
    if "####" not in answer:
        raise ConversionError("the answer has no '#### N' line")
    solution = answer.split("####")[0]
    subgoals: list[str] = []
    groundings: list[str] = []
    outputs = 0
    for line in solution.splitlines():
        marks = MARK_RE.findall(line)
        if not marks:
            continue
        actions = []
        for mark in marks:
            expression, sep, _ = mark.rpartition("=")
            if not sep or not expression.strip():
                raise ConversionError(f"calculator mark without 'formula=result': <<{mark}>>")
            outputs += 1
            actions.append(f"R{outputs} = Calculator({expression.strip()})")
        subgoals.append(f"Subgoal {len(subgoals) + 1}: Calculate: {_prose(line)}")
        groundings.append("; ".join(actions))
    if not subgoals:
        raise ConversionError("the solution has no calculator marks")
    subgoals[-1] = final_subgoal(subgoals[-1])
    return Draft(
        id=question_id(row, task),
        dataset="gsm8k",
        task=task,
        subgoals=subgoals,
        groundings=groundings,
        answer=gsm8k_gold(answer),
        source="rules:gsm8k",
    )


_OPERATORS: dict[type[ast.operator], tuple[str, str]] = {
    ast.Add: ("+", "plus"),
    ast.Sub: ("-", "minus"),
    ast.Mult: ("*", "times"),
    ast.Div: ("/", "divided by"),
}


def _format_number(value: float | int) -> str:
    number = Fraction(str(value))
    if number.denominator == 1:
        return str(number.numerator)
    return format(float(value), "g")


def svamp_draft(row: dict[str, Any]) -> Draft:
    """A draft from one SVAMP row (``Body``, ``Question``, ``Equation``, ``Answer``)."""
    task = svamp_task(str(row["Body"]), str(row["Question"]))
    equation = str(row["Equation"]).strip()
    try:
        tree = ast.parse(equation, mode="eval").body
    except SyntaxError as exc:
        raise ConversionError(f"the equation {equation!r} does not parse: {exc.msg}") from exc
    subgoals: list[str] = []
    groundings: list[str] = []

    def visit(node: ast.expr) -> tuple[str, str]:
        """(formula text, words) for `node`, emitting a step per operation below it."""
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            text = _format_number(node.value)
            return text, text
        if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
            left, left_words = visit(node.left)
            right, right_words = visit(node.right)
            symbol, verb = _OPERATORS[type(node.op)]
            k = len(subgoals) + 1
            subgoals.append(f"Subgoal {k}: Calculate {left_words} {verb} {right_words}.")
            groundings.append(f"R{k} = Calculator({left} {symbol} {right})")
            return f"R{k}", f"the result of Subgoal {k}"
        raise ConversionError(f"unsupported part of the equation {equation!r}: {ast.dump(node)}")

    visit(tree)
    if not subgoals:
        raise ConversionError(f"the equation {equation!r} has no operation")
    subgoals[-1] = final_subgoal(subgoals[-1])
    return Draft(
        id=question_id(row, task),
        dataset="svamp",
        task=task,
        subgoals=subgoals,
        groundings=groundings,
        answer=_format_number(float(row["Answer"])),
        source="rules:svamp",
    )


DRAFTERS = {"gsm8k": gsm8k_draft, "svamp": svamp_draft}
