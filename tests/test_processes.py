"""The one local-stack launcher (`services.processes`): children in their own process
groups, waited for over HTTP, their log's end in the error when they do not come up."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

from services.processes import ManagedProcess, StackError, wait_http


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _child(tmp_path: Path, name: str, code: str) -> ManagedProcess:
    child = ManagedProcess(name, [sys.executable, "-c", code], tmp_path / f"{name}.log")
    child.start()
    return child


def test_a_child_that_answers_is_ready(tmp_path: Path) -> None:
    port = _port()
    server = f"import http.server as h; h.HTTPServer(('127.0.0.1', {port}), h.SimpleHTTPRequestHandler).serve_forever()"
    child = _child(tmp_path, "web", server)
    heard: list[str] = []
    try:
        taken = wait_http(child, f"http://127.0.0.1:{port}/", 30, say=heard.append, poll_s=0.05)
    finally:
        child.stop(grace_s=2)
    assert taken < 30 and heard == [f"web: ready after {taken:.1f} s"]
    assert not child.alive()


def test_a_child_that_exits_while_starting_is_reported_with_its_log(tmp_path: Path) -> None:
    child = _child(tmp_path, "broken", "import sys; print('no model at /nowhere'); sys.exit(3)")
    with pytest.raises(
        StackError, match=r"(?s)broken exited while starting \(code 3\).*no model at /nowhere"
    ):
        wait_http(child, f"http://127.0.0.1:{_port()}/", 30, say=lambda _: None, poll_s=0.05)


def test_a_child_that_never_answers_fails_at_the_deadline_saying_what_it_heard(
    tmp_path: Path,
) -> None:
    child = _child(
        tmp_path, "silent", "import time; print('still loading', flush=True); time.sleep(60)"
    )
    try:
        with pytest.raises(
            StackError, match=r"(?s)silent not ready after 1 s at .*it last said: .*still loading"
        ):
            wait_http(child, f"http://127.0.0.1:{_port()}/", 1, say=lambda _: None, poll_s=0.05)
    finally:
        child.stop(grace_s=2)
