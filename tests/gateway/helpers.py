"""Shared pieces of the gateway tests: a recorded maths run, an in-process server, SSE."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn

# The recorded maths run the benchmarks' scripted model server plays, too.
from bench.scripted_server import GROUNDS, PLANS, TASK
from gateway.settings import GatewaySettings
from lumos.agent import Generation

RESULTS = {"R1": "9", "R2": "18", "R3": "18"}
STEPS = len(GROUNDS)


def recording(delay_s: float = 0.0) -> dict[str, Any]:
    """A replay-style recording for LUMOS_MODULES=scripted:<path>."""
    return {
        "domain": "maths",
        "task": TASK,
        "planner_outputs": PLANS,
        "grounder_outputs": GROUNDS,
        "tool_results": RESULTS,
        "delay_s": delay_s,
    }


def write_recording(directory: Path, delay_s: float = 0.0) -> Path:
    path = directory / "recording.json"
    path.write_text(json.dumps(recording(delay_s)))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def settings_for(redis_url: str, **overrides: Any) -> GatewaySettings:
    values: dict[str, Any] = {
        "redis_url": redis_url,
        "claim_idle_ms": 1000,
        "worker_concurrency": 4,
        **overrides,
    }
    return GatewaySettings(**values)


@asynccontextmanager
async def serve(app: Any, *, lifespan: str = "on") -> AsyncIterator[str]:
    """Run `app` with uvicorn in this event loop (lifespan included unless "off"); yield its
    base URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan=lifespan)
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("uvicorn stopped before it started")
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        done, _ = await asyncio.wait({task}, timeout=15)
        if not done:  # say what hangs before failing
            for t in asyncio.all_tasks():
                t.print_stack(limit=8)
            task.cancel()
            raise RuntimeError("the in-process gateway did not shut down within 15 s")
        task.result()


async def sse_events(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """Parse a text/event-stream response into {id, event, data} dicts (pings skipped)."""
    fields: dict[str, str] = {}
    async for line in response.aiter_lines():
        if line == "":
            if "data" in fields:
                yield {
                    "id": fields.get("id"),
                    "event": fields.get("event"),
                    "data": json.loads(fields["data"]),
                }
            fields = {}
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        fields[name] = value[1:] if value.startswith(" ") else value


class SlowModel:
    """A language module that answers `text` after `delay_s` (or never, with None)."""

    def __init__(self, text: str = "Subgoal 1: think.", delay_s: float | None = None) -> None:
        self.text = text
        self.delay_s = delay_s
        self.calls = 0

    async def generate(self, prompt: str, *, regex: str | None = None) -> Generation:
        self.calls += 1
        if self.delay_s is None:
            await asyncio.Event().wait()
        else:
            await asyncio.sleep(self.delay_s)
        return Generation(text=self.text, prompt_tokens=10, completion_tokens=5, latency_s=0.01)


async def until_finished(client: httpx.AsyncClient, run_id: str, timeout_s: float = 30.0) -> dict:
    """The run's view once it is neither queued nor running (fails after `timeout_s`)."""
    deadline = time.monotonic() + timeout_s
    while (body := (await client.get(f"/agent/runs/{run_id}")).json())["status"] in (
        "queued",
        "running",
    ):
        assert time.monotonic() < deadline, body
        await asyncio.sleep(0.05)
    return dict(body)
