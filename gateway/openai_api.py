"""The agent as a model: OpenAI-compatible `/v1/models` and `/v1/chat/completions`.

Every agent the gateway serves (a domain in a formulation that the route table routes) is
one model, `lumos-maths`, `lumos-maths-onetime`, `lumos-complex-qa`, ... A chat completion is a run: the last user
message is the task, earlier system and user messages are the environment description,
and the run goes through the same admission, limits, idempotency and metrics as
`POST /agent/run` (`routes.accept_run`). The answer is the assistant message; the run's id
and trace link are in the `lumos` field and the `X-Run-Id` / `Location` headers.
Streaming sends each step as a chunk whose `delta.reasoning_content` is the step's line
(what `lumos run` prints), the answer as `delta.content`, then `data: [DONE]`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sse_starlette import EventSourceResponse, ServerSentEvent

from gateway.errors import APIError
from gateway.route_table import LiveRoutes, NoRouteError, RouteTable
from gateway.routes import (
    SSE_PING_S,
    Principal,
    _error,
    _settings,
    _store,
    accept_run,
    run_events_until_end,
    wait_finished,
)
from gateway.runs import RunRecord, RunStatus
from gateway.schemas import EventView, RunRequest, run_urls
from gateway.store import RunStore
from lumos.client import render_event
from lumos.domains import DOMAINS
from lumos.trace import Formulation

router = APIRouter(prefix="/v1", tags=["openai"])

MODEL_PREFIX = "lumos-"
OWNER = "lumos"
# Parameters that ask for something an agent run cannot give: a 400 that says so.
TOOL_PARAMETERS = ("tools", "tool_choice", "functions", "function_call", "parallel_tool_calls")
ENVIRONMENT_ROLES = frozenset({"system", "developer", "user"})


@dataclass(frozen=True)
class AgentModel:
    """One served agent as an OpenAI model, with the served models its routes name."""

    id: str
    domain: str
    formulation: Formulation
    planner: str
    grounder: str


def agent_model_id(domain: str, formulation: Formulation) -> str:
    """`maths`, iterative -> `lumos-maths`; `complex_qa`, onetime -> `lumos-complex-qa-onetime`."""
    name = MODEL_PREFIX + domain.replace("_", "-")
    return name if formulation is Formulation.ITERATIVE else f"{name}-{formulation.value}"


def served_agents(table: RouteTable) -> list[AgentModel]:
    """The agents the route table serves: each domain in each formulation whose planner and
    grounder both have a route (the default table, from the settings, routes them all)."""
    agents = []
    for domain in sorted(DOMAINS):
        for formulation in Formulation:
            try:
                routes = table.resolve_run(domain, formulation.value)
            except NoRouteError:
                continue
            agents.append(
                AgentModel(
                    id=agent_model_id(domain, formulation),
                    domain=domain,
                    formulation=formulation,
                    planner=routes["planner"].model,
                    grounder=routes["grounder"].model,
                )
            )
    return agents


def _route_table(request: Request) -> RouteTable:
    """The table runs are routed by now (without a live one, with modules given in-process
    or scripted: the table the settings describe)."""
    live: LiveRoutes | None = getattr(request.app.state, "routes", None)
    return (live or LiveRoutes(_settings(request))).table


# -- bodies ------------------------------------------------------------------------------


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = OWNER
    domain: str = Field(description="extension: the agent's task family")
    formulation: Formulation = Field(description="extension: iterative or onetime")
    planner: str = Field(description="extension: served model name of its planner")
    grounder: str = Field(description="extension: served model name of its grounder")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str
    content: str | list[dict[str, Any]] | None = None


class ChatCompletionRequest(BaseModel):
    """The OpenAI chat request. Sampling parameters (temperature, top_p, max_tokens, seed,
    stop, ...) are accepted and ignored: the planner and grounder decode greedily, one line
    per turn, as the Lumos harness does. `max_steps`, `deadline_s`: extensions, as in
    `POST /agent/run`."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(description="an id from GET /v1/models, e.g. lumos-maths")
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    n: int | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    response_format: dict[str, Any] | None = None
    max_steps: int | None = Field(default=None, ge=1, description="extension")
    deadline_s: float | None = Field(default=None, gt=0, description="extension")


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: Literal["stop"] = "stop"
    logprobs: None = None


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class RunLink(BaseModel):
    """Extension field `lumos` of every completion and chunk: which run answered."""

    run_id: str
    url: str = Field(description="the run with its whole trace: GET it")
    events_url: str
    status: RunStatus | None = None
    steps: int | None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    lumos: RunLink


# -- the request as a run ----------------------------------------------------------------


def _unsupported(parameter: str, why: str) -> APIError:
    return APIError(400, "unsupported_parameter", f"{parameter} is not supported: {why}")


def _check_supported(body: ChatCompletionRequest) -> None:
    extra = body.model_extra or {}
    for name in TOOL_PARAMETERS:
        value = extra.get(name)
        if value not in (None, [], "none"):
            raise _unsupported(
                name,
                "the agent grounds its subgoals into its own tools (the executor's); send the "
                "task without tools",
            )
    if body.n not in (None, 1):
        raise _unsupported(f"n={body.n}", "one run answers one completion; send n=1 or no n")
    if body.logprobs or body.top_logprobs:
        raise _unsupported(
            "logprobs", "the answer comes from the run's tools, not sampled tokens; send none"
        )
    if body.response_format and body.response_format.get("type", "text") != "text":
        raise _unsupported(
            f"response_format {body.response_format.get('type')!r}",
            "the answer is the agent's final answer as text; send none or type text",
        )


def _text(message: ChatMessage, position: int) -> str:
    if isinstance(message.content, str):
        return message.content
    if message.content is None:
        raise APIError(400, "empty_message", f"messages[{position}] has no content; send its text")
    parts = []
    for part in message.content:
        if part.get("type") != "text" or not isinstance(part.get("text"), str):
            raise APIError(
                400,
                "unsupported_content",
                f"messages[{position}] has a {part.get('type')!r} part; the agent reads text "
                "only: send text parts",
            )
        parts.append(part["text"])
    return "".join(parts)


def task_and_environment(messages: Sequence[ChatMessage]) -> tuple[str, str | None]:
    """The task (the last user message) and the environment description (the text of the
    earlier system, developer and user messages, blank-line separated; None without)."""
    *earlier, last = messages
    if last.role != "user":
        raise APIError(
            400,
            "last_message_not_user",
            f"the last message is a {last.role!r} message; the agent runs on the last user "
            "message: end the conversation with the task as a user message",
        )
    environment = []
    for position, message in enumerate(earlier):
        if message.role not in ENVIRONMENT_ROLES:
            raise APIError(
                400,
                "conversation_not_usable",
                f"messages[{position}] is a {message.role!r} message; an agent run starts "
                "from one task and cannot continue a conversation: send the task as the last "
                "user message and any page or state as system messages before it (they "
                "become the environment description)",
            )
        text = _text(message, position).strip()
        if text:
            environment.append(text)
    return _text(last, len(earlier)), "\n\n".join(environment) or None


def _agent(table: RouteTable, model: str) -> AgentModel:
    agents = served_agents(table)
    for agent in agents:
        if agent.id == model:
            return agent
    raise APIError(
        404,
        "model_not_found",
        f"no agent model {model!r}; this gateway serves {', '.join(a.id for a in agents)} "
        "(GET /v1/models; an agent is served when its domain and formulation have a planner "
        "and a grounder route)",
    )


def _run_request(body: ChatCompletionRequest, agent: AgentModel) -> RunRequest:
    task, environment = task_and_environment(body.messages)
    try:
        return RunRequest(
            task=task,
            domain=agent.domain,
            formulation=agent.formulation,
            max_steps=body.max_steps,
            deadline_s=body.deadline_s,
            environment=environment,
            stream=body.stream,
        )
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()
        )
        raise APIError(
            400,
            "invalid_request",
            f"the messages do not make a run: {problems} (the last user message is the task, "
            "earlier messages the environment)",
        ) from None


def _link(run_id: str, record: RunRecord | None = None) -> RunLink:
    urls = run_urls(run_id)
    return RunLink(
        run_id=run_id,
        url=urls["url"],
        events_url=urls["events_url"],
        status=None if record is None else record.status,
        steps=None if record is None else record.steps,
    )


def _usage(record: RunRecord) -> Usage:
    timings = record.timings or {}
    prompt, completion = (
        int(timings.get("prompt_tokens", 0)),
        int(timings.get("completion_tokens", 0)),
    )
    return Usage(
        prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion
    )


def _run_failed(record: RunRecord) -> APIError:
    return APIError(
        502,
        "run_failed",
        f"the agent run {record.id} ended {record.status.value} "
        f"({record.error_reason or 'error'}): {record.error}; its trace: "
        f"GET {run_urls(record.id)['url']}",
        headers={"X-Run-Id": record.id, "Location": run_urls(record.id)["url"]},
    )


# -- endpoints ---------------------------------------------------------------------------


@router.get("/models", response_model=ModelList, summary="The served agents, as models")
async def list_models(request: Request, principal: Principal) -> ModelList:
    cards = [
        ModelCard(
            id=agent.id,
            domain=agent.domain,
            formulation=agent.formulation,
            planner=agent.planner,
            grounder=agent.grounder,
        )
        for agent in served_agents(_route_table(request))
    ]
    return ModelList(data=cards)


@router.post(
    "/chat/completions",
    response_model=ChatCompletion,
    responses={
        200: {
            "description": "the answer (or, with stream, chunks as Server-Sent Events)",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
        400: _error(
            "unsupported parameter (tools, n > 1, logprobs, response_format), or messages "
            "that cannot be a run (last_message_not_user, conversation_not_usable, ...)"
        ),
        401: _error("missing or invalid API key"),
        404: _error("no such agent model (model_not_found)"),
        409: _error("Idempotency-Key reused for a different request"),
        429: _error("too many unfinished runs for this API key (too_many_runs)"),
        502: _error("the run failed (run_failed): its reason, and its trace link"),
        504: _error("the run did not finish in time (run_not_finished)"),
    },
    summary="Run an agent on the last user message, as an OpenAI chat completion",
)
async def chat_completions(
    body: ChatCompletionRequest,
    request: Request,
    principal: Principal,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> object:
    """Non-streaming: the run's answer as the assistant message, `usage` the planner's and
    grounder's tokens, `lumos` the run (id, trace URL). Streaming: one chunk per step
    (`delta.reasoning_content`), the answer as `delta.content`, then `[DONE]`; a run that
    fails ends the stream with an `error` object. Both send `X-Run-Id` and `Location`."""
    _check_supported(body)
    agent = _agent(_route_table(request), body.model)
    accepted = await accept_run(request, principal, _run_request(body, agent), idempotency_key)
    store = _store(request)
    if accepted.mode == "stream":
        include_usage = bool((body.stream_options or {}).get("include_usage"))
        chunks = _chunks(store, accepted.record, agent.id, include_usage)
        return EventSourceResponse(chunks, headers=accepted.headers, ping=SSE_PING_S)
    record = await wait_finished(request, store, accepted.id, accepted.wait_s)
    if not record.status.finished:
        raise APIError(
            504,
            "run_not_finished",
            f"run {record.id} is still {record.status.value} after {accepted.wait_s:g} s; "
            f"follow it with GET {run_urls(record.id)['url']}",
            headers=accepted.headers,
        )
    if record.status is not RunStatus.SUCCEEDED:
        raise _run_failed(record)
    completion = ChatCompletion(
        id=f"chatcmpl-{record.id}",
        created=int(record.created_at),
        model=agent.id,
        choices=[Choice(message=AssistantMessage(content=record.answer or ""))],
        usage=_usage(record),
        lumos=_link(record.id, record),
    )
    return JSONResponse(completion.model_dump(mode="json"), headers=accepted.headers)


async def _chunks(
    store: RunStore, record: RunRecord, model: str, include_usage: bool
) -> AsyncIterator[ServerSentEvent]:
    """The run as `chat.completion.chunk`s: role, one per step, the answer, the end."""
    head: dict[str, Any] = {"id": f"chatcmpl-{record.id}", "object": "chat.completion.chunk"}
    head |= {"created": int(record.created_at), "model": model}

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> ServerSentEvent:
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        return ServerSentEvent(data=json.dumps({**head, "choices": [choice], **extra}))

    link = _link(record.id).model_dump(mode="json")
    yield chunk({"role": "assistant", "content": ""}, lumos=link)
    async for stored in run_events_until_end(store, record.id, None):
        ev = EventView.of(record.id, stored).model_dump(mode="json")
        if stored.event.type == "error":
            message = f"{ev['data'].get('message', 'the run failed')}; its trace: GET {link['url']}"
            error = {"message": message, "type": "run_failed", "param": None}
            error["code"] = str(ev["data"].get("reason", "error"))
            yield ServerSentEvent(data=json.dumps({"error": error, "lumos": link}))
            break
        if stored.event.type == "final":
            answer = ev["data"].get("answer")
            yield chunk(
                {"content": "" if answer is None else str(answer)}, lumos={**link, "event": ev}
            )
            yield chunk({}, "stop")
            if include_usage:
                # the run's hash got its totals in the same write as the final event
                finished = await store.get(record.id)
                usage = _usage(finished).model_dump() if finished else None
                yield ServerSentEvent(data=json.dumps({**head, "choices": [], "usage": usage}))
            break
        line = render_event(stored.event.type, ev)
        if line is not None:
            yield chunk({"reasoning_content": line + "\n"}, lumos={**link, "event": ev})
    yield ServerSentEvent(data="[DONE]")
