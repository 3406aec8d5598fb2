"""A measurement harness, not a model: an OpenAI-compatible completions server that answers
at once with recorded planner and grounder outputs, so a benchmark times our own code.

The answer is chosen by the prompt's shape: a grounder prompt contains "Subgoal to be
grounded", a planner prompt does not (the served model name is the fallback), and the step
is the number of user turns in the prompt, so one server answers any number of concurrent
or consecutive runs. Usage counts whitespace-separated words, which is enough for a harness
that never tokenizes.

Two scripts: the default maths run of three steps (`TASK`), or with ``--steps S`` a counting
run of S steps (`COUNTING_TASK`, `counting_recording`), whose answer `counting_answer` knows.
``GET /recorded`` returns the request bodies received since ``POST /recorded/start``
(``DELETE /recorded`` stops recording), so timed runs pay nothing for it.

    python -m bench.scripted_server --port 8101 [--recording rec.json | --steps 5]
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from pydantic import BaseModel, ConfigDict

from lumos.prompts import USER

# A maths run of three steps, then the planner stops (the gateway tests' recorded run too).
TASK = "Janet has 16 eggs. She eats 3 and bakes with 4. She sells the rest for $2 each. How much?"
PLANS = [
    "Subgoal 1: Calculate how many eggs are left.",
    "No, I will keep planning. Subgoal 2: Calculate the money she makes.",
    "No, I will keep planning. Subgoal 3: Double-check the money.",
    "Yes, I will stop planning.",
]
GROUNDS = ["R1 = Calculator(16-3-4)", "R2 = Calculator(R1*2)", "R3 = Calculator(R2*1)"]
SERVED_MODELS = ("lumos-plan", "lumos-ground")
GROUND_MARKER = "Subgoal to be grounded"


class Recording(BaseModel):
    planner_outputs: list[str] = PLANS
    grounder_outputs: list[str] = GROUNDS
    model_config = ConfigDict(extra="ignore")


COUNTING_TASK = "Start from 2 and add one number per step. What is the result?"


def counting_recording(steps: int) -> Recording:
    """S subgoals then the stop phrase; ``R1 = Calculator(1+1)``, then each step adds its
    number to the previous result."""
    plans = [f"Subgoal 1: Calculate the value of step 1 of {steps}."]
    plans += [
        f"No, I will keep planning. Subgoal {k}: Calculate the value of step {k} of {steps}."
        for k in range(2, steps + 1)
    ]
    grounds = ["R1 = Calculator(1+1)"]
    grounds += [f"R{k} = Calculator(R{k - 1}+{k})" for k in range(2, steps + 1)]
    return Recording(
        planner_outputs=[*plans, "Yes, I will stop planning."], grounder_outputs=grounds
    )


def counting_answer(steps: int) -> str:
    """The counting run's result after `steps` steps."""
    return str(2 + sum(range(2, steps + 1)))


class CompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # stop, temperature, structured_outputs, ...

    model: str
    prompt: str
    max_tokens: int = 16


def answer_for(recording: Recording, model: str, prompt: str) -> str:
    """The recorded output for this prompt: module from its shape, step from its turns."""
    grounding = GROUND_MARKER in prompt if USER in prompt else model.endswith("ground")
    outputs = recording.grounder_outputs if grounding else recording.planner_outputs
    step = max(prompt.count(USER), 1)
    return outputs[min(step, len(outputs)) - 1]


def create_app(recording: Recording | None = None) -> FastAPI:
    rec = recording or Recording()
    app = FastAPI(title="scripted completions (benchmark harness)")
    ids = itertools.count(1)
    received: list[dict[str, Any]] = []
    recording_on = False

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    def set_recording(on: bool) -> dict[str, bool]:
        nonlocal recording_on
        received.clear()
        recording_on = on
        return {"recording": on}

    @app.post("/recorded/start")
    async def start_recording() -> dict[str, bool]:
        return set_recording(True)

    @app.get("/recorded")
    async def recorded() -> list[dict[str, Any]]:
        return received

    @app.delete("/recorded")
    async def stop_recording() -> dict[str, bool]:
        return set_recording(False)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [{"id": m, "object": "model", "owned_by": "bench"} for m in SERVED_MODELS],
        }

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request) -> dict[str, Any]:
        if recording_on:
            received.append(await request.json())  # as sent, not as validated
        text = answer_for(rec, body.model, body.prompt)
        prompt_tokens = len(body.prompt.split())
        completion_tokens = len(text.split())
        return {
            "id": f"cmpl-bench-{next(ids)}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": body.model,
            "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": "stop"}],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }

    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8101)
    script = parser.add_mutually_exclusive_group()
    script.add_argument(
        "--recording", type=Path, help="replay-style JSON (planner/grounder outputs)"
    )
    script.add_argument("--steps", type=int, help="the counting run of this many steps")
    args = parser.parse_args(argv)
    rec = Recording()
    if args.recording is not None:
        rec = Recording.model_validate(json.loads(args.recording.read_text()))
    elif args.steps is not None:
        rec = counting_recording(args.steps)
    uvicorn.run(create_app(rec), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
