"""Hostile input generated from the OpenAPI schemas: schemathesis calls every operation of
the gateway and of the executor in-process (ASGI, lifespan started) with bounded examples;
no answer may be a 5xx, and an answer with a documented status must match its schema.

That every status and content type answered is documented is checked too: the 404 of the
/agent/runs/{id} routes, the executor's 400 and the text/plain of both /metrics were missing
until RELIABILITY.md's finding 3 was fixed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.specs.openapi.schemas import OpenApiSchema

from gateway.app import create_app as create_gateway
from services.executor.app import create_app as create_executor
from services.executor.settings import ExecutorSettings
from tests.gateway.helpers import settings_for, write_recording
from tests.redis_server import RedisServer, require_redis_binary

EXAMPLES_PER_OPERATION = 30
CHECKS = [not_a_server_error, response_schema_conformance]
DOCUMENTATION_CHECKS = [status_code_conformance, content_type_conformance]
FUZZ = settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,  # the same examples every run: a failure here is reproducible
)


@pytest.fixture(scope="module")
def gateway_schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenApiSchema]:
    directory = tmp_path_factory.mktemp("fuzz-gateway")
    redis = RedisServer(require_redis_binary(), Path(directory) / "redis")
    redis.start()
    recording = write_recording(Path(directory))
    app = create_gateway(settings_for(redis.url, modules=f"scripted:{recording}"))
    try:
        yield schemathesis.openapi.from_asgi("/openapi.json", app)
    finally:
        asgi.shutdown_lifespans()  # the gateway's workers stop before their Redis does
        redis.stop(graceful=False)


@pytest.fixture(scope="module")
def executor_schema() -> Iterator[OpenApiSchema]:
    app = create_executor(
        ExecutorSettings(math_workers=1, code_timeout_s=2.0, code_cpu_s=1), external_tools=False
    )
    try:
        yield schemathesis.openapi.from_asgi("/openapi.json", app)
    finally:
        asgi.shutdown_lifespans()


def fuzz_operation(operation: Any, checks: list[Any]) -> int:
    """EXAMPLES_PER_OPERATION generated requests to one operation; how many were sent."""
    sent = 0

    @FUZZ
    @given(case=operation.as_strategy())
    def call(case: schemathesis.Case) -> None:
        nonlocal sent
        sent += 1
        case.call_and_validate(checks=checks)

    call()
    return sent


def fuzz_every_operation(schema: OpenApiSchema, checks: list[Any]) -> None:
    """Every operation of the schema fuzzed; all failing operations listed."""
    failures: list[str] = []
    sent: dict[str, int] = {}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert operations, "the schema lists no operations"
    for operation in operations:
        try:
            sent[operation.label] = fuzz_operation(operation, checks)
        # hypothesis re-raises the minimal failing example; schemathesis's FailureGroup is a
        # BaseExceptionGroup, not an Exception
        except (Exception, BaseExceptionGroup) as exc:
            failures.append(f"{operation.label}: {exc}")
    assert not failures, "\n\n".join(failures)
    print(f"generated requests per operation: {sent}")


def test_gateway_answers_generated_requests_without_5xx_and_as_documented(gateway_schema):
    fuzz_every_operation(gateway_schema, CHECKS)


def test_executor_answers_generated_requests_without_5xx_and_as_documented(executor_schema):
    fuzz_every_operation(executor_schema, CHECKS)


def test_gateway_schema_documents_every_status_and_content_type(gateway_schema):
    fuzz_every_operation(gateway_schema, DOCUMENTATION_CHECKS)


def test_executor_schema_documents_every_status_and_content_type(executor_schema):
    fuzz_every_operation(executor_schema, DOCUMENTATION_CHECKS)
