"""Served runs -> annotations: runs through the real gateway over real Redis, rated, exported
with `lumos runs export`, and rendered back into the prompts the loop sent."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.app import create_app
from lumos.agent import Generation
from lumos.scripted import ScriptedExecutor, ScriptedModel
from tests.gateway.helpers import GROUNDS, PLANS, RESULTS, TASK, serve, settings_for
from training.annotation import Annotation, read_annotations
from training.data import read_training_file
from training.render import render
from training.runs_export import RunExportError, main, parse_since, run_cli

pytestmark = pytest.mark.redis

PAGE = "Farm stand: eggs are sold by the piece."


async def export(redis_url: str, out: Path, *args: str) -> tuple[int, list[Annotation]]:
    """`python -m training.runs_export ...` (what `lumos runs export` runs), in a thread:
    it runs its own event loop."""
    argv = ["--redis-url", redis_url, "--out", str(out), *args]
    code = await asyncio.to_thread(main, argv)
    return code, await asyncio.to_thread(_read, out)


def _read(path: Path) -> list[Annotation]:
    return list(read_annotations(path)) if path.exists() else []


# (domain, task, environment, planner outputs, grounder outputs, tool results): a maths run
# with an environment description, and a WebShop run (two worked examples in front of both
# conversations, the first grounding prefilled with "R1 = ").
RECORDED_RUNS = {
    "maths": ("maths", TASK, PAGE, PLANS, GROUNDS, RESULTS),
    "webshop": (
        "webshop",
        "i want red running shoes under 30 dollars",
        None,
        [
            "Subgoal 1: Search for red running shoes.",
            "No, I will keep planning. Subgoal 2: Click the cheapest item.",
            "Yes, I will stop planning.",
        ],
        ["Search(red running shoes)", "R2 = Click(R1)"],
        {"R1": "[item-1] Red runner $25", "R2": "Red runner: size 9, $25, Buy Now"},
    ),
}


@pytest.mark.parametrize("recorded", sorted(RECORDED_RUNS))
async def test_an_exported_run_renders_to_exactly_the_prompts_the_loop_sent(
    recorded, redis_url, tmp_path
):
    domain, task, environment, plans, grounds, results = RECORDED_RUNS[recorded]
    planner, grounder = ScriptedModel("planner", plans), ScriptedModel("grounder", grounds)
    app = create_app(
        settings_for(redis_url),
        planner=planner,
        grounder=grounder,
        executor=ScriptedExecutor(results),
    )
    run = {"task": task, "domain": domain, "environment": environment}
    async with serve(app) as url, httpx.AsyncClient(base_url=url) as client:
        answered = (await client.post("/agent/run", json=run)).json()
        assert answered["status"] == "succeeded", answered
        await client.post(f"{answered['url']}/feedback", json={"score": 1})
    code, (annotation,) = await export(redis_url, tmp_path / "runs.jsonl", "--min-score", "1")
    assert code == 0
    assert annotation.task == task and annotation.environment == environment
    assert annotation.dataset == domain and annotation.answer == answered["answer"]
    # training reads the file as it reads its own annotations
    (read,) = read_training_file(tmp_path / "runs.jsonl", "plan", "iterative")
    assert read == annotation

    plan = render(annotation, "plan", "iterative")
    assert len(plan.spans) == len(planner.prompts)
    for turn, prompt in enumerate(planner.prompts):
        assert plan.prompt_before(turn) == prompt, f"planner turn {turn + 1}"
    assert plan.answers == plans  # the recorded planner said the stop phrase exactly

    ground = render(annotation, "ground", "iterative")
    assert len(ground.spans) == len(grounder.prompts)
    for turn, prompt in enumerate(grounder.prompts):
        assert ground.prompt_before(turn) == prompt, f"grounder turn {turn + 1}"
    assert ground.answers == grounds  # after WebShop's prefill, what the grounder wrote


async def test_an_exported_onetime_run_renders_to_the_onetime_prompts_it_was_sent(
    redis_url, tmp_path
):
    plan_text = "Subgoal 1: Calculate the eggs left; Subgoal 2: Calculate the money."
    grounding = "R1 = Calculator(16-3-4); R2 = Calculator(R1*2)"
    planner = ScriptedModel("planner", [plan_text])
    grounder = ScriptedModel("grounder", [grounding])
    app = create_app(
        settings_for(redis_url),
        planner=planner,
        grounder=grounder,
        executor=ScriptedExecutor(RESULTS),
    )
    async with serve(app) as url, httpx.AsyncClient(base_url=url) as client:
        await client.post(
            "/agent/run", json={"task": TASK, "domain": "maths", "formulation": "onetime"}
        )
    code, (annotation,) = await export(redis_url, tmp_path / "o.jsonl", "--formulation", "onetime")
    assert code == 0
    plan = render(annotation, "plan", "onetime")
    assert plan.prompt_before(0) == planner.prompts[0] and plan.answers == [plan_text]
    ground = render(annotation, "ground", "onetime")
    assert ground.prompt_before(0) == grounder.prompts[0] and ground.answers == [grounding]


class ByTask:
    """A planner or grounder that answers each task from its own script: turn k of a
    conversation (k = the user turns in the prompt) gets the task's k-th output."""

    def __init__(self, scripts: dict[str, list[str]]) -> None:
        self.scripts = scripts

    async def generate(self, prompt: str, *, regex: str | None = None) -> Generation:
        task = next(t for t in self.scripts if f"Task: {t}" in prompt)
        turn = prompt.count("<|user|>")
        outputs = self.scripts[task]
        if turn > len(outputs):
            raise RuntimeError(f"no output {turn} for {task!r}")  # the run fails
        return Generation(text=outputs[turn - 1])


# Eight tasks, each a different kind of run (the planner and grounder scripts per task).
CASES: dict[str, dict[str, Any]] = {
    "good": {},
    "rated low": {},
    "unrated": {},
    "corrected to the same": {},
    "corrected to another": {},
    "planner fails": {"plans": PLANS[:1]},
    "cut at max_steps": {"max_steps": 2},
    "an action fails": {"grounds": ["R1 = Calculator(16-3-4); R7 = Calculator(R1)", *GROUNDS[1:]]},
}
FEEDBACK = {
    "good": {"score": 1},
    "rated low": {"score": 0.2},
    "corrected to the same": {"score": 1, "corrected_answer": "18.0"},
    "corrected to another": {"score": 1, "corrected_answer": "20"},
    "planner fails": {"score": 1},
    "cut at max_steps": {"score": 1},
    "an action fails": {"score": 1},
}


def task_of(case: str) -> str:
    return f"{TASK} ({case})"


@pytest.fixture
async def rated_runs(redis_url) -> dict[str, str]:
    """One run per case through the gateway, with its feedback; case -> run id."""
    plans = {task_of(c): spec.get("plans", PLANS) for c, spec in CASES.items()}
    grounds = {task_of(c): spec.get("grounds", GROUNDS) for c, spec in CASES.items()}
    app = create_app(
        settings_for(redis_url),
        planner=ByTask(plans),
        grounder=ByTask(grounds),
        executor=ScriptedExecutor(RESULTS),
    )
    ids = {}
    async with serve(app) as url, httpx.AsyncClient(base_url=url) as client:
        for case, spec in CASES.items():
            body = {"task": task_of(case), "domain": "maths"}
            if "max_steps" in spec:
                body["max_steps"] = spec["max_steps"]
            run = (await client.post("/agent/run", json=body)).json()
            ids[case] = run["id"]
            if case in FEEDBACK:
                given = await client.post(f"{run['url']}/feedback", json=FEEDBACK[case])
                assert given.status_code == 200, given.text
    return ids


def kept_cases(annotations: list[Annotation], ids: dict[str, str]) -> set[str]:
    case_of = {f"run-{run_id}": case for case, run_id in ids.items()}
    return {case_of[a.id] for a in annotations}


async def test_min_score_keeps_the_rated_runs_whose_answer_the_feedback_confirms(
    rated_runs, redis_url, tmp_path, capsys
):
    code, annotations = await export(redis_url, tmp_path / "a.jsonl", "--min-score", "0.5")
    assert code == 0
    assert kept_cases(annotations, rated_runs) == {"good", "corrected to the same"}
    corrected = next(a for a in annotations if a.id == f"run-{rated_runs['corrected to the same']}")
    assert corrected.answer == "18.0"  # the corrected answer is the annotation's answer
    summary = capsys.readouterr().out
    assert "kept 2 of 8 stored runs" in summary
    for why in (
        "1 score below --min-score",
        "1 no feedback (--min-score)",
        "1 answer differs from the corrected answer",
        "1 failed or cancelled (--include-failed)",
        "1 ended at max_steps (--include-max-steps)",
        "1 an action failed (--include-failed-actions)",
    ):
        assert why in summary


async def test_without_min_score_unrated_runs_qualify_and_a_wrong_answer_still_does_not(
    rated_runs, redis_url, tmp_path
):
    code, annotations = await export(redis_url, tmp_path / "b.jsonl")
    assert code == 0
    assert kept_cases(annotations, rated_runs) == {
        "good",
        "rated low",
        "unrated",
        "corrected to the same",
    }


async def test_failed_max_steps_and_failed_action_runs_come_in_when_asked(
    rated_runs, redis_url, tmp_path
):
    flags = ["--include-failed", "--include-max-steps", "--include-failed-actions"]
    code, annotations = await export(redis_url, tmp_path / "c.jsonl", "--min-score", "1", *flags)
    assert code == 0
    kept = kept_cases(annotations, rated_runs)
    assert kept == {
        "good",
        "corrected to the same",
        "planner fails",
        "cut at max_steps",
        "an action fails",
    }
    failed = next(a for a in annotations if a.id == f"run-{rated_runs['planner fails']}")
    assert [s.subgoal for s in failed.steps] == PLANS[:1]  # the step it completed
    cut = next(a for a in annotations if a.id == f"run-{rated_runs['cut at max_steps']}")
    assert [s.subgoal for s in cut.steps] == PLANS[:2]
    failing = next(a for a in annotations if a.id == f"run-{rated_runs['an action fails']}")
    assert failing.steps[0].executed[1].error is not None


async def test_since_leaves_out_older_runs(rated_runs, redis_url, tmp_path, capsys):
    later = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() + 120))
    code, annotations = await export(redis_url, tmp_path / "d.jsonl", "--since", later)
    assert code == 0 and annotations == []
    assert "8 created before --since" in capsys.readouterr().out
    code, annotations = await export(
        redis_url, tmp_path / "e.jsonl", "--since", "1h", "--min-score", "1"
    )
    assert len(annotations) == 2


async def test_an_evaluations_predictions_rate_the_runs_without_feedback(
    rated_runs, redis_url, tmp_path, capsys
):
    predictions = tmp_path / "gsm8k.iterative.predictions.jsonl"
    lines = [
        {
            "id": "q1",
            "benchmark": "gsm8k",
            "run_id": rated_runs["unrated"],
            "correct": True,
            "gold": "18",
        },
        # a run's own feedback wins over the evaluation's verdict
        {
            "id": "q2",
            "benchmark": "gsm8k",
            "run_id": rated_runs["good"],
            "correct": False,
            "gold": "7",
        },
        {"id": "q3", "benchmark": "gsm8k", "run_id": None, "correct": False, "gold": "1"},
    ]
    predictions.write_text("".join(json.dumps(line) + "\n" for line in lines))
    args = ["--min-score", "1", "--eval-predictions", str(predictions)]
    code, annotations = await export(redis_url, tmp_path / "g.jsonl", *args)
    assert code == 0
    assert kept_cases(annotations, rated_runs) == {"good", "corrected to the same", "unrated"}

    predictions.write_text('{"id": "q1", "prediction": "18"}\n')
    code, _ = await export(redis_url, tmp_path / "h.jsonl", *args)
    assert code == 2
    assert f"{predictions}:1 is not a predictions record" in capsys.readouterr().err


def test_since_reads_durations_and_iso_times_and_refuses_anything_else() -> None:
    now = 1_700_000_000.0
    assert parse_since("7d", now) == now - 7 * 86_400
    assert parse_since("36h", now) == now - 36 * 3600
    assert parse_since("90m", now) == now - 5400
    assert parse_since("2023-11-14T22:13:20", now) == now  # UTC unless it says otherwise
    assert parse_since("2023-11-15T00:13:20+02:00", now) == now
    with pytest.raises(RunExportError, match="neither a duration"):
        parse_since("last week", now)


async def test_export_says_when_it_cannot_reach_redis(tmp_path, capsys) -> None:
    code, _ = await export("redis://127.0.0.1:1/0", tmp_path / "x.jsonl")
    assert code == 2
    assert "cannot read runs from redis://127.0.0.1:1/0" in capsys.readouterr().err


def test_lumos_runs_export_is_this_command() -> None:
    from lumos_cli.__main__ import build_parser

    args = build_parser().parse_args(["runs", "export", "--out", "x.jsonl", "--min-score", "1"])
    assert args.func is run_cli and args.min_score == 1.0
