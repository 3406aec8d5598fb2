"""Async client for an OpenAI-compatible ``/v1/completions`` endpoint (a vLLM server).

The planner and grounder are plain completion models, so this speaks the completions API
only. Transient failures (connection errors, timeouts, 429, 5xx) are retried with
exponential backoff and jitter inside one overall deadline; everything else surfaces at
once as an `LLMError` subclass that says which server answered what.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from lumos.circuit import CircuitBreaker
from lumos.http import LazyAsyncClient

RegexField = Literal["structured_outputs", "guided_regex"]


class LLMError(Exception):
    """Base of every error this client raises; `url` is the endpoint that failed."""

    def __init__(self, message: str, url: str) -> None:
        super().__init__(message)
        self.url = url
        self.attempts = 1  # how many requests were made before giving up


class LLMConnectionError(LLMError):
    """The server could not be reached (refused, reset, DNS...)."""


class LLMTimeoutError(LLMError):
    """No complete answer within the per-request timeout or the overall deadline."""


class LLMHTTPError(LLMError):
    """The server answered with an error status; `server_message` is what it said."""

    def __init__(self, message: str, url: str, status_code: int, server_message: str) -> None:
        super().__init__(message, url)
        self.status_code = status_code
        self.server_message = server_message


class LLMResponseError(LLMError):
    """The server answered 200 with a body that is not a completions response."""


@dataclass(frozen=True)
class Completion:
    """One completion, with what it cost."""

    text: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    latency_s: float  # of the successful attempt only
    model: str
    attempts: int


def _is_retryable_status(status: int) -> bool:
    return status == 429 or status >= 500


def _server_message(response: httpx.Response) -> str:
    """The error text of an OpenAI-style error body, or the raw body (vLLM uses both shapes)."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:2000] or response.reason_phrase
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str):
            return error
        if body.get("message"):
            return str(body["message"])
        if body.get("detail"):
            return str(body["detail"])
    return response.text.strip()[:2000]


class CompletionClient:
    """Completions against one served model name of one OpenAI-compatible server.

    Pass the process's shared `httpx.AsyncClient` as `client`; without one, the client
    creates its own on first use and closes it in `aclose()`. `deadline_s` bounds one
    `complete()` call across all its attempts and backoff sleeps; `timeout_s` bounds one
    attempt. `regex_field` picks how a regex constraint is sent: ``"structured_outputs"``
    (vLLM >= 0.11: ``{"structured_outputs": {"regex": ...}}``) or ``"guided_regex"``
    (older vLLM: ``{"guided_regex": ...}``).
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        client: httpx.AsyncClient | None = None,
        timeout_s: float = 60.0,
        max_retries: int = 3,
        backoff_base_s: float = 0.25,
        backoff_max_s: float = 4.0,
        deadline_s: float = 180.0,
        api_key: str | None = None,
        regex_field: RegexField = "structured_outputs",
        breaker: CircuitBreaker | None = None,
    ) -> None:
        if regex_field not in ("structured_outputs", "guided_regex"):
            raise ValueError(
                f"unknown regex_field {regex_field!r}; expected structured_outputs or guided_regex"
            )
        self.base_url = base_url.rstrip("/")
        self.url = f"{self.base_url}/v1/completions"
        self.model = model
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.deadline_s = deadline_s
        self.regex_field = regex_field
        self.breaker = breaker  # shared by every client of this server, if given
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = LazyAsyncClient(client)

    def _http(self) -> httpx.AsyncClient:
        return self._client.get()

    async def aclose(self) -> None:
        """Close the HTTP client if this object created it; an injected one stays open."""
        await self._client.aclose()

    async def __aenter__(self) -> CompletionClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def request_body(
        self,
        prompt: str,
        *,
        max_tokens: int = 512,
        stop: str | tuple[str, ...] | list[str] | None = ("\n",),
        temperature: float = 0.0,
        regex: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The JSON body `complete()` sends (no I/O; handy for logging and tests)."""
        body: dict[str, Any] = {
            "model": self.model,
            "prompt": prompt,
            "max_tokens": max_tokens,
            "temperature": temperature,
        }
        if stop is not None:
            body["stop"] = [stop] if isinstance(stop, str) else list(stop)
        if regex is not None:
            if self.regex_field == "structured_outputs":
                body["structured_outputs"] = {"regex": regex}
            else:
                body["guided_regex"] = regex
        if extra:
            body.update(extra)
        return body

    async def complete(
        self,
        prompt: str,
        *,
        max_tokens: int = 512,
        stop: str | tuple[str, ...] | list[str] | None = ("\n",),
        temperature: float = 0.0,
        regex: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> Completion:
        """Complete `prompt`; `regex` constrains the output (vLLM structured outputs)."""
        body = self.request_body(
            prompt,
            max_tokens=max_tokens,
            stop=stop,
            temperature=temperature,
            regex=regex,
            extra=extra,
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.deadline_s
        attempt = 0
        while True:
            attempt += 1
            if self.breaker is not None and (open_s := self.breaker.open_for()) > 0:
                # The server failed `threshold` times in a row: send nothing. Waiting for
                # the end of its cooldown uses one of this call's retries.
                self.breaker.refuse()
                if attempt > self.max_retries or loop.time() + open_s >= deadline:
                    exc = LLMConnectionError(
                        f"{self.url} is failing ({self.breaker.failures} requests in a row "
                        f"failed); no request is sent to it for {open_s:.1f} s more (circuit "
                        "open); check the model server",
                        self.url,
                    )
                    exc.attempts = attempt
                    raise exc
                await asyncio.sleep(open_s)
                continue
            timeout_s = min(self.timeout_s, deadline - loop.time())
            try:
                completion = await self._attempt(body, attempt, timeout_s)
            except (LLMConnectionError, LLMTimeoutError, LLMHTTPError) as exc:
                exc.attempts = attempt
                retryable = not isinstance(exc, LLMHTTPError) or _is_retryable_status(
                    exc.status_code
                )
                if self.breaker is not None and retryable:
                    self.breaker.record_failure()
                if not retryable or attempt > self.max_retries:
                    raise
                delay = self._backoff(attempt)
                if loop.time() + delay >= deadline:
                    raise
                await asyncio.sleep(delay)
                continue
            if self.breaker is not None:
                self.breaker.record_success()
            return completion

    def _backoff(self, attempt: int) -> float:
        cap = min(self.backoff_max_s, self.backoff_base_s * 2.0 ** (attempt - 1))
        return cap * random.uniform(0.5, 1.0)

    async def _attempt(self, body: dict[str, Any], attempt: int, timeout_s: float) -> Completion:
        started = time.perf_counter()
        try:
            response = await self._http().post(
                self.url, json=body, headers=self._headers, timeout=timeout_s
            )
        except httpx.TimeoutException as exc:
            raise LLMTimeoutError(
                f"{self.url} did not answer within {timeout_s:.3g} s ({type(exc).__name__})",
                self.url,
            ) from exc
        except httpx.TransportError as exc:
            raise LLMConnectionError(
                f"cannot reach {self.url}: {exc or type(exc).__name__}; is the model server running?",
                self.url,
            ) from exc
        latency_s = time.perf_counter() - started
        if response.status_code != 200:
            message = _server_message(response)
            raise LLMHTTPError(
                f"{self.url} answered {response.status_code} for model {self.model!r}: {message}",
                self.url,
                response.status_code,
                message,
            )
        return self._parse(response, latency_s, attempt)

    def _parse(self, response: httpx.Response, latency_s: float, attempt: int) -> Completion:
        try:
            data = response.json()
            choice = data["choices"][0]
            usage = data.get("usage") or {}
            return Completion(
                text=choice["text"],
                finish_reason=choice.get("finish_reason"),
                prompt_tokens=int(usage.get("prompt_tokens") or 0),
                completion_tokens=int(usage.get("completion_tokens") or 0),
                latency_s=latency_s,
                model=str(data.get("model") or self.model),
                attempts=attempt,
            )
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise LLMResponseError(
                f"{self.url} answered 200 but not with a completions body: {response.text[:300]!r}",
                self.url,
            ) from exc
