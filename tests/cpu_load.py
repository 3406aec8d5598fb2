"""pytest plugin: CPU-bound load beside a test, one busy process per core.

A machine that also runs other work is the normal case (CI runners, a laptop compiling);
the serving stack must not misbehave when it gets less CPU than it would like. A test
marked ``@pytest.mark.cpu_load`` runs with the load started before it and stopped after it
(every load process is killed, also when pytest dies: PR_SET_PDEATHSIG). With
``LUMOS_TEST_CPU_LOAD=1`` every test marked ``vllm`` or ``reliability`` runs under it too.

The context manager `cpu_load()` is the same load for use inside a test or a benchmark.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

# Pure interpreter work: no I/O, no memory growth; each one takes a core when it can.
BUSY_LOOP = "while True: pass"
LOAD_ENV = "LUMOS_TEST_CPU_LOAD"
LOADED_MARKERS = ("vllm", "reliability")


def _die_with_parent() -> None:
    try:  # Linux: SIGKILL when the process that started the load goes away
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@contextmanager
def cpu_load(processes: int | None = None) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Start `processes` (default: one per core) busy-looping processes; kill them after."""
    count = processes or cores()
    busy: list[subprocess.Popen[bytes]] = []
    try:
        for _ in range(count):
            busy.append(
                subprocess.Popen(
                    [sys.executable, "-c", BUSY_LOOP],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    preexec_fn=_die_with_parent,
                )
            )
        yield busy
    finally:
        for process in busy:
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
        for process in busy:
            process.wait(10)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "cpu_load: runs with a CPU-bound process per core beside it (tests/cpu_load.py)"
    )


def _wanted(item: pytest.Item) -> bool:
    if item.get_closest_marker("cpu_load") is not None:
        return True
    loaded = os.environ.get(LOAD_ENV, "").strip().lower() not in ("", "0", "false", "no")
    return loaded and any(item.get_closest_marker(m) is not None for m in LOADED_MARKERS)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    # Only the test body runs under load: fixtures (a vLLM server starting) are set up
    # at full speed, so the load measures the stack, not the setup's timeouts.
    if not _wanted(item):
        return (yield)
    with cpu_load():
        return (yield)
