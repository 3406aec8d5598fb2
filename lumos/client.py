"""`lumos run "task"`: send a task to a running gateway and show each step as it streams.

The gateway streams Server-Sent Events (`event: <type>`, `id: <n>`, `data: <json>`), one per
step of the loop; this prints them as a live trace in the terminal. A step's lines are
printed once the step is executed (or the run ends), so that when another worker takes the
run over and redoes an unfinished step (a `resumed` event), only the attempt that counted
is shown, with one line saying so.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import Any, TextIO

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"


class GatewayError(RuntimeError):
    pass


def iter_sse(lines: Iterator[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Parse an SSE stream into (event type, JSON data) pairs; comments are skipped."""
    event, data = "message", list[str]()
    for raw in lines:
        line = raw.rstrip("\r")
        if not line:
            if data:
                payload = "\n".join(data)
                try:
                    parsed = json.loads(payload)
                except json.JSONDecodeError:
                    parsed = {"text": payload}
                yield event, parsed if isinstance(parsed, dict) else {"value": parsed}
            event, data = "message", list[str]()
        elif line.startswith(":"):
            continue
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))


def render_event(kind: str, ev: dict[str, Any]) -> str | None:
    """One event as a line (or a few) of terminal text; None for events not worth a line."""
    data = ev.get("data", ev)
    step = ev.get("step", "")
    if kind == "subgoal":
        return f"[{step}] plan    {data.get('text', '')}  ({data.get('latency_s', 0):.2f}s)"
    if kind == "actions":
        return f"[{step}] ground  {data.get('text', '')}  ({data.get('latency_s', 0):.2f}s)"
    if kind == "results":
        parts = []
        for e in data.get("executed", []):
            outs = ", ".join(e.get("outputs", []))
            if e.get("error"):
                parts.append(f"{outs}: error: {e['error']}")
            else:
                vals = ", ".join(_short(v) for v in e.get("values", []))
                parts.append(f"{outs} = {vals}")
        return f"[{step}] execute " + "; ".join(parts)
    if kind == "final":
        return f"answer: {data.get('answer')}  (finished by {data.get('finished_by')}, {data.get('steps')} steps)"
    if kind == "error":
        return f"error ({data.get('reason')}): {data.get('message')}"
    if kind == "resumed":
        return (
            f"resumed: attempt {data.get('attempt')} took the run over from worker "
            f"{data.get('previous_worker')} at step {data.get('from_step')}"
        )
    return None


class TraceLines:
    """Holds a step's plan and grounding lines until the step is executed.

    The events of a step a worker did not finish are redone by the next attempt (after a
    `resumed` event); those lines are dropped, never printed.
    """

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.pending: list[tuple[int, str]] = []  # (step, line)

    def add(self, kind: str, ev: dict[str, Any]) -> None:
        line = render_event(kind, ev)
        step = int(ev.get("step") or 0)
        if kind == "resumed":
            from_step = int(ev.get("data", ev).get("from_step") or 1)
            self.pending = [(s, text) for s, text in self.pending if s < from_step]
        elif kind in ("subgoal", "actions"):
            if line:
                self.pending.append((step, line))
            return
        self.flush()
        if line:
            print(line, file=self.out, flush=True)

    def flush(self) -> None:
        for _, text in self.pending:
            print(text, file=self.out, flush=True)
        self.pending = []


def _short(value: Any, limit: int = 80) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def run_task(
    task: str,
    *,
    domain: str,
    formulation: str = "iterative",
    url: str = DEFAULT_URL,
    api_key: str | None = None,
    max_steps: int | None = None,
    out: TextIO = sys.stdout,
    timeout_s: float = 900.0,
) -> int:
    body: dict[str, Any] = {
        "task": task,
        "domain": domain,
        "formulation": formulation,
        "stream": True,
    }
    if max_steps is not None:
        body["max_steps"] = max_steps
    headers = {"Accept": "text/event-stream"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    failed = False
    lines = TraceLines(out)
    try:
        with (
            httpx.Client(timeout=httpx.Timeout(timeout_s, connect=5.0)) as client,
            client.stream("POST", f"{url}/agent/run", json=body, headers=headers) as resp,
        ):
            if resp.status_code >= 400:
                resp.read()
                raise GatewayError(f"the gateway refused the run ({resp.status_code}): {resp.text}")
            for kind, ev in iter_sse(resp.iter_lines()):
                if kind in ("started", "run"):
                    run_id = ev.get("run_id") or ev.get("data", {}).get("run_id")
                    if run_id:
                        print(f"run {run_id}", file=out, flush=True)
                lines.add(kind, ev)
                failed = failed or kind == "error"
            lines.flush()  # a stream cut short: what was planned before it ended
    except httpx.ConnectError as exc:
        raise GatewayError(f"no gateway at {url} ({exc}); start it with `make run`") from exc
    return 1 if failed else 0
