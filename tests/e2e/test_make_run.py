"""`make run`'s supervisor (scripts/run_local.py) as a newcomer meets it.

It serves the real stack (Redis, vLLM CPU on the session's tiny model, executor, gateway),
refuses to start on taken ports, and when the model server dies it says so and leaves no
process behind.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from bench.soak import children_by_parent
from tests.gateway.helpers import free_port

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "run_local.py"


def _ports() -> list[str]:
    return [
        "--gateway-port", str(free_port()), "--model-port", str(free_port()),
        "--executor-port", str(free_port()), "--redis-port", str(free_port()),
    ]  # fmt: skip


def _descendants(pid: int) -> set[int]:
    children = children_by_parent()
    out: set[int] = set()
    todo = [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            if c not in out:
                out.add(c)
                todo.append(c)
    return out


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def start_stack(
    model: Path, ports: list[str], *extra: str, deadline_s: float
) -> tuple[subprocess.Popen[str], list[str]]:
    """`scripts/run_local.py` in its own process group, read until it says it is ready.

    Returns the process and what it printed so far; fails the test (after killing the
    group) when it does not get ready within `deadline_s`.
    """
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), "--model", str(model), *ports, "--kv-cache-gib", "1",
         *extra],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True,
    )  # fmt: skip
    assert proc.stdout is not None
    output: list[str] = []
    deadline = time.monotonic() + deadline_s
    for line in proc.stdout:
        output.append(line)
        if "Lumos agent ready" in line or time.monotonic() > deadline:
            break
    if not any("Lumos agent ready" in line for line in output):
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        pytest.fail("the stack did not get ready:\n" + "".join(output), pytrace=False)
    return proc, output


def test_taken_ports_are_named_with_what_to_do(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        taken = s.getsockname()[1]
        ports = _ports()
        ports[1] = str(taken)
        proc = subprocess.run(
            [sys.executable, str(SCRIPT), "--model", str(model), *ports],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert proc.returncode == 2
    assert f"gateway (LUMOS_PORT): port {taken}" in proc.stdout
    assert "LUMOS_PORT=8100 make run" in proc.stdout


def test_a_missing_model_folder_says_how_to_get_one(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--model", str(tmp_path / "nope"), *_ports()],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "LUMOS_MODEL_PATH" in proc.stdout


def test_an_incomplete_adapter_folder_says_what_is_missing(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    adapters = tmp_path / "adapters"
    (adapters / "plan_iterative").mkdir(parents=True)
    (adapters / "plan_iterative" / "adapter_config.json").write_text('{"r": 8}')
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--model", str(model), "--adapters", str(adapters),
         *_ports()],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "plan_iterative lacks adapter_model.safetensors" in proc.stdout
    assert "python -m training.mini pack" in proc.stdout
    assert "LUMOS_ADAPTERS" in proc.stdout


@pytest.mark.vllm
@pytest.mark.redis
@pytest.mark.slow
def test_stack_answers_a_task_then_stops_cleanly_when_the_model_server_dies(vllm_server) -> None:
    ports = _ports()
    gateway = f"http://127.0.0.1:{ports[1]}"
    proc, output = start_stack(vllm_server.model_dir, ports, "--adapters", "none", deadline_s=600)
    try:
        body = {"task": "What is 12 * 7 + 5?", "domain": "maths", "max_steps": 1}
        run = httpx.post(f"{gateway}/agent/run", json=body, timeout=300).json()
        assert run["status"] == "succeeded", run
        assert [e["type"] for e in run["trace"]][-1] == "final"

        family = _descendants(proc.pid)
        model_port = ports[3]
        servers = [
            pid for pid in family
            if "api_server" in (Path("/proc") / str(pid) / "cmdline").read_bytes().decode(errors="replace")
            and model_port in (Path("/proc") / str(pid) / "cmdline").read_bytes().decode(errors="replace")
        ]  # fmt: skip
        assert servers, "no vLLM API server among the supervisor's processes"
        os.kill(servers[0], signal.SIGKILL)
        rest, _ = proc.communicate(timeout=120)
        output.append(rest)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    text = "".join(output)
    assert proc.returncode == 1, text
    assert "model-server stopped unexpectedly" in text
    assert "run `make run` again" in text
    time.sleep(1)
    left = [pid for pid in family if _alive(pid)]
    assert not left, f"processes left behind: {left}"
