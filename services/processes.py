"""Child processes of our local supervisors (`make run`, the benchmarks).

Each child runs in its own process group with its output in a log file, and is stopped with
its whole group: a vLLM API server leaves its engine-core process behind in that group when
it dies, so signalling the leader alone would orphan it. `wait_http` waits for a child to
answer and, when it does not, raises `StackError` with the end of its log.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


def _die_with_parent() -> None:
    # Linux only: SIGTERM to the child when its supervisor goes away, however it goes.
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


@dataclass
class ManagedProcess:
    name: str
    argv: list[str]
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    die_with_parent: bool = False
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            out.write(f"\n--- {time.strftime('%F %T')} {' '.join(self.argv)}\n".encode())
            out.flush()
            self.process = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                env={**os.environ, **self.env},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent if self.die_with_parent else None,
            )

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def returncode(self) -> int | str:
        code = None if self.process is None else self.process.poll()
        return "?" if code is None else code

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM to the whole group, then SIGKILL to whatever of it is left."""
        if self.process is None:
            return
        _signal_group(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(grace_s)
        except subprocess.TimeoutExpired:
            pass
        deadline = time.monotonic() + grace_s
        while _group_alive(self.process.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        _signal_group(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


class StackError(RuntimeError):
    """A child did not start, or stopped; the message carries the end of its log."""


def http_ok(url: str, timeout: float = 2.0) -> tuple[bool, str]:
    """Whether `url` answers 2xx, and the start of what it (or the connection) said."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return 200 <= r.status < 300, r.read(2000).decode(errors="replace")
    except urllib.error.HTTPError as e:
        return False, f"HTTP {e.code}: {e.read(500).decode(errors='replace')}"
    except (OSError, urllib.error.URLError) as e:
        return False, str(e)


def wait_http(
    child: ManagedProcess,
    url: str,
    deadline_s: float,
    *,
    what: str = "it to answer",
    say: Callable[[str], None] = print,
    poll_s: float = 1.0,
    tail_lines: int = 15,
) -> float:
    """Wait until `url` answers 2xx; the seconds it took. `say` hears progress every 15 s.

    Raises `StackError` with the last `tail_lines` of the child's log when the child exits
    first or `deadline_s` passes.
    """
    start = time.monotonic()
    last_note = start
    said = ""
    while time.monotonic() - start < deadline_s:
        if not child.alive():
            raise StackError(
                f"{child.name} exited while starting (code {child.returncode}).\n"
                f"Last lines of {child.log}:\n{child.tail(tail_lines)}"
            )
        ok, said = http_ok(url)
        if ok:
            taken = time.monotonic() - start
            say(f"{child.name}: ready after {taken:.1f} s")
            return taken
        if time.monotonic() - last_note > 15:
            last_note = time.monotonic()
            say(f"{child.name}: waiting for {what} ({time.monotonic() - start:.0f} s) ...")
        time.sleep(poll_s)
    raise StackError(
        f"{child.name} not ready after {deadline_s:.0f} s at {url}; it last said: {said}\n"
        f"Last lines of {child.log}:\n{child.tail(tail_lines)}"
    )
