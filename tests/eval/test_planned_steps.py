"""Does the planner plan as many steps as a maths problem needs?

Gold steps come from the reference solutions (GSM8K: lines with calculator marks, the
subgoals `training.rules` makes; SVAMP: binary operations of the equation), planned steps
from the run's events, and the report compares the two from the predictions file alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from eval.agent_client import RunOutcome, parse_run, planned_steps
from eval.data_dir import REPO_EVAL_DATA
from eval.datasets import (
    BENCHMARKS,
    gsm8k_gold_steps,
    load_questions,
    svamp_gold_steps,
)
from eval.harness import EvalOptions, evaluate_one
from eval.report import write_report

STOP = "Yes, I will stop planning."


def _subgoal(step: int, text: str, *, stop: bool = False) -> dict[str, Any]:
    return {"type": "subgoal", "step": step, "data": {"text": text, "stop": stop}}


def _step(step: int, text: str) -> list[dict[str, Any]]:
    return [
        _subgoal(step, text),
        {"type": "actions", "step": step, "data": {"text": f"R{step} = Calculator(1+1)"}},
        {"type": "results", "step": step, "data": {"executed": [{"name": "Calculator"}]}},
    ]


# --- gold steps -------------------------------------------------------------------------


def test_gsm8k_gold_steps_are_the_solution_lines_with_calculator_marks():
    questions = load_questions(BENCHMARKS["gsm8k"], data_dir=REPO_EVAL_DATA)
    # (file line, start of the question, marked lines counted by reading the row)
    expected = [
        (1, "Janet’s ducks lay 16 eggs", 2),  # "16 - 3 - 4 = <<..>>", "9 * 2 = $<<..>>"
        (3, "Josh decides to try flipping", 4),  # four lines, each with one mark
        (24, "Mishka bought 3 pairs", 1),  # one marked line, then "Mishka spent $243 ..." prose
        (23, "Kyle bought last year's", None),  # algebra without marks: nothing to count
    ]
    for line, start, steps in expected:
        question = questions[line - 1]
        assert question.task.startswith(start)
        assert question.meta["gold_steps"] == steps, (line, start)
    assert all(q.meta["gold_steps"] is None or q.meta["gold_steps"] >= 1 for q in questions)


def test_svamp_gold_steps_are_the_operations_of_the_equation():
    by_id = {q.id: q for q in load_questions(BENCHMARKS["svamp"], data_dir=REPO_EVAL_DATA)}
    assert by_id["chal-1"].meta["gold_steps"] == 1  # ( 76.0 - 25.0 )
    assert by_id["chal-11"].meta["gold_steps"] == 2  # ( 6.0 - ( 3.0 + 2.0 ) )
    assert by_id["chal-14"].meta["gold_steps"] == 2  # ( ( 4.0 + 13.0 ) * 15.0 )


def test_gold_step_rules_on_written_out_solutions():
    answer = "It is 2+2=<<2+2=4>>4\nSo that is four.\nThen <<4*3=12>>12 and <<12-1=11>>11\n#### 11"
    assert gsm8k_gold_steps(answer) == 2  # a line with two marks is one step
    assert gsm8k_gold_steps("No marks at all.\n#### 3") is None
    assert gsm8k_gold_steps("One <<1+1=2>>2\n#### 2 <<ignored=1>>") == 1  # after #### is no step
    assert svamp_gold_steps("( ( 6.0 * 4.0 ) + 2.0 )") == 2
    assert svamp_gold_steps("(6.0*4.0)+2.0") == 2  # spaces or not
    assert svamp_gold_steps("( -3.0 - 2.0 )") == 1  # a sign is no operation
    assert svamp_gold_steps("5.0") is None


def test_svamp_rows_without_an_equation_have_no_gold_steps(tmp_path):
    path = tmp_path / "svamp" / "dev.jsonl"
    path.parent.mkdir()
    path.write_text('{"Body": "Dan had 3.", "Question": "How many?", "Answer": 3.0}\n')
    (question,) = load_questions(BENCHMARKS["svamp"], data_dir=tmp_path)
    assert question.meta["gold_steps"] is None


# --- planned steps ----------------------------------------------------------------------


def test_iterative_planned_steps_are_the_subgoals_before_the_stop():
    events = [
        *_step(1, "Subgoal 1: Calculate 16 minus 3."),
        *_step(2, "Subgoal 2: Calculate the result of Subgoal 1 times 2."),
        _subgoal(3, STOP, stop=True),
        {"type": "final", "step": 2, "data": {"answer": "26", "finished_by": "planner_stop"}},
    ]
    assert planned_steps(events, onetime=False) == 2
    assert parse_run({"status": "succeeded", "trace": events}).planned_steps == 2


def test_iterative_stop_is_recognised_by_its_text_and_a_replanned_step_counts_once():
    events = [
        _subgoal(1, "Subgoal 1: Calculate 2 plus 2."),  # grounding lost: resumed, planned again
        *_step(1, "Subgoal 1: Calculate 2 plus 2."),
        {"type": "subgoal", "step": 2, "data": {"text": f"No subgoal left. {STOP}"}},
    ]
    assert planned_steps(events, onetime=False) == 1


def test_onetime_planned_steps_are_the_subgoals_of_the_one_plan():
    plan = (
        "Subgoal 1: Calculate 16 minus 3. Subgoal 2: Calculate the result of Subgoal 1 "
        "minus 4. Subgoal 3: Calculate the result of Subgoal 2 times 2."
    )
    events = [
        *_step(1, plan),
        {"type": "final", "step": 1, "data": {"answer": "18", "finished_by": "onetime"}},
    ]
    assert planned_steps(events, onetime=True) == 3
    # onetime is known from the request, the run's formulation or what finished it
    assert parse_run({"trace": events}).planned_steps == 3
    assert parse_run({"trace": events[:-1]}, "onetime").planned_steps == 3
    assert parse_run({"formulation": "onetime", "trace": events[:-1]}).planned_steps == 3
    # read as iterative, the same run planned one (long) subgoal
    assert parse_run({"trace": events[:-1]}, "iterative").planned_steps == 1


def test_onetime_plan_without_subgoal_labels_is_one_step_and_no_plan_is_none():
    assert planned_steps(_step(1, "Add the numbers up."), onetime=True) == 1
    assert planned_steps([_subgoal(1, "  ")], onetime=True) == 0
    assert planned_steps([], onetime=True) == 0
    assert parse_run({"status": "completed", "answer": "4", "steps": 2}).planned_steps is None


async def test_each_record_carries_planned_and_gold_steps():
    by_id = {q.id: q for q in load_questions(BENCHMARKS["svamp"], path=_svamp_file())}
    question = by_id["chal-11"]  # ( 6.0 - ( 3.0 + 2.0 ) ): 2 steps

    class TwoSteps:
        async def run(self, task: str, **_: Any) -> RunOutcome:
            return RunOutcome(answer="1", planned_steps=2)

    options = EvalOptions(show_progress=False)
    record = await evaluate_one(question, BENCHMARKS["svamp"], TwoSteps(), options)
    assert (record["planned_steps"], record["gold_steps"]) == (2, 2)


def _svamp_file() -> Path:
    return REPO_EVAL_DATA / "svamp" / "dev.jsonl"


# --- report -----------------------------------------------------------------------------


def _record(i: int, planned: int | None, gold: int | None, error: str | None = None) -> dict:
    return {
        "id": f"q{i}", "formulation": "iterative", "error": error, "steps": planned,
        "latency_s": 1.0, "scores": {"accuracy_numeric": 1.0},
        "planned_steps": planned, "gold_steps": gold,
    }  # fmt: skip


def test_report_compares_planned_with_gold_steps(tmp_path):
    records = [
        _record(1, 1, 3),  # one step: too few, off by 2
        _record(2, 2, 3),  # off by 1
        _record(3, 4, 4),
        _record(4, 3, 1),  # off by 2
        _record(5, 1, None),  # no gold (a GSM8K solution without marks): not compared
        _record(6, 5, 5, error="refused"),  # failed: not compared
    ]
    md_path, _, (summary,) = write_report([("gsm8k", records)], tmp_path)
    assert summary.planned_vs_gold == [(1, 3), (2, 3), (4, 4), (3, 1)]
    # more than one: runs 2, 3, 4; within 1: runs 2, 3; means (1+2+4+3)/4, (3+3+4+1)/4
    assert (
        "Planned steps: more than one step in 3/4 (75.0 %); |planned - gold| <= 1 in 2/4 "
        "(50.0 %); mean planned 2.50 vs gold 2.75."
    ) in md_path.read_text()


def test_records_without_step_fields_get_no_planning_line(tmp_path):
    old = [
        {k: v for k, v in _record(i, 2, 2).items() if k not in ("planned_steps", "gold_steps")}
        for i in range(3)
    ]
    md_path, _, (summary,) = write_report([("gsm8k", old)], tmp_path)
    assert summary.planned_vs_gold == []
    assert "Planned steps" not in md_path.read_text()
    # HotpotQA has no gold steps: its records carry None, and no line either
    md_path, _, _ = write_report([("hotpotqa", [_record(1, 2, None)])], tmp_path / "h")
    assert "Planned steps" not in md_path.read_text()
