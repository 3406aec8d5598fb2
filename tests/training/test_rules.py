"""Rule-based GSM8K/SVAMP annotations, checked by hand and by execution."""

from __future__ import annotations

import pytest

from eval.split import split
from lumos.actions import parse_actions
from lumos.domains import get_domain
from lumos.domains.maths import GROUND_INSTRUCTION
from training.annotate import annotate_rules, task_of
from training.render import render
from training.rules import ConversionError, gsm8k_draft, svamp_draft
from training.validate import check_drafts

JANET = (
    "Janet’s ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes "
    "muffins for her friends every day with four. She sells the remainder at the farmers' market "
    "daily for $2 per fresh duck egg. How much in dollars does she make every day at the "
    "farmers' market?"
)

# Written out by hand from the GSM8K solution
#   Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.
#   She makes 9 * 2 = $<<9*2=18>>18 every day at the farmer’s market.
JANET_PLANNER = (
    "<|user|>\nPlease provide a reasonable subgoal-based plan to solve the given task.\n"
    f"Task: {JANET}; Initial Environment Description: None.\n<|assistant|>\n"
    "Subgoal 1: Calculate: Janet sells 16 - 3 - 4 duck eggs a day.\n\n"
    "<|user|>\nThe executed result for Subgoal 1 is 9. Should we stop planning?\n<|assistant|>\n"
    "No, I will keep planning. Subgoal 2: Calculate the final answer: She makes 9 * 2 every day at the farmer’s market.\n\n"
    "<|user|>\nThe executed result for Subgoal 2 is 18. Should we stop planning?\n<|assistant|>\n"
    "Yes, I will stop planning."
)
JANET_GROUNDER = (
    f"<|user|>\n{GROUND_INSTRUCTION}Task: {JANET} \n"
    "Subgoal to be grounded: Subgoal 1: Calculate: Janet sells 16 - 3 - 4 duck eggs a day.\n"
    "<|assistant|>\nR1 = Calculator(16-3-4)\n\n"
    "<|user|>\nSubgoal to be grounded: No, I will keep planning. Subgoal 2: Calculate the final answer: She makes "
    "9 * 2 every day at the farmer’s market.\n<|assistant|>\nR2 = Calculator(9*2)"
)

# ( ( 4.0 + 13.0 ) * 15.0 ) = 255
DEAN_TASK = (
    "After resting they decided to go for a swim. The depth of the water is 15 times Dean's "
    "height. Dean is 4 feet taller than Ron. If Ron stands at 13 feet How deep was the water?"
)
DEAN_PLANNER = (
    "<|user|>\nPlease provide a reasonable subgoal-based plan to solve the given task.\n"
    f"Task: {DEAN_TASK}; Initial Environment Description: None.\n<|assistant|>\n"
    "Subgoal 1: Calculate 4 plus 13.\n\n"
    "<|user|>\nThe executed result for Subgoal 1 is 17. Should we stop planning?\n<|assistant|>\n"
    "No, I will keep planning. Subgoal 2: Calculate the final answer: the result of Subgoal 1 times 15.\n\n"
    "<|user|>\nThe executed result for Subgoal 2 is 255. Should we stop planning?\n<|assistant|>\n"
    "Yes, I will stop planning."
)


def _row(rows, **match):
    return next(r for r in rows if all(r[k] == v for k, v in match.items()))


def test_gsm8k_marks_become_calculator_steps_over_the_formulas_as_written(gsm8k_rows) -> None:
    (annotation,) = [o.annotation for o in check_drafts([gsm8k_draft(gsm8k_rows[0])])]
    assert annotation is not None
    assert render(annotation, "plan", "iterative").text == JANET_PLANNER
    assert render(annotation, "ground", "iterative").text == JANET_GROUNDER
    assert render(annotation, "plan", "onetime").answers == [
        "Subgoal 1: Calculate: Janet sells 16 - 3 - 4 duck eggs a day.; "
        "Subgoal 2: Calculate the final answer: She makes 9 * 2 every day at the farmer’s market."
    ]
    assert render(annotation, "ground", "onetime").answers == [
        "R1 = Calculator(16-3-4); R2 = Calculator(9*2)"
    ]


def test_gsm8k_numbers_stay_numbers_and_the_last_subgoal_says_it_is_the_answer(gsm8k_rows) -> None:
    robe = _row(gsm8k_rows, question=gsm8k_rows[1]["question"])
    draft = gsm8k_draft(robe)
    assert draft.subgoals == [
        "Subgoal 1: Calculate: It takes 2/2 bolt of white fiber.",
        "Subgoal 2: Calculate the final answer: So the total amount of fabric is 2+1 bolts of fabric.",
    ]
    assert draft.groundings == ["R1 = Calculator(2/2)", "R2 = Calculator(2+1)"]
    assert draft.answer == "3"


def test_gsm8k_several_marks_on_one_line_are_one_subgoal_numbered_in_order() -> None:
    row = {
        "question": "q",
        "answer": "He has 2*2=<<2*2=4>>4 and 8/2=<<8/2=4>>4 apples.\nSo 4+1=<<4+1=5>>5.\n#### 5",
    }
    draft = gsm8k_draft(row)
    assert draft.groundings == [
        "R1 = Calculator(2*2); R2 = Calculator(8/2)",
        "R3 = Calculator(4+1)",
    ]


def test_gsm8k_without_marks_cannot_be_converted() -> None:
    with pytest.raises(ConversionError, match="no calculator marks"):
        gsm8k_draft({"question": "q", "answer": "It is 5.\n#### 5"})


def test_svamp_equation_tree_becomes_one_subgoal_per_operation(svamp_rows) -> None:
    (annotation,) = [
        o.annotation for o in check_drafts([svamp_draft(_row(svamp_rows, ID="chal-14"))])
    ]
    assert annotation is not None
    assert [s.grounding for s in annotation.steps] == [
        "R1 = Calculator(4 + 13)",
        "R2 = Calculator(R1 * 15)",
    ]
    assert render(annotation, "plan", "iterative").text == DEAN_PLANNER


def test_a_draft_whose_last_result_is_not_the_answer_is_dropped(gsm8k_rows) -> None:
    # the solution's last step ("x = 18") has no calculator mark, so the last result is 12
    row = next(r for r in gsm8k_rows if r["question"].startswith("Melanie is a door-to-door"))
    (outcome,) = check_drafts([gsm8k_draft(row)])
    assert outcome.annotation is None
    assert outcome.failure == "answer '12' from R2, expected '18'"


def test_a_draft_that_does_not_parse_or_execute_is_dropped() -> None:
    draft = svamp_draft(
        {"ID": "x", "Body": "b", "Question": "q", "Equation": "( 1.0 / 0.0 )", "Answer": 1.0}
    )
    (outcome,) = check_drafts([draft])
    assert outcome.annotation is None and "failed" in outcome.failure
    draft = draft.model_copy(update={"groundings": ["R1 = Search(1)"]})
    (outcome,) = check_drafts([draft])
    assert outcome.failure.startswith("step 1 does not parse")


# Floors a little under what was measured on 2026-11-25: GSM8K train 839/912 (92.0%),
# SVAMP train 650/651 (99.8%).
@pytest.mark.parametrize(("name", "floor"), [("gsm8k", 0.90), ("svamp", 0.99)])
def test_rule_annotations_pass_execution_above_the_measured_floor(name, floor, request) -> None:
    rows = request.getfixturevalue(f"{name}_rows")
    train, _ = split(rows, lambda r: task_of(name, r))
    report = annotate_rules(name, train)
    assert report.total == len(train)
    assert report.pass_rate >= floor, report.summary(name)
    domain = get_domain("maths")
    for annotation in report.passed:
        for step in annotation.steps:
            parse_actions(step.grounding, allowed=domain.tool_names)
            assert all(e.error is None for e in step.executed)
