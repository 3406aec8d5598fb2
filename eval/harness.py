"""Run a benchmark's questions through the gateway, N at a time, into a resumable JSONL file.

Each finished question is appended to the predictions file at once, so an interrupted
evaluation loses nothing; a later run with the same file skips every question already
answered (by id) and, unless told otherwise, retries the ones that failed. When a question
appears more than once in the file, its last record is the one that counts.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from eval.agent_client import RunOutcome, TaskRunner
from eval.datasets import Benchmark, Question
from eval.judge import JudgeError, LLMJudge, is_correct_verdict
from eval.metrics import strip_answer_prefix
from eval.scoring import NumericTolerance, score
from lumos.jsonl import json_object, read_jsonl

StepBudget = int | Literal["original", "gateway"]


def read_predictions(path: Path) -> dict[str, dict[str, Any]]:
    """Records by question id, the last one winning; a torn last line (a crash mid-write) is skipped."""
    records: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return records
    for _, record in read_jsonl(path, json_object, bad_lines="skip"):
        if "id" in record:
            records[str(record["id"])] = record
    return records


def is_answered(record: dict[str, Any], *, retry_errors: bool) -> bool:
    return record.get("error") is None or not retry_errors


def max_steps_for(question: Question, benchmark: Benchmark, budget: StepBudget) -> int | None:
    """The step limit sent with a run: a number, the original's, or none (the gateway's default)."""
    if budget == "gateway":
        return None
    if budget == "original":
        if benchmark.original_max_steps is None:
            return len(question.gold) if isinstance(question.gold, list) else None
        return benchmark.original_max_steps
    return budget


class ThroughputColumn(ProgressColumn):
    """Completed runs per second since the start (steadier than rich's short window when runs finish in bursts)."""

    def render(self, task: Task) -> Text:
        elapsed = task.finished_time if task.finished else task.elapsed
        if not elapsed or not task.completed:
            return Text("-- runs/s", style="progress.data.speed")
        return Text(f"{task.completed / elapsed:.2f} runs/s", style="progress.data.speed")


def _progress(console: Console | None, enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        ThroughputColumn(),
        TextColumn("errors {task.fields[errors]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
        disable=not enabled,
        transient=False,
    )


@dataclass(frozen=True)
class BenchmarkRun:
    records: list[dict[str, Any]]
    """Every question's record, in question order (fresh or from an earlier run)."""
    ran: list[dict[str, Any]]
    """The records of the runs made this time."""


@dataclass(frozen=True)
class EvalOptions:
    formulation: str = "iterative"
    concurrency: int = 4
    step_budget: StepBudget = "original"
    retry_errors: bool = True
    tolerance: NumericTolerance = NumericTolerance()
    show_progress: bool = True


async def _judge_record(
    judge: LLMJudge, question: Question, outcome: RunOutcome, record: dict[str, Any]
) -> None:
    if outcome.failed or outcome.answer is None:
        record["scores"]["llm_acc"] = 0.0
        return
    try:
        reply = await judge.verdict(
            question.question, strip_answer_prefix(outcome.answer), str(question.gold)
        )
    except JudgeError as exc:
        record["judge_error"] = str(exc)
        return
    record["judge"] = reply
    record["scores"]["llm_acc"] = float(is_correct_verdict(reply))


async def evaluate_one(
    question: Question,
    benchmark: Benchmark,
    agent: TaskRunner,
    options: EvalOptions,
    judge: LLMJudge | None = None,
) -> dict[str, Any]:
    """Run one question and score it; the result is its predictions-file record."""
    outcome = await agent.run(
        question.task,
        domain=benchmark.domain,
        max_steps=max_steps_for(question, benchmark, options.step_budget),
        question_id=question.id,
        environment=question.meta.get("environment"),
    )
    correct, scores = score(
        question,
        answer=outcome.answer,
        failed=outcome.failed,
        reward=outcome.reward,
        web_steps=outcome.web_steps,
        tolerance=options.tolerance,
    )
    record: dict[str, Any] = {
        "id": question.id,
        "benchmark": question.benchmark,
        "question": question.question,
        "gold": question.gold,
        "prediction": outcome.answer,
        "correct": correct,
        "scores": scores,
        "steps": outcome.steps,
        "latency_s": round(outcome.latency_s, 4),
        "error": outcome.error,
        "run_id": outcome.run_id,
        "status": outcome.status,
        "formulation": options.formulation,
        "finished_by": outcome.finished_by,
        "groundings": outcome.groundings,
        "parse_errors": outcome.parse_errors,
        "actions": outcome.actions,
        "actions_failed": outcome.actions_failed,
        "planned_steps": outcome.planned_steps,
        "gold_steps": question.meta.get("gold_steps"),
    }
    if question.task != question.question:
        record["task"] = question.task
    if benchmark.name == "webshop":
        record["reward"] = outcome.reward
    if benchmark.name == "mind2web":
        record["web_steps"] = [asdict(s) for s in outcome.web_steps]
    if judge is not None and benchmark.name == "hotpotqa":
        await _judge_record(judge, question, outcome, record)
    return record


async def run_benchmark(
    benchmark: Benchmark,
    questions: Iterable[Question],
    predictions_path: Path,
    *,
    agent: TaskRunner,
    options: EvalOptions = EvalOptions(),
    judge: LLMJudge | None = None,
    console: Console | None = None,
) -> BenchmarkRun:
    """Evaluate the questions not yet answered in `predictions_path`."""
    questions = list(questions)
    existing = read_predictions(predictions_path)
    todo = [
        q
        for q in questions
        if q.id not in existing
        or not is_answered(existing[q.id], retry_errors=options.retry_errors)
    ]
    predictions_path.parent.mkdir(parents=True, exist_ok=True)
    semaphore = asyncio.Semaphore(max(1, options.concurrency))
    done: dict[str, dict[str, Any]] = {}
    errors = 0

    with (
        predictions_path.open("a", encoding="utf-8") as out,
        _progress(console, options.show_progress) as progress,
    ):
        task_id = progress.add_task(benchmark.name, total=len(todo), errors=0)

        async def one(question: Question) -> None:
            nonlocal errors
            async with semaphore:
                record = await evaluate_one(question, benchmark, agent, options, judge)
            # Written from the event loop only, one whole line at a time: no interleaving.
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
            out.flush()
            done[question.id] = record
            errors += record["error"] is not None
            progress.update(task_id, advance=1, errors=errors)

        await asyncio.gather(*(one(q) for q in todo))

    return BenchmarkRun(
        records=[done.get(q.id) or existing[q.id] for q in questions],
        ran=[done[q.id] for q in todo],
    )
