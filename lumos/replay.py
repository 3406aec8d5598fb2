"""`lumos replay FILE.json`: run the real loop against a recorded run.

Input::

    {"domain": "maths", "formulation": "iterative", "task": "...",
     "planner_outputs": [...], "grounder_outputs": [...], "tool_results": {"R1": "..."}}

Output (stdout, JSON): the prompts in the order they were sent and the answer. It is the
offline debugging tool for a recorded run and the parity check of the prompt contract.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from lumos.agent import DEFAULT_MAX_STEPS, Agent, AgentConfig, RunState
from lumos.scripted import ScriptedExecutor, ScriptedModel
from lumos.trace import Formulation, RunEvent


class ReplayInput(BaseModel):
    domain: str
    formulation: Formulation = Formulation.ITERATIVE
    task: str = Field(min_length=1)
    planner_outputs: list[str]
    grounder_outputs: list[str]
    tool_results: dict[str, Any] = Field(default_factory=dict)
    max_steps: int = Field(default=DEFAULT_MAX_STEPS, ge=1)
    environment: str | None = None


class ReplayOutput(BaseModel):
    planner_prompts: list[str]
    grounder_prompts: list[str]
    answer: str | None
    events: list[RunEvent]


async def replay(spec: ReplayInput) -> ReplayOutput:
    planner = ScriptedModel("planner", spec.planner_outputs)
    grounder = ScriptedModel("grounder", spec.grounder_outputs)
    agent = Agent(
        planner,
        grounder,
        ScriptedExecutor(spec.tool_results),
        # A recording holds whatever the grounder said; no decoding grammar applies.
        AgentConfig(
            domain=spec.domain,
            formulation=spec.formulation,
            max_steps=spec.max_steps,
            constrain_grounding=False,
            environment=spec.environment,
        ),
    )
    state = RunState(task=spec.task.strip())
    events = [ev async for ev in agent.run(spec.task, state=state)]
    answer = next((ev.data.get("answer") for ev in events if ev.type == "final"), None)
    return ReplayOutput(
        planner_prompts=planner.prompts,
        grounder_prompts=grounder.prompts,
        answer=answer,
        events=events,
    )
