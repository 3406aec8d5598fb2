"""Served runs -> training annotations: the runs stored in the gateway's Redis, rated with
`POST /agent/runs/{id}/feedback`, written as the JSON lines `training.sft` reads.

    lumos runs export --since 7d --min-score 1 --out .run/training/runs.jsonl
    python -m training.runs_export --since 2026-12-01 --out runs.jsonl   # the same

Each kept run becomes one `Annotation`: its task and environment, and its executed steps
(`lumos.agent.steps_from_events`) as the subgoals, groundings and results, so rendering it
(`training.render`) gives back the prompts the serving loop sent. Which runs are kept:

- finished ones of the asked formulation, created since `--since`;
- with `--min-score`, only runs whose feedback scored at least that;
- a corrected answer decides: a run whose answer differs from its feedback's
  `corrected_answer` is left out (its steps lead elsewhere); the annotation's `answer` is
  the corrected answer when given, else the run's;
- runs that failed (or were cancelled), ended at `max_steps`, or had an action fail are
  left out unless `--include-failed`, `--include-max-steps`, `--include-failed-actions`.

`--eval-predictions FILE` (`lumos eval run`'s ``*.predictions.jsonl``) rates the runs of an
evaluation that have no feedback of their own: score 1 when the evaluation scored the
answer correct, else 0 with the gold answer as the corrected one. So the runs of an
evaluation on a train split become training data with `--min-score 1`.

Runs expire `LUMOS_RUN_TTL_S` after they finish: exporting is what keeps them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from gateway.runs import RunFeedback, RunRecord, RunStatus
from gateway.store import PREFIX, RunStore
from lumos.agent import steps_from_events
from lumos.jsonl import JsonlError, json_object, read_jsonl
from lumos.trace import Formulation, RunEvent
from training.annotation import Annotation, write_jsonl
from training.validate import same_number

DEFAULT_REDIS_URL = "redis://localhost:6379/0"
RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}

# Why a run was left out, in the order the summary lists them.
UNFINISHED = "unfinished (queued or running)"
BEFORE_SINCE = "created before --since"
OTHER_FORMULATION = "another formulation"
FAILED = "failed or cancelled (--include-failed)"
MAX_STEPS = "ended at max_steps (--include-max-steps)"
FAILED_ACTIONS = "an action failed (--include-failed-actions)"
NO_FEEDBACK = "no feedback (--min-score)"
LOW_SCORE = "score below --min-score"
WRONG_ANSWER = "answer differs from the corrected answer"
NO_STEPS = "no executed steps"


class RunExportError(ValueError):
    """Options that cannot select runs; the message says what to send."""


@dataclass(frozen=True)
class StoredRun:
    """A run as the gateway stored it: its record and its events."""

    record: RunRecord
    events: list[RunEvent]


@dataclass(frozen=True)
class Selection:
    """Which runs qualify (see the module's docstring)."""

    formulation: Formulation = Formulation.ITERATIVE
    since: float | None = None  # Unix time
    min_score: float | None = None
    include_failed: bool = False
    include_max_steps: bool = False
    include_failed_actions: bool = False
    # feedback for runs that have none (run id -> feedback), e.g. from an evaluation
    judged: dict[str, RunFeedback] = field(default_factory=dict)

    def feedback_of(self, record: RunRecord) -> RunFeedback | None:
        return record.feedback or self.judged.get(record.id)


@dataclass
class ExportReport:
    runs: int = 0
    kept: int = 0
    left_out: Counter[str] = field(default_factory=Counter)
    corrected: int = 0  # kept runs whose feedback gave the (matching) answer

    def summary(self) -> str:
        why = ", ".join(f"{n} {reason}" for reason, n in self.left_out.most_common())
        return (
            f"kept {self.kept} of {self.runs} stored runs ({self.corrected} with a corrected "
            f"answer that matches)" + (f"; left out: {why}" if why else "")
        )


def parse_since(text: str, now: float | None = None) -> float:
    """`7d`, `36h`, `90m`, `30s` ago, or an ISO date or time (UTC unless it says otherwise)."""
    now = time.time() if now is None else now
    relative = RELATIVE.match(text.strip())
    if relative:
        return now - float(relative.group(1)) * SECONDS[relative.group(2)]
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise RunExportError(
            f"--since {text!r} is neither a duration (7d, 36h, 90m) nor an ISO date or time "
            "(2026-12-01, 2026-12-01T09:30)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def same_answer(answer: str, expected: str) -> bool:
    """Numbers within the maths tolerance, text ignoring case, spacing and a final dot."""

    def norm(text: str) -> str:
        return " ".join(text.split()).rstrip(".").casefold()

    return same_number(answer, expected) or norm(answer) == norm(expected)


def finished_by(events: Sequence[RunEvent]) -> str | None:
    final = next((ev for ev in reversed(events) if ev.type == "final"), None)
    return None if final is None else str(final.data.get("finished_by"))


def had_failed_actions(events: Sequence[RunEvent]) -> bool:
    for ev in events:
        if ev.type == "results" and any(e.get("error") for e in ev.data.get("executed", [])):
            return True
        if ev.type == "final" and (ev.data.get("final_action") or {}).get("error"):
            return True
    return False


def left_out_because(run: StoredRun, selection: Selection) -> str | None:
    """Why `run` is not exported, or None when it qualifies."""
    record, feedback = run.record, selection.feedback_of(run.record)
    if not record.status.finished:
        return UNFINISHED
    if selection.since is not None and record.created_at < selection.since:
        return BEFORE_SINCE
    if Formulation(record.formulation) is not selection.formulation:
        return OTHER_FORMULATION
    if record.status is not RunStatus.SUCCEEDED and not selection.include_failed:
        return FAILED
    if finished_by(run.events) == "max_steps" and not selection.include_max_steps:
        return MAX_STEPS
    if had_failed_actions(run.events) and not selection.include_failed_actions:
        return FAILED_ACTIONS
    if selection.min_score is not None:
        if feedback is None:
            return NO_FEEDBACK
        if feedback.score < selection.min_score:
            return LOW_SCORE
    if feedback is not None and feedback.corrected_answer is not None:
        if record.answer is None or not same_answer(record.answer, feedback.corrected_answer):
            return WRONG_ANSWER
    if not steps_from_events(run.events):
        return NO_STEPS
    return None


def annotation_of(run: StoredRun, feedback: RunFeedback | None = None) -> Annotation:
    """The run as an annotation: its task, environment and executed steps; the answer is
    `feedback`'s corrected one when it has one (default: the run's own feedback)."""
    record, feedback = run.record, feedback or run.record.feedback
    answer = record.answer
    if feedback is not None and feedback.corrected_answer is not None:
        answer = feedback.corrected_answer
    return Annotation(
        id=f"run-{record.id}",
        dataset=record.domain,
        task=record.task,
        steps=steps_from_events(run.events),
        environment=record.environment,
        source=f"run:{Formulation(record.formulation).value}",
        answer=answer,
    )


def select(
    runs: Iterable[StoredRun], selection: Selection
) -> tuple[list[Annotation], ExportReport]:
    report = ExportReport()
    kept = []
    for run in runs:
        report.runs += 1
        why = left_out_because(run, selection)
        if why is not None:
            report.left_out[why] += 1
            continue
        feedback = selection.feedback_of(run.record)
        kept.append(annotation_of(run, feedback))
        report.kept += 1
        if feedback is not None and feedback.corrected_answer is not None:
            report.corrected += 1
    kept.sort(key=lambda a: a.id)
    return kept, report


def _prediction(value: Any) -> dict[str, Any]:
    """A predictions record: an object with run_id, correct and gold."""
    record = json_object(value)
    missing = [key for key in ("run_id", "correct", "gold") if key not in record]
    if missing:
        raise ValueError(f"no {', '.join(missing)}")
    return record


def judged_by_evaluation(paths: Iterable[Path]) -> dict[str, RunFeedback]:
    """Feedback from `lumos eval run` predictions files: run id -> score 1 (scored correct:
    the evaluation confirmed the answer) or 0 with the gold answer as the corrected one."""
    judged = {}
    for path in paths:
        try:
            records = [record for _, record in read_jsonl(path, _prediction)]
        except OSError as exc:
            raise RunExportError(f"cannot read --eval-predictions {path}: {exc}") from None
        except JsonlError as exc:
            raise RunExportError(
                f"{path}:{exc.line} is not a predictions record of `lumos eval run` "
                "(JSON with run_id, correct and gold)"
            ) from None
        for record in records:
            run_id, correct, gold = record["run_id"], record["correct"], record["gold"]
            if not run_id:
                continue  # the question never got a run
            gold_text = gold if isinstance(gold, str) else json.dumps(gold, ensure_ascii=False)
            judged[str(run_id)] = RunFeedback(
                score=1.0 if correct else 0.0,
                corrected_answer=None if correct else gold_text,
                note=f"lumos eval: {record.get('benchmark', path.name)} {record.get('id', '')}",
                given_at=path.stat().st_mtime,
            )
    return judged


async def stored_runs(store: RunStore) -> AsyncIterator[StoredRun]:
    """Every run in the store (the hashes `lumos:run:{id}`), with its events."""
    async for key in store.redis.scan_iter(match=f"{PREFIX}:run:*", _type="hash", count=500):
        run_id = (key.decode() if isinstance(key, bytes) else str(key)).split(":", 2)[2]
        record = await store.get(run_id)
        if record is None:  # expired since the scan saw it
            continue
        yield StoredRun(record, [s.event for s in await store.events(run_id)])


async def read_runs(redis_url: str) -> list[StoredRun]:
    redis = aioredis.from_url(redis_url, socket_connect_timeout=5, socket_timeout=30)
    try:
        return [run async for run in stored_runs(RunStore(redis))]
    finally:
        await redis.aclose()


def export_runs(redis_url: str, out: Path, selection: Selection) -> ExportReport:
    annotations, report = select(asyncio.run(read_runs(redis_url)), selection)
    write_jsonl(out, annotations)
    return report


# -- command line ------------------------------------------------------------------------


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="annotations file (JSON lines)")
    parser.add_argument("--since", help="runs created since: 7d, 36h, 90m, or an ISO date/time")
    parser.add_argument(
        "--min-score", type=float, help="keep only runs whose feedback scored at least this"
    )
    parser.add_argument(
        "--eval-predictions",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="rate runs without feedback by an evaluation's predictions file (repeatable)",
    )
    parser.add_argument(
        "--formulation",
        default="iterative",
        choices=[f.value for f in Formulation],
        help="which runs (the annotations train this formulation's modules)",
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("LUMOS_REDIS_URL", DEFAULT_REDIS_URL),
        help="the gateway's Redis (default: LUMOS_REDIS_URL)",
    )
    parser.add_argument(
        "--include-failed",
        action="store_true",
        help="also failed and cancelled runs (their completed steps)",
    )
    parser.add_argument(
        "--include-max-steps",
        action="store_true",
        help="also runs cut at max_steps (the planner is taught to stop there)",
    )
    parser.add_argument(
        "--include-failed-actions", action="store_true", help="also runs where an action failed"
    )
    parser.set_defaults(func=run_cli)


def run_cli(args: argparse.Namespace) -> int:
    try:
        selection = Selection(
            formulation=Formulation(args.formulation),
            since=None if args.since is None else parse_since(args.since),
            min_score=args.min_score,
            include_failed=args.include_failed,
            include_max_steps=args.include_max_steps,
            include_failed_actions=args.include_failed_actions,
            judged=judged_by_evaluation(args.eval_predictions),
        )
        report = export_runs(args.redis_url, args.out, selection)
    except RunExportError as exc:
        print(f"lumos runs export: {exc}", file=sys.stderr)
        return 2
    except RedisError as exc:
        print(
            f"lumos runs export: cannot read runs from {args.redis_url}: {exc}; point "
            "--redis-url (or LUMOS_REDIS_URL) at the gateway's Redis",
            file=sys.stderr,
        )
        return 2
    except OSError as exc:
        print(f"lumos runs export: cannot write {args.out}: {exc}", file=sys.stderr)
        return 2
    print(f"{report.summary()}; wrote {report.kept} annotations to {args.out}")
    return 0


def add_parser(sub: Any) -> None:
    """`lumos runs export ...` (the `lumos` command gathers this)."""
    runs = sub.add_parser("runs", help="stored runs: export them as training annotations")
    commands = runs.add_subparsers(dest="runs_command", required=True)
    configure(
        commands.add_parser("export", help="write rated runs as training annotations (JSON lines)")
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.runs_export", description=__doc__.split("\n")[0]
    )
    configure(parser)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
