"""Errors a client can meet, as JSON that says what happened and what to send instead.

Every error body is ``{"detail": "<message>", "code": "<machine-readable code>"}``;
request validation errors add ``"errors"`` (pydantic's list) and ``"expected"``.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

EXPECTED_RUN_REQUEST = (
    '{"task": "<question, at most N characters>", "domain": "complex_qa|maths|web_agent|webshop", '
    '"formulation": "iterative|onetime", "max_steps": 8, "deadline_s": 300, '
    '"stream": false, "background": false}'
)
EXPECTED_CHAT_REQUEST = (
    '{"model": "lumos-maths", "messages": [{"role": "user", "content": "<the task>"}], '
    '"stream": false}'
)
OPENAI_PATHS = "/v1/"  # the OpenAI-compatible facade (gateway/openai_api.py)


class APIError(Exception):
    def __init__(
        self, status_code: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.message = message
        self.headers = headers


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"detail": message, "code": code, **extra}


def _body_for(request: Request, code: str, message: str, **extra: Any) -> dict[str, Any]:
    """`error_body`, plus OpenAI's ``error`` object on the OpenAI-compatible paths (the
    `openai` SDK and its users read ``error.message``)."""
    body = error_body(code, message, **extra)
    if request.url.path.startswith(OPENAI_PATHS):
        body["error"] = {"message": message, "type": code, "param": None, "code": code}
    return body


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, APIError)
    headers = exc.headers
    if exc.status_code == 401 and headers is None:
        headers = {"WWW-Authenticate": "Bearer"}
    body = _body_for(request, exc.code, exc.message)
    return JSONResponse(body, exc.status_code, headers=headers)


def _location(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc if p != "body"]
    return ".".join(parts) or "body"


def _expected(request: Request) -> str:
    """The example request, with this gateway's task length limit."""
    if request.url.path.startswith(OPENAI_PATHS):
        return EXPECTED_CHAT_REQUEST
    return EXPECTED_RUN_REQUEST.replace("N", str(request.app.state.settings.max_task_chars))


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    expected = _expected(request)
    bad_json = next((e for e in errors if e.get("type") == "json_invalid"), None)
    if bad_json is not None:
        ctx = bad_json.get("ctx") or {}
        where = f" ({ctx.get('error')})" if ctx.get("error") else ""
        message = (
            f"the request body is not valid JSON{where}; send Content-Type: application/json "
            f"with an object like {expected}"
        )
        return JSONResponse(_body_for(request, "invalid_json", message, expected=expected), 400)
    problems = "; ".join(f"{_location(e['loc'])}: {e['msg']}" for e in errors[:10])
    message = f"invalid request: {problems}; expected {expected}"
    safe = [{k: v for k, v in e.items() if k in ("loc", "msg", "type")} for e in errors]
    body = _body_for(request, "invalid_request", message, errors=safe, expected=expected)
    return JSONResponse(body, 422)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    """Starlette's and FastAPI's own HTTP errors in our shape: a `code` on every answer.

    FastAPI answers a body it cannot decode at all (not UTF-8 inside a string, JSON nested
    too deep for the parser) with a bare 400 "There was an error parsing the body".
    """
    assert isinstance(exc, StarletteHTTPException)
    headers = dict(exc.headers) if exc.headers else None
    if exc.status_code == 400:
        expected = _expected(request)
        message = (
            f"the request body cannot be parsed ({exc.detail}): send UTF-8 JSON, nested at "
            f"most a few hundred levels, like {expected}"
        )
        return JSONResponse(
            error_body("invalid_body", message, expected=expected), 400, headers=headers
        )
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return JSONResponse(error_body(code, str(exc.detail)), exc.status_code, headers=headers)


async def _redis_error(request: Request, exc: Exception) -> JSONResponse:
    message = (
        f"the run store (Redis) is unavailable: {type(exc).__name__}: {exc}; retry in a few "
        "seconds (GET /readyz says when it is back)"
    )
    return JSONResponse(error_body("store_unavailable", message), 503, headers={"Retry-After": "2"})


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(APIError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(RedisError, _redis_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)


DRAIN_LIMIT_BYTES = 64 * 1024 * 1024


class BodySizeLimit:
    """Refuse a request body above the limit: at once by its Content-Length, or, for a body
    without one (chunked), as soon as what arrived passes the limit."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self, size: str) -> JSONResponse:
        return JSONResponse(
            error_body(
                "request_too_large",
                f"the request body is {size} bytes; this gateway accepts at most "
                f"{self.max_bytes} bytes (LUMOS_MAX_REQUEST_BYTES); send a shorter task",
            ),
            413,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None:
            if length.isdigit() and int(length) > self.max_bytes:
                await self._too_large(str(int(length)))(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        # No length given: read the body here (it is small by definition, the limit bounds
        # it) and hand it on whole, or refuse it once it passes the limit.
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                # Discard the rest (bounded) before answering: a client still sending when
                # the connection closes sees a reset instead of our 413.
                drained = 0
                while message.get("more_body", False) and drained < DRAIN_LIMIT_BYTES:
                    message = await receive()
                    drained += len(message.get("body", b""))
                await self._too_large(f"more than {self.max_bytes}")(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        replay = iter(messages)

        async def replayed() -> Message:
            try:
                return next(replay)
            except StopIteration:
                return await receive()

        await self.app(scope, replayed, send)
