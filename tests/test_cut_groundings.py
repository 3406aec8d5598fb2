"""A grounding cut by the token limit keeps its complete actions and the run goes on.

The action grammar bounds each action (every repetition is bounded) but a line of up to ten
long actions can still outgrow `max_tokens`; the completion then ends mid-action with
finish_reason "length". The actions before the cut are whole and are executed.
"""

from __future__ import annotations

import httpx
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.metrics import GatewayMetrics
from gateway.modules import MAX_TOKENS, CompletionModule
from lumos.actions import Action, complete_actions, format_actions, parse_actions
from lumos.agent import Agent, AgentConfig, Generation
from lumos.llm import CompletionClient
from lumos.scripted import ScriptedExecutor, ScriptedModel

TASK = "What is (2 + 3) * 4?"
PLANS = [
    "Subgoal 1: Calculate the sum and the product.",
    "Yes, I will stop planning.",
]
CUT = "R1 = Calculator(2+3); R2 = Calculator(R1*"


class CutGrounder:
    """A grounder whose completion ends where the token limit cut it."""

    def __init__(self, text: str, finish_reason: str | None = "length") -> None:
        self.text = text
        self.finish_reason = finish_reason

    async def generate(self, prompt: str, *, regex: str | None = None) -> Generation:
        return Generation(
            text=self.text, completion_tokens=MAX_TOKENS, finish_reason=self.finish_reason
        )


async def _run(grounder: CutGrounder) -> list:
    agent = Agent(
        ScriptedModel("planner", PLANS),
        grounder,
        ScriptedExecutor({"R1": "5"}),
        AgentConfig(domain="maths"),
    )
    return [ev async for ev in agent.run(TASK)]


async def test_a_cut_grounding_runs_its_complete_actions_and_the_run_goes_on():
    events = await _run(CutGrounder(CUT))
    assert [e.type for e in events] == [
        "started",
        "subgoal",
        "actions",
        "results",
        "subgoal",
        "final",
    ]
    actions = events[2].data
    assert actions["text"] == "R1 = Calculator(2+3)"
    assert [a["name"] for a in actions["actions"]] == ["Calculator"]
    assert actions["cut_at_token_limit"] == {"dropped": "; R2 = Calculator(R1*", "kept_actions": 1}
    assert events[3].data["executed"][0]["values"] == ["5"]
    assert events[-1].data["answer"] == "5"
    metrics = GatewayMetrics()
    for ev in events:
        metrics.observe_event(ev)
    assert b"lumos_grounding_cuts_total 1.0" in metrics.exposition()[0]


async def test_a_grounding_cut_before_its_first_action_is_complete_fails_saying_so():
    events = await _run(CutGrounder("R1 = Calculator(2+3*(4"))
    assert [e.type for e in events][-1] == "error"
    assert events[-1].data["reason"] == "grounding_parse_error"
    assert f"cut at the token limit after {MAX_TOKENS} tokens" in events[-1].data["message"]


async def test_a_malformed_grounding_that_was_not_cut_still_fails():
    # Not cut (the model stopped by itself): nothing is guessed, the output is wrong.
    events = await _run(CutGrounder(CUT, finish_reason="stop"))
    assert events[-1].type == "error"
    assert events[-1].data["reason"] == "grounding_parse_error"
    assert "token limit" not in events[-1].data["message"]


def test_complete_actions_stop_at_an_unknown_tool_and_at_garbage():
    kept, text = complete_actions(
        "R1 = Calculator(1); R2 = Code(x); R3 = Calculator(2)", ["Calculator"]
    )
    assert (kept, text) == ([Action(("R1",), "Calculator", "1")], "R1 = Calculator(1)")
    assert complete_actions("garbage") == ([], "")
    assert complete_actions("") == ([], "")


ARG_TEXT = st.text(alphabet="abcxyz0123456789+-*/ ,:?R", max_size=12)
ARGS = st.one_of(ARG_TEXT, st.builds(lambda a, b, c: f"{a}({b}){c}", ARG_TEXT, ARG_TEXT, ARG_TEXT))
ACTIONS = st.lists(
    st.builds(
        lambda n, name, args: Action((f"R{n}",), name, args),
        st.integers(1, 20),
        st.sampled_from(["Calculator", "SolveEquation", "QA"]),
        ARGS,
    ),
    min_size=1,
    max_size=6,
)


@settings(max_examples=300, deadline=None)
@given(ACTIONS, st.data())
def test_a_grounding_cut_anywhere_keeps_exactly_the_actions_before_the_cut(actions, data):
    text = format_actions(actions)
    cut = data.draw(st.integers(0, len(text)))
    kept, kept_text = complete_actions(text[:cut])
    ends, at = [], 0
    for a in actions:
        at = text.index(a.format(), at) + len(a.format())
        ends.append(at)
    whole = sum(1 for end in ends if end <= cut)
    assert kept == actions[:whole]
    assert kept_text == format_actions(actions[:whole])
    if kept:
        assert parse_actions(kept_text) == kept


async def test_the_gateway_grounder_reports_that_vllm_cut_the_completion():
    def answer(request: httpx.Request) -> httpx.Response:
        body = {
            "choices": [{"index": 0, "text": CUT, "finish_reason": "length"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": MAX_TOKENS},
            "model": "lumos-ground",
        }
        return httpx.Response(200, json=body)

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as http:
        module = CompletionModule(CompletionClient("http://model", "lumos-ground", client=http))
        gen = await module.generate("prompt", regex="R1 = .*")
    assert gen.finish_reason == "length"
    assert gen.text == CUT
