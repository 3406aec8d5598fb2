"""Synthetic multi-step problems: right answers, validated like GSM8K, never a benchmark question."""

from __future__ import annotations

import random
import re

import pytest

from training.synthetic import TEMPLATES, Solution, drafts, generate
from training.validate import check_drafts


def test_every_template_makes_problems_that_the_rule_converter_and_validation_accept() -> None:
    problems = generate(len(TEMPLATES) * 6, seed=3)
    assert {p.template for p in problems} == set(TEMPLATES)
    outcomes = check_drafts(drafts(problems, seed=3))
    failed = [(o.draft.task, o.failure) for o in outcomes if o.annotation is None]
    assert not failed, failed[:3]
    for problem, outcome in zip(problems, outcomes, strict=True):
        annotation = outcome.annotation
        assert annotation is not None
        assert len(annotation.steps) == problem.steps >= 2
        assert (
            annotation.dataset == "maths" and annotation.source == f"synthetic:{problem.template}"
        )
        last = annotation.steps[-1].subgoal
        assert f"Subgoal {problem.steps}: Calculate the final answer: " in last, last


def test_answers_match_the_question_read_independently() -> None:
    """Recompute two templates' answers from the question text alone."""
    for problem in generate(40, seed=11):
        numbers = [int(n) for n in re.findall(r"\d+", problem.question)]
        if problem.template == "boxes_given_away":
            boxes, per, given = numbers
            assert problem.answer == boxes * per - given, problem.question
        elif problem.template == "farm_legs":
            two_legged, four_legged = numbers
            assert problem.answer == 2 * two_legged + 4 * four_legged, problem.question


def test_same_seed_same_problems_other_seed_other_problems() -> None:
    first = [p.question for p in generate(30, seed=5)]
    assert first == [p.question for p in generate(30, seed=5)]
    assert first != [p.question for p in generate(30, seed=6)]
    assert len(set(first)) == len(first)


def test_no_generated_question_is_a_benchmark_question(gsm8k_rows, svamp_rows) -> None:
    from eval.datasets import svamp_task

    benchmark = {r["question"].strip() for r in gsm8k_rows}
    benchmark |= {svamp_task(r["Body"], r["Question"]) for r in svamp_rows}
    generated = {p.question for p in generate(2000, seed=7)}
    assert not generated & benchmark


def test_a_division_that_is_not_whole_is_refused() -> None:
    with pytest.raises(ValueError, match="not a whole number"):
        Solution().step("x", 7, "/", 2, "y")
    assert Solution().step("x", 8, "/", 2, "y") == 4


def test_templates_take_their_randomness_from_the_generator_only() -> None:
    template = TEMPLATES["shopping_change"]
    assert template(random.Random(1)).question == template(random.Random(1)).question
