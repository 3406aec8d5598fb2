"""The CPU-load helper of the test suite (tests/cpu_load.py) does what the stack tests rely on."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.cpu_load import BUSY_LOOP, cores, cpu_load


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def _busy_children() -> list[int]:
    me = str(os.getpid())
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = (entry / "stat").read_text().rsplit(")", 1)[1].split()[1]
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if ppid == me and BUSY_LOOP.encode() in cmdline:
            found.append(int(entry.name))
    return found


def test_cpu_load_runs_one_busy_process_per_core_and_stops_them_all():
    with cpu_load() as busy:
        assert len(busy) == cores()
        before = {p.pid: _cpu_ticks(p.pid) for p in busy}
        deadline = time.monotonic() + 10
        while any(_cpu_ticks(pid) == ticks for pid, ticks in before.items()):
            assert time.monotonic() < deadline, "a load process never got CPU time"
            time.sleep(0.05)
    assert all(p.poll() is not None for p in busy)
    assert _busy_children() == []


@pytest.mark.cpu_load
def test_a_test_marked_cpu_load_runs_beside_the_load():
    assert len(_busy_children()) == cores()
