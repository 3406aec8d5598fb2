"""The Lumos agent loop: plan -> ground -> execute, results fed back, until the planner stops.

The loop is written against three small interfaces, so it runs the same against real
model servers, scripted models in tests, or a recorded run (`lumos replay`).
It yields a `RunEvent` for everything that happens; callers stream and store them.

Lumos-Iterative::

    plan(task, steps) -> "Subgoal k: ..."        (or "... Yes, I will stop planning.")
    ground(task, steps, subgoal) -> "R1 = Tool(...); ..."
    execute(actions, variables) -> values bound to R1, R2, ...
    repeat with the results fed back to both models

Lumos-Onetime: plan every subgoal at once, ground them at once, execute everything.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from lumos.actions import (
    Action,
    ActionParseError,
    action_regex,
    complete_actions,
    parse_actions,
)
from lumos.domains import resolve_domain
from lumos.domains.base import Domain
from lumos.prompts import (
    ground_prefill,
    ground_prompt,
    grounding_from_completion,
    is_stop,
    onetime_ground_prompt,
    onetime_plan_prompt,
    plan_prompt,
)
from lumos.trace import ExecutedAction, Formulation, RunEvent, Step, variables_of

# The original harness runs 16 model turns (8 plan/ground iterations) for maths and 10
# (5 iterations) for complex QA; 8 steps is a default that never cuts a Lumos run short.
DEFAULT_MAX_STEPS = 8


@dataclass(frozen=True)
class Generation:
    """A model's completion and what it cost."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    model: str | None = None  # the served model that answered, where the module knows it
    # "length" when the completion was cut by the token limit; None where unknown
    finish_reason: str | None = None


class LanguageModule(Protocol):
    """A planner or grounder: a prompt in, one completion (cut at the newline) out."""

    async def generate(self, prompt: str, *, regex: str | None = None) -> Generation: ...


@dataclass(frozen=True)
class ExecutionRequest:
    domain: str
    actions: Sequence[Action]
    variables: dict[str, Any]
    task: str
    subgoals: Sequence[str]
    run_id: str | None = None


class ActionExecutor(Protocol):
    """The execution module: runs actions with tools, one `ExecutedAction` per action."""

    async def execute(self, request: ExecutionRequest) -> list[ExecutedAction]: ...


OnToolError = Literal["continue", "fail"]


@dataclass
class AgentConfig:
    domain: str
    formulation: Formulation = Formulation.ITERATIVE
    max_steps: int = DEFAULT_MAX_STEPS
    # Constrain the grounder to its domain's action grammar (vLLM structured outputs), so
    # even a model that has never seen Lumos data emits actions the executor can run.
    constrain_grounding: bool = True
    # "continue": a failed action is fed back the way Lumos logs it (the bare action, no
    # value) and planning goes on; "fail": the run ends with an error at the first failure.
    on_tool_error: OnToolError = "continue"
    environment: str | None = None


@dataclass
class RunState:
    """Everything the loop knows about a run; rebuilt from stored steps on resume."""

    task: str
    steps: list[Step] = field(default_factory=list)


class Agent:
    """One configured Lumos agent over a planner, a grounder and an executor."""

    def __init__(
        self,
        planner: LanguageModule,
        grounder: LanguageModule,
        executor: ActionExecutor,
        config: AgentConfig,
    ) -> None:
        self.planner = planner
        self.grounder = grounder
        self.executor = executor
        self.config = config
        self.domain: Domain = resolve_domain(config.domain)
        tools = self.domain.tool_names
        constrain = config.constrain_grounding
        self._regex = action_regex(tools) if constrain else None
        # After a prefill such as WebShop's "R1 = ", only the rest of the action is generated.
        self._regex_after_prefill = action_regex(tools, prefilled=True) if constrain else None

    async def run(
        self,
        task: str,
        *,
        completed: Sequence[Step] = (),
        run_id: str | None = None,
        state: RunState | None = None,
    ) -> AsyncIterator[RunEvent]:
        """Run `task`, yielding events; `completed` resumes after already executed steps."""
        st = state or RunState(task=task.strip())
        st.steps = list(completed)
        if not completed:
            yield RunEvent(
                type="started",
                data={
                    "task": st.task,
                    "domain": self.domain.name,
                    "formulation": self.config.formulation.value,
                    "max_steps": self.config.max_steps,
                },
            )
        if self.config.formulation is Formulation.ONETIME:
            async for ev in self._onetime(st, run_id):
                yield ev
        else:
            async for ev in self._iterative(st, run_id):
                yield ev

    async def _iterative(self, st: RunState, run_id: str | None) -> AsyncIterator[RunEvent]:
        while True:
            index = len(st.steps) + 1
            if index > self.config.max_steps:
                # Like the original harness's fixed number of turns: the run ends and its
                # answer is decided from what was executed so far.
                async for ev in self._finish(st, run_id, finished_by="max_steps"):
                    yield ev
                return
            prompt = plan_prompt(self.domain, st.task, st.steps, self.config.environment)
            try:
                gen = await self.planner.generate(prompt)
            except Exception as exc:
                yield _module_failure(index, "planner", exc)
                return
            subgoal = gen.text.strip()
            stop = is_stop(subgoal)
            yield RunEvent(type="subgoal", step=index, data=_module_data(gen, subgoal, stop=stop))
            if stop:
                async for ev in self._finish(st, run_id, finished_by="planner_stop"):
                    yield ev
                return

            prompt = ground_prompt(self.domain, st.task, st.steps, subgoal)
            async for ev in self._ground_and_execute(st, run_id, index, subgoal, prompt):
                yield ev
                if ev.type == "error":
                    return

    async def _onetime(self, st: RunState, run_id: str | None) -> AsyncIterator[RunEvent]:
        if not st.steps:  # a resumed one-pass run has nothing left but its answer
            prompt = onetime_plan_prompt(self.domain, st.task, self.config.environment)
            try:
                gen = await self.planner.generate(prompt)
            except Exception as exc:
                yield _module_failure(1, "planner", exc)
                return
            plan = gen.text.strip()
            yield RunEvent(type="subgoal", step=1, data=_module_data(gen, plan, stop=False))
            prompt = onetime_ground_prompt(self.domain, st.task, plan)
            async for ev in self._ground_and_execute(st, run_id, 1, plan, prompt):
                yield ev
                if ev.type == "error":
                    return
        async for ev in self._finish(st, run_id, finished_by="onetime"):
            yield ev

    async def _ground_and_execute(
        self, st: RunState, run_id: str | None, index: int, subgoal: str, prompt: str
    ) -> AsyncIterator[RunEvent]:
        prefilled = bool(ground_prefill(self.domain, st.steps))
        regex = self._regex_after_prefill if prefilled else self._regex
        try:
            gen = await self.grounder.generate(prompt, regex=regex)
        except Exception as exc:
            yield _module_failure(index, "grounder", exc)
            return
        grounding = grounding_from_completion(self.domain, st.steps, gen.text)
        cut: dict[str, Any] | None = None
        try:
            actions = parse_actions(grounding, allowed=self.domain.tool_names)
        except ActionParseError as exc:
            # A grounding cut by the token limit (the grammar bounds each action, not the
            # whole line): its complete actions run and the run goes on; only the action
            # the limit cut off is dropped. Without a complete action there is nothing to run.
            kept: list[Action] = []
            if gen.finish_reason == "length":
                kept, kept_text = complete_actions(grounding, self.domain.tool_names)
            if not kept:
                yield RunEvent(type="actions", step=index, data=_module_data(gen, grounding))
                cut_note = (
                    f" (cut at the token limit after {gen.completion_tokens} tokens, before "
                    "its first action was complete)"
                    if gen.finish_reason == "length"
                    else ""
                )
                yield _error_event(
                    index,
                    "grounding_parse_error",
                    f"the grounder's output for step {index} is not a valid action list"
                    f"{cut_note}: {exc}",
                    span=[exc.start, exc.end],
                )
                return
            actions = kept
            cut = {"dropped": grounding.strip()[len(kept_text) :], "kept_actions": len(kept)}
            grounding = kept_text
        data = _module_data(gen, grounding)
        if cut is not None:
            data["cut_at_token_limit"] = cut
        data["actions"] = [
            {"outputs": list(a.outputs), "name": a.name, "args": a.args} for a in actions
        ]
        yield RunEvent(type="actions", step=index, data=data)

        request = ExecutionRequest(
            domain=self.domain.name,
            actions=actions,
            variables=variables_of(st.steps),
            task=st.task,
            subgoals=[s.subgoal for s in st.steps] + [subgoal],
            run_id=run_id,
        )
        started = time.perf_counter()
        try:
            executed = await self.executor.execute(request)
        except Exception as exc:
            yield _module_failure(index, "executor", exc)
            return
        elapsed = time.perf_counter() - started
        if len(executed) != len(actions):
            yield _error_event(
                index,
                "executor_failed",
                f"the executor returned {len(executed)} results for {len(actions)} actions",
            )
            return
        step = Step(index=index, subgoal=subgoal, grounding=grounding, executed=executed)
        st.steps.append(step)
        yield RunEvent(
            type="results",
            step=index,
            data={
                "executed": [e.model_dump(mode="json") for e in executed],
                "latency_s": elapsed,
            },
        )
        failed = [e for e in executed if e.error is not None]
        if failed and self.config.on_tool_error == "fail":
            first = failed[0]
            yield _error_event(
                index,
                "tool_error",
                f"{first.action.format()} failed: {first.error}",
            )

    async def _finish(
        self, st: RunState, run_id: str | None, *, finished_by: str
    ) -> AsyncIterator[RunEvent]:
        decision = self.domain.final_answer(st.task, st.steps, formulation=self.config.formulation)
        answer = None if decision.value is None else self.domain.answer_text(decision.value)
        data: dict[str, Any] = {"finished_by": finished_by, "source": decision.source}
        if decision.action is not None:
            request = ExecutionRequest(
                domain=self.domain.name,
                actions=[decision.action],
                variables=variables_of(st.steps),
                task=st.task,
                subgoals=[s.subgoal for s in st.steps],
                run_id=run_id,
            )
            started = time.perf_counter()
            try:
                (result,) = await self.executor.execute(request)
            except Exception as exc:
                yield _module_failure(len(st.steps), "executor", exc)
                return
            data["latency_s"] = time.perf_counter() - started
            data["final_action"] = result.model_dump(mode="json")
            if result.error is None and result.values:
                answer = self.domain.answer_text(result.values[0])
        data["answer"] = answer
        data["steps"] = len(st.steps)
        yield RunEvent(type="final", step=len(st.steps), data=data)


def _module_data(gen: Generation, text: str, **extra: Any) -> dict[str, Any]:
    data = {
        "text": text,
        "prompt_tokens": gen.prompt_tokens,
        "completion_tokens": gen.completion_tokens,
        "latency_s": gen.latency_s,
        **extra,
    }
    if gen.model is not None:
        data["model"] = gen.model
    return data


def _module_failure(step: int, module: str, exc: Exception) -> RunEvent:
    # Module clients map transport failures to their own exception types with a message
    # that names the server; the loop only records which module failed and why.
    return _error_event(
        step, f"{module}_failed", f"{module} failed: {exc}", error_type=type(exc).__name__
    )


def _error_event(step: int, reason: str, message: str, **extra: Any) -> RunEvent:
    return RunEvent(type="error", step=step, data={"reason": reason, "message": message, **extra})


def steps_from_events(events: Sequence[RunEvent]) -> list[Step]:
    """Rebuild the completed steps of a run from its events (what a resumed worker does).

    A step counts as completed once its `results` event exists; a subgoal or grounding
    without results is redone, since nothing of it reached the executor's variables.
    """
    subgoals: dict[int, str] = {}
    groundings: dict[int, str] = {}
    steps: list[Step] = []
    for ev in events:
        if ev.type == "subgoal":
            subgoals[ev.step] = ev.data["text"]
        elif ev.type == "actions":
            groundings[ev.step] = ev.data["text"]
        elif ev.type == "results":
            executed = [ExecutedAction.model_validate(e) for e in ev.data["executed"]]
            steps.append(
                Step(
                    index=ev.step,
                    subgoal=subgoals[ev.step],
                    grounding=groundings[ev.step],
                    executed=executed,
                )
            )
    return steps
