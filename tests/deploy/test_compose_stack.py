"""The compose deployment, running: `make compose-test` (scripts/compose_test.sh) builds the
images, starts `docker-compose.yml` + `docker-compose.cpu.yml` + `tests/deploy/compose.stack.yml`
on a Docker engine and runs this module against it; without that stack it skips.

Every request goes to 127.0.0.1 (the ports compose.stack.yml publishes) or, from inside a
container, to another container of this stack. The model (Gemma 3 270M with the Lumos-mini
adapters, on CPU) is small and weak: answers are checked loosely (a finished run with a
number in its answer), not for their value.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from typing import Any

import httpx
import pytest

from tests.deploy.repository import REPO

PROJECT = os.environ.get("LUMOS_COMPOSE_PROJECT", "")
FILES = ["-f", "docker-compose.yml", "-f", "docker-compose.cpu.yml"]
FILES += ["-f", "tests/deploy/compose.stack.yml"]
PROMETHEUS = f"http://127.0.0.1:{os.environ.get('LUMOS_COMPOSE_PROMETHEUS_PORT', '19090')}"
RUN_TIMEOUT_S = 900.0
TERMINAL = {"succeeded", "failed", "cancelled", "timed_out"}
TASK = "Tom has 3 boxes of 12 pencils and gives away 7 pencils. How many pencils are left?"

pytestmark = [
    pytest.mark.skipif(not PROJECT, reason="needs the compose stack: make compose-test"),
    pytest.mark.slow,
    pytest.mark.timeout(1800),
]

# Runs that finished in this module: the Redis restart must lose none of them.
FINISHED: dict[str, dict[str, Any]] = {}


def compose(*args: str, timeout: float = 300) -> str:
    done = subprocess.run(
        ["docker", "compose", "-p", PROJECT, *FILES, *args],
        cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"docker compose {' '.join(args)}:\n{done.stderr}"
    return done.stdout


def docker(*args: str, timeout: float = 120) -> str:
    done = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"docker {' '.join(args)}:\n{done.stderr}"
    return done.stdout


def gateways() -> dict[str, tuple[str, str]]:
    """Running gateway replicas: container id -> (its host name, its URL on 127.0.0.1)."""
    out = {}
    for cid in compose("ps", "-q", "gateway").split():
        info = json.loads(docker("inspect", cid))[0]
        if not info["State"]["Running"]:
            continue
        port = info["NetworkSettings"]["Ports"]["8000/tcp"][0]["HostPort"]
        out[cid] = (info["Config"]["Hostname"], f"http://127.0.0.1:{port}")
    return out


def any_gateway() -> str:
    return next(iter(gateways().values()))[1]


def wait_ready(url: str, deadline_s: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + deadline_s
    said: Any = None
    while time.monotonic() < deadline:
        try:
            resp = httpx.get(f"{url}/readyz", timeout=10)
            said = resp.json()
            if resp.status_code == 200:
                return said
        except (httpx.HTTPError, ValueError) as exc:
            said = repr(exc)
        time.sleep(2)
    pytest.fail(f"{url}/readyz not green after {deadline_s:.0f} s: {said}")


def wait_finished(url: str, run_id: str, deadline_s: float = RUN_TIMEOUT_S) -> dict[str, Any]:
    deadline = time.monotonic() + deadline_s
    run: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            run = httpx.get(f"{url}/agent/runs/{run_id}", timeout=30).json()
        except (httpx.HTTPError, ValueError):
            time.sleep(2)
            continue
        if run.get("status") in TERMINAL:
            return run
        time.sleep(2)
    pytest.fail(f"run {run_id} not finished after {deadline_s:.0f} s: {run.get('status')}")


def assert_numeric_answer(run: dict[str, Any]) -> None:
    assert run["status"] == "succeeded", run
    assert run["answer"] and re.search(r"\d", run["answer"]), run["answer"]
    FINISHED[run["id"]] = run


def steps_once(run: dict[str, Any]) -> None:
    """Each step's results are in the trace once, whichever attempt wrote them."""
    steps = [e["step"] for e in run["trace"] if e["type"] == "results"]
    assert len(steps) == len(set(steps)), [
        (e["type"], e["step"], e["attempt"]) for e in run["trace"]
    ]


def test_every_gateway_replica_is_ready() -> None:
    replicas = gateways()
    assert len(replicas) == 2, replicas
    for _, url in replicas.values():
        body = wait_ready(url)
        assert set(body["checks"]) >= {"redis", "planner", "grounder", "executor"}, body
        assert all(c["status"] == "ok" for c in body["checks"].values()), body


def test_a_sync_run_answers_a_maths_question() -> None:
    t0 = time.monotonic()
    resp = httpx.post(
        f"{any_gateway()}/agent/run", json={"task": TASK, "domain": "maths"}, timeout=RUN_TIMEOUT_S
    )
    assert resp.status_code == 200, resp.text
    run = resp.json()
    print(
        f"sync run: {time.monotonic() - t0:.1f} s, {run['steps']} steps, answer {run['answer']!r}"
    )
    assert_numeric_answer(run)
    steps_once(run)


def test_a_streamed_run_sends_every_event_then_the_answer() -> None:
    url = any_gateway()
    body = {"task": TASK, "domain": "maths", "stream": True}
    t0 = time.monotonic()
    types: list[str] = []
    run_id = None
    with httpx.stream("POST", f"{url}/agent/run", json=body, timeout=RUN_TIMEOUT_S) as resp:
        assert resp.status_code == 200, resp.read()
        assert resp.headers["content-type"].startswith("text/event-stream")
        for line in resp.iter_lines():
            if line.startswith("data:"):
                event = json.loads(line[5:])
                types.append(event.get("type", ""))
                run_id = run_id or event.get("run_id")
    assert types and types[0] == "started" and types[-1] == "final", types
    assert run_id
    run = httpx.get(f"{url}/agent/runs/{run_id}", timeout=30).json()
    print(f"stream run: {time.monotonic() - t0:.1f} s, {len(types)} events")
    assert [e["type"] for e in run["trace"]] == types
    assert_numeric_answer(run)


def test_a_background_run_is_accepted_then_finishes() -> None:
    url = any_gateway()
    t0 = time.monotonic()
    body = {"task": TASK, "domain": "maths", "background": True, "formulation": "onetime"}
    resp = httpx.post(f"{url}/agent/run", json=body, timeout=30)
    assert resp.status_code == 202, resp.text
    accepted = resp.json()
    run = wait_finished(url, accepted["id"])
    print(f"background run (onetime): {time.monotonic() - t0:.1f} s, answer {run['answer']!r}")
    assert_numeric_answer(run)


def test_prometheus_scrapes_every_target_of_the_stack() -> None:
    deadline = time.monotonic() + 120
    targets: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        targets = httpx.get(f"{PROMETHEUS}/api/v1/targets", timeout=10).json()["data"][
            "activeTargets"
        ]
        if targets and all(t["health"] == "up" for t in targets):
            break
        time.sleep(3)
    jobs = {t["labels"]["job"]: t["health"] for t in targets}
    assert jobs == dict.fromkeys(
        ("prometheus", "gateway", "executor", "planner", "grounder"), "up"
    ), [(t["labels"]["job"], t["health"], t.get("lastError")) for t in targets]
    # what the gateway's and vLLM's own metrics look like once scraped
    for query in (
        "lumos_runs_in_progress",  # whichever replica `gateway:8000` resolves to
        "lumos_executor_tool_latency_seconds_count",
        '{__name__=~"vllm[:_]e2e_request_latency_seconds_count"}',
    ):
        # scraped every 15 s: the runs above may not be in the last scrape yet
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            answer = httpx.get(f"{PROMETHEUS}/api/v1/query", params={"query": query}, timeout=10)
            if answer.json()["data"]["result"]:
                break
            time.sleep(3)
        assert answer.json()["data"]["result"], f"no samples of {query}"


BROWSER_CHECK = """
import asyncio, json
from lumos.actions import Action
from services.executor.settings import ExecutorSettings
from services.executor.tools.base import ToolContext, ToolError
from services.executor.tools.web.tools import build_tools

async def main():
    click, type_, _ = build_tools(ExecutorSettings())
    assert click.sessions is not None, "no browser in the image"
    ctx = ToolContext(domain="web_agent", task="t", run_id="compose", extras={"url": URL})
    (typed,) = await type_.run(Action(("R1",), "TYPE", "Env, QUERY: Search products, TEXT: lumos"), {}, ctx)
    (clicked,) = await click.run(Action(("R2",), "CLICK", "Env, QUERY: About this shop"), {}, ctx)
    other = ToolContext(domain="web_agent", task="t", run_id="refused", extras={"url": REFUSED})
    try:
        await click.run(Action(("R3",), "CLICK", "Env, QUERY: x"), {}, other)
        refused = ""
    except ToolError as exc:
        refused = str(exc)
    print(json.dumps({"typed": typed, "clicked": clicked, "refused": refused}))

asyncio.run(asyncio.wait_for(main(), 120))
"""


def test_the_executor_image_runs_web_actions_in_its_chromium() -> None:
    """The web tools' live mode in the executor container, on a page of the compose network.

    Through the gateway a web_agent run cannot name its start page yet (the executor's
    /v1/execute has no `url` for ToolContext.extras), so this drives the executor's own
    tool code inside its container: Debian's Chromium, Playwright, the allow-list
    (LUMOS_EXECUTOR_WEB_ALLOWED_HOSTS=webpage) and the compose network's DNS.
    """
    script = BROWSER_CHECK.replace("URL", '"http://webpage:8080/"', 1).replace(
        "REFUSED", '"http://prometheus:9090/"', 1
    )
    out = compose("exec", "-T", "executor", "python", "-c", script, timeout=180)
    result = json.loads(out.strip().splitlines()[-1])
    assert "lumos" in result["typed"], result
    assert "about.html" in result["clicked"] and "About" in result["clicked"], result
    assert "prometheus:9090" in result["refused"] and "allow-list" in result["refused"], result


def test_a_run_survives_the_kill_of_its_gateway_replica() -> None:
    replicas = gateways()
    assert len(replicas) == 2, replicas
    url = next(iter(replicas.values()))[1]
    body = {"task": TASK, "domain": "maths", "background": True}
    run_id = httpx.post(f"{url}/agent/run", json=body, timeout=30).json()["id"]
    deadline = time.monotonic() + 120
    run: dict[str, Any] = {}
    while time.monotonic() < deadline:
        run = httpx.get(f"{url}/agent/runs/{run_id}", timeout=30).json()
        if run["status"] == "running" and run["worker"]:
            break
        time.sleep(0.2)
    assert run.get("status") == "running", run
    host = run["worker"].split(":")[0]
    (victim,) = [cid for cid, (h, _) in replicas.items() if h == host]
    (survivor_host, survivor_url) = next(v for cid, v in replicas.items() if cid != victim)
    docker("kill", victim)
    t0 = time.monotonic()
    try:
        run = wait_finished(survivor_url, run_id)
        print(
            f"failover: killed {host} at step {run['steps']}; finished {time.monotonic() - t0:.1f} s"
            f" later by {run['worker']}, attempts {run['attempts']}"
        )
        assert run["worker"].split(":")[0] == survivor_host, run["worker"]
        assert run["attempts"] >= 2, run
        steps_once(run)
        assert_numeric_answer(run)
    finally:
        docker("start", victim)
        wait_ready(gateways()[victim][1])


def test_a_redis_restart_loses_no_finished_run() -> None:
    assert FINISHED, "no run finished before the restart"
    compose("restart", "redis", timeout=120)
    url = any_gateway()
    wait_ready(url, 120)
    for run_id, before in FINISHED.items():
        after = httpx.get(f"{url}/agent/runs/{run_id}", timeout=30).json()
        assert (after["status"], after["answer"], len(after["trace"])) == (
            before["status"],
            before["answer"],
            len(before["trace"]),
        ), run_id
