"""Run model-written Python where it cannot hurt the host: the Code tool's sandboxes.

Two backends share one bootstrap (trusted code that runs first in the sandboxed interpreter,
then executes the model's program):

- `ProcessSandbox` (default): ``python -I -S`` in a fresh empty temporary directory, with an
  empty environment, its own session (the whole process group is killed on timeout),
  rlimits on CPU time, address space, file size, open files and processes, a network
  namespace of its own where the kernel allows it (``unshare(CLONE_NEWNET)``), dropped
  to an unprivileged uid when started as root, and an audit hook that refuses sockets,
  process creation, ctypes and any file access outside its directory (reads of the
  standard library excepted). Output is capped.
- `DockerSandbox`: a fresh container per call (docker SDK): no network, read-only root,
  a small tmpfs as working directory, memory/CPU/pid limits, no capabilities, a timeout.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

log = logging.getLogger(__name__)

# The sandboxed interpreter runs this first. It reads its configuration (limits, the program,
# the variables) from argv[1] (base64 JSON) or stdin, confines itself, and runs the program.
# The result travels back on stdout after a per-call random marker line.
BOOTSTRAP = r"""
import sys, os, json, resource, ast, base64
_raw = sys.argv[1] if len(sys.argv) > 1 else sys.stdin.buffer.read().decode("ascii")
_cfg = json.loads(base64.b64decode(_raw))
_marker = _cfg["marker"]

def _limit(res, value, hard=None):
    try:
        resource.setrlimit(res, (value, value if hard is None else hard))
    except (ValueError, OSError):
        pass

_limit(resource.RLIMIT_CORE, 0)
_limit(resource.RLIMIT_CPU, _cfg["cpu_s"], _cfg["cpu_s"] + 1)  # SIGXCPU first, then SIGKILL
_limit(resource.RLIMIT_FSIZE, _cfg["fsize"])
_limit(resource.RLIMIT_NOFILE, _cfg["nofile"])
_network = "unrestricted"
if _cfg.get("unshare_net"):
    try:
        import ctypes
        _libc = ctypes.CDLL(None, use_errno=True)
        # CLONE_NEWNET: a namespace with no interfaces; unprivileged, inside a new user
        # namespace (CLONE_NEWUSER) where the kernel allows those
        if _libc.unshare(0x40000000) == 0 or _libc.unshare(0x50000000) == 0:
            _network = "namespace"
        del _libc, ctypes
    except Exception:
        pass
_uid = _cfg.get("uid")
if _uid is not None and os.geteuid() == 0:
    os.setgroups([])
    os.setgid(_uid)
    os.setuid(_uid)
_limit(resource.RLIMIT_NPROC, _cfg["nproc"])
_limit(resource.RLIMIT_AS, _cfg["memory"])

_ROOT = os.path.realpath(os.getcwd())
_STDLIB = tuple(
    os.path.realpath(p) for p in {os.path.dirname(os.__file__), os.path.dirname(json.__file__)}
)
_BLOCKED_IMPORTS = frozenset({
    "socket", "_socket", "ssl", "_ssl", "select", "selectors", "asyncio", "subprocess",
    "_posixsubprocess", "multiprocessing", "_multiprocessing", "ctypes", "_ctypes", "pty",
    "fcntl", "mmap", "signal", "_signal", "resource", "urllib", "http", "ftplib", "smtplib",
    "telnetlib", "webbrowser",
})
_BLOCKED_EVENTS = ("socket.", "subprocess.", "ctypes.", "os.exec", "os.fork", "os.posix_spawn",
                   "os.spawn", "os.system", "os.kill", "os.killpg", "os.forkpty", "pty.",
                   "os.setuid", "os.setgid", "resource.setrlimit", "os.putenv", "os.unsetenv",
                   "webbrowser.", "urllib.", "sys.setprofile", "sys.settrace", "os.chroot",
                   "os.mount", "function.__new__", "code.__new__")
_PATH_EVENTS_READ = ("os.listdir", "os.scandir", "glob.glob", "os.chdir")
_realpath, _fsdecode, _isinstance = os.path.realpath, os.fsdecode, isinstance
_PathLike, _str, _bytes, _int = os.PathLike, str, bytes, int
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

def _inside(path, roots):
    try:
        p = _realpath(_fsdecode(path))
    except Exception:
        return False
    return any(p == r or p.startswith(r + os.sep) for r in roots)

def _deny(event):
    raise PermissionError(f"sandbox: {event} is not allowed")

def _hook(event, args):
    if event == "open":
        path, mode, flags = args
        if path is None or _isinstance(path, _int):
            return
        writing = (mode is not None and any(c in mode for c in "wax+")) or (
            _isinstance(flags, _int) and flags & _WRITE_FLAGS)
        if _inside(path, (_ROOT,)) or (not writing and _inside(path, _STDLIB)):
            return
        _deny(f"opening {_fsdecode(path)!r}")
    if event == "import":
        name = args[0] or ""
        if name.split(".")[0] in _BLOCKED_IMPORTS:
            _deny(f"importing {name}")
        return
    if event.startswith(_BLOCKED_EVENTS):
        _deny(event)
    if event.startswith(("os.", "shutil.", "glob.")):
        roots = (_ROOT,) + (_STDLIB if event.startswith(_PATH_EVENTS_READ) else ())
        for a in args:
            if _isinstance(a, (_str, _bytes, _PathLike)) and not _inside(a, roots):
                _deny(f"{event} on {_fsdecode(a)!r}")

_program = _cfg["code"]
_variables = _cfg["variables"]
for _name in ("ctypes", "_ctypes", "ctypes._endian", "resource"):
    sys.modules.pop(_name, None)
del _cfg, _raw, _name
sys.addaudithook(_hook)
_stdout = sys.stdout

def _report(payload):
    payload["network"] = _network
    _stdout.write("\n" + _marker + json.dumps(payload) + "\n")
    _stdout.flush()

def _plain(value):
    if value is None or _isinstance(value, (bool, int, float, str)):
        return value
    if _isinstance(value, (list, tuple)) and all(
        v is None or _isinstance(v, (bool, int, float, str)) for v in value
    ):
        return list(value)
    return repr(value)

def _main():
    try:
        tree = ast.parse(_program, "<code>", "exec")
    except SyntaxError:
        if "\\n" not in _program:
            raise
        tree = ast.parse(_program.replace("\\n", "\n"), "<code>", "exec")
    last = tree.body.pop() if tree.body and _isinstance(tree.body[-1], ast.Expr) else None
    scope = {"__name__": "__main__", "__builtins__": __builtins__}
    scope.update(_variables)
    exec(compile(tree, "<code>", "exec"), scope)
    if last is not None:
        return eval(compile(ast.Expression(last.value), "<code>", "eval"), scope)
    for name in ("result", "answer", "output"):
        if name in scope:
            return scope[name]
    fn = scope.get("Code")
    if callable(fn):  # "def Code(R1, R2): ..." as the original's parse_args expected
        names = fn.__code__.co_varnames[: fn.__code__.co_argcount]
        return fn(*(scope.get(n) for n in names))
    return None

try:
    _value = _main()
except SystemExit as exc:
    _report({"ok": exc.code in (None, 0), "result": None, "error": f"SystemExit({exc.code!r})"})
except BaseException as exc:
    import traceback
    traceback.print_exc(limit=-3)
    _report({"ok": False, "result": None, "error": f"{type(exc).__name__}: {exc}"})
else:
    _report({"ok": True, "result": _plain(_value), "error": None})
"""


class SandboxUnavailable(RuntimeError):
    """The configured backend cannot run here (no Docker engine, no docker package...)."""


@dataclass(frozen=True)
class SandboxLimits:
    timeout_s: float = 10.0
    cpu_s: int = 5
    memory_mb: int = 256
    file_size_mb: int = 8
    max_processes: int = 64
    max_open_files: int = 64
    output_bytes: int = 64 * 1024
    run_as_uid: int | None = 65534


@dataclass
class SandboxResult:
    ok: bool
    result: Any = None
    error: str | None = None
    stdout: str = ""
    stderr: str = ""
    exit_code: int | None = None
    timed_out: bool = False
    signal: str | None = None
    truncated: bool = False
    elapsed_s: float = 0.0
    network: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def describe_failure(self, limits: SandboxLimits) -> str:
        """What went wrong, for the trace: what happened and which limit it met."""
        if self.timed_out:
            return f"the program ran longer than {limits.timeout_s:g} s and was stopped"
        if self.truncated and not self.ok:
            return (
                f"the program wrote more than {limits.output_bytes} bytes of output and was stopped"
            )
        reasons = {
            "SIGXCPU": f"the program used more than {limits.cpu_s} s of CPU time and was stopped",
            "SIGXFSZ": f"the program wrote a file larger than {limits.file_size_mb} MB and was stopped",
            "SIGKILL": "the program was killed",
            "SIGSEGV": "the program crashed (segmentation fault)",
        }
        if self.signal:
            return reasons.get(self.signal, f"the program was killed by {self.signal}")
        if self.error:
            if self.error.startswith("MemoryError"):
                return f"MemoryError: the program exceeded its {limits.memory_mb} MB memory limit"
            if "File too large" in self.error:
                return f"{self.error}: files are limited to {limits.file_size_mb} MB"
            return self.error
        tail = self.stderr.strip().splitlines()[-1:] or [f"exit code {self.exit_code}"]
        return f"the program failed: {tail[0]}"


class Sandbox(Protocol):
    name: str

    async def run(self, code: str, variables: dict[str, Any]) -> SandboxResult: ...


def _payload(
    code: str,
    variables: dict[str, Any],
    limits: SandboxLimits,
    marker: str,
    *,
    unshare_net: bool,
    uid: int | None,
) -> str:
    cfg = {
        "marker": marker,
        "code": code,
        "variables": variables,
        "cpu_s": limits.cpu_s,
        "memory": limits.memory_mb * 1024 * 1024,
        "fsize": limits.file_size_mb * 1024 * 1024,
        "nofile": limits.max_open_files,
        "nproc": limits.max_processes,
        "unshare_net": unshare_net,
        "uid": uid,
    }
    return base64.b64encode(json.dumps(cfg).encode("utf-8")).decode("ascii")


def _split_report(stdout: str, marker: str) -> tuple[str, dict[str, Any] | None]:
    at = stdout.rfind(marker)
    if at < 0:
        return stdout, None
    line = stdout[at + len(marker) :].splitlines()[0] if stdout[at + len(marker) :] else ""
    try:
        report = json.loads(line)
    except ValueError:
        return stdout, None
    body = stdout[:at]
    return (body[:-1] if body.endswith("\n") else body), report


def _signal_name(code: int | None) -> str | None:
    if code is None or code >= 0:
        return None
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


def _readable_by_others(path: str) -> bool:
    """Whether an unprivileged user can reach and read `path` (o+x on every ancestor)."""
    path = os.path.realpath(path)
    try:
        if not os.stat(path).st_mode & stat.S_IROTH:
            return False
        parent = path
        while True:
            parent = os.path.dirname(parent)
            if not os.stat(parent).st_mode & stat.S_IXOTH:
                return False
            if parent == os.path.dirname(parent):
                return True
    except OSError:
        return False


def _stdlib_of(python: str) -> str | None:
    try:
        out = subprocess.run(
            [python, "-I", "-S", "-c", "import os; print(os.path.dirname(os.__file__))"],
            capture_output=True,
            text=True,
            timeout=20,
            env={},
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def choose_interpreter(candidates: list[str], uid: int | None) -> tuple[str, int | None, str]:
    """The first interpreter an unprivileged `uid` can run; else the first, run without
    dropping privileges. Returns (python, uid or None, a note for readiness/logs)."""
    if uid is None or os.geteuid() != 0:
        return candidates[0], None, "not started as root: runs as the service's own user"
    for python in candidates:
        stdlib = _stdlib_of(python)
        if stdlib and _readable_by_others(stdlib) and _readable_by_others(python):
            return python, uid, f"runs as uid {uid}"
    note = (
        f"no interpreter among {', '.join(candidates)} is readable by uid {uid}; "
        "the sandbox runs as root (audit hook, rlimits and network namespace still apply)"
    )
    log.warning("code sandbox: %s", note)
    return candidates[0], None, note


class ProcessSandbox:
    """A fresh isolated interpreter per call; see the module docstring for what confines it."""

    name = "process"

    def __init__(
        self,
        limits: SandboxLimits | None = None,
        *,
        concurrency: int = 4,
        python: str | None = None,
    ) -> None:
        self.limits = limits or SandboxLimits()
        candidates = [python] if python else [sys.executable, "/usr/bin/python3"]
        candidates = [c for c in candidates if c and os.path.exists(c)] or [sys.executable]
        self.python, self._uid, self.note = choose_interpreter(candidates, self.limits.run_as_uid)
        self._slots = asyncio.Semaphore(concurrency)

    async def run(self, code: str, variables: dict[str, Any]) -> SandboxResult:
        async with self._slots:
            return await self._run(code, variables)

    async def _run(self, code: str, variables: dict[str, Any]) -> SandboxResult:
        limits = self.limits
        marker = f"\x1e{secrets.token_hex(16)}\x1e"
        uid = self._uid
        payload = _payload(code, variables, limits, marker, unshare_net=True, uid=uid)
        workdir = tempfile.mkdtemp(prefix="lumos-code-")
        started = time.perf_counter()
        proc: asyncio.subprocess.Process | None = None
        try:
            if uid is not None:
                os.chown(workdir, uid, uid)
            os.chmod(workdir, 0o700)
            proc = await asyncio.create_subprocess_exec(
                self.python,
                "-I",
                "-S",
                "-B",
                "-X",
                "utf8",
                "-c",
                BOOTSTRAP,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=workdir,
                env={},
                start_new_session=True,
                close_fds=True,
            )
            overflow = asyncio.Event()
            out_task = asyncio.ensure_future(self._read(proc.stdout, overflow))
            err_task = asyncio.ensure_future(self._read(proc.stderr, overflow))
            assert proc.stdin is not None
            try:
                proc.stdin.write(payload.encode("ascii"))
                await proc.stdin.drain()
                proc.stdin.close()
            except (BrokenPipeError, ConnectionResetError):
                pass
            timed_out = False
            waiter = asyncio.ensure_future(proc.wait())
            overflow_wait = asyncio.ensure_future(overflow.wait())
            done, _ = await asyncio.wait(
                {waiter, overflow_wait},
                timeout=limits.timeout_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
            overflow_wait.cancel()
            if waiter not in done:
                timed_out = not overflow.is_set()
                self._kill_group(proc.pid)
                await waiter
            self._kill_group(proc.pid)
            # the pipes close when the group is gone; do not wait on a stray holder forever
            (out, out_trunc), (err, err_trunc) = await asyncio.wait_for(
                asyncio.gather(out_task, err_task), timeout=5.0
            )
        finally:
            if proc is not None:
                self._kill_group(proc.pid)  # anything the program left behind in its group
            shutil.rmtree(workdir, ignore_errors=True)
        elapsed = time.perf_counter() - started
        stdout, report = _split_report(out.decode("utf-8", "replace"), marker)
        rc = proc.returncode
        result = SandboxResult(
            ok=bool(report and report.get("ok")) and not timed_out,
            result=report.get("result") if report else None,
            error=report.get("error") if report else None,
            stdout=stdout,
            stderr=err.decode("utf-8", "replace"),
            exit_code=rc,
            timed_out=timed_out,
            signal=None if timed_out else _signal_name(rc),
            truncated=out_trunc or err_trunc,
            elapsed_s=elapsed,
            network=str(report.get("network", "")) if report else "",
        )
        return result

    async def _read(
        self, stream: asyncio.StreamReader | None, overflow: asyncio.Event
    ) -> tuple[bytes, bool]:
        """Read a stream to EOF, keeping at most the output cap; flag overflow at once."""
        if stream is None:
            return b"", False
        cap = self.limits.output_bytes + 4096  # room for the result line
        chunks: list[bytes] = []
        size = 0
        truncated = False
        while True:
            chunk = await stream.read(65536)
            if not chunk:
                break
            if size < cap:
                chunks.append(chunk[: cap - size])
            size += len(chunk)
            if size > cap and not truncated:
                truncated = True
                overflow.set()
        return b"".join(chunks), truncated

    @staticmethod
    def _kill_group(pid: int) -> None:
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


class DockerSandbox:
    """A fresh, network-less, read-only container per call (needs the `docker` package and
    a reachable engine; `SandboxUnavailable` otherwise)."""

    name = "docker"

    def __init__(
        self,
        limits: SandboxLimits | None = None,
        *,
        image: str = "python:3.11-slim",
        cpus: float = 1.0,
        concurrency: int = 4,
        client: Any = None,
    ) -> None:
        self.limits = limits or SandboxLimits()
        self.image = image
        self.cpus = cpus
        self._slots = asyncio.Semaphore(concurrency)
        if client is None:
            try:
                import docker
            except ImportError as exc:
                raise SandboxUnavailable(
                    "code backend 'docker' needs the docker Python package "
                    "(pip install docker); set LUMOS_EXECUTOR_CODE_BACKEND=process to use "
                    "the process sandbox"
                ) from exc
            try:
                client = docker.from_env()
                client.ping()
            except Exception as exc:
                raise SandboxUnavailable(
                    f"code backend 'docker': no Docker engine reachable ({exc}); start one or "
                    "set LUMOS_EXECUTOR_CODE_BACKEND=process"
                ) from exc
        self.client = client

    async def run(self, code: str, variables: dict[str, Any]) -> SandboxResult:
        async with self._slots:
            return await asyncio.to_thread(self._run_sync, code, variables)

    def _run_sync(self, code: str, variables: dict[str, Any]) -> SandboxResult:
        limits = self.limits
        marker = f"\x1e{secrets.token_hex(16)}\x1e"
        payload = _payload(code, variables, limits, marker, unshare_net=False, uid=None)
        started = time.perf_counter()
        container = self.client.containers.run(
            self.image,
            ["python", "-I", "-S", "-B", "-X", "utf8", "-c", BOOTSTRAP, payload],
            detach=True,
            network_disabled=True,
            read_only=True,
            user="65534:65534",
            working_dir="/sandbox",
            # uid/gid: as the working directory, the mount point is re-created root-owned
            # 0755 whatever `mode` says (Docker 20.10, found on a real engine).
            tmpfs={"/sandbox": f"size={limits.file_size_mb}m,mode=1777,uid=65534,gid=65534"},
            mem_limit=f"{limits.memory_mb}m",
            memswap_limit=f"{limits.memory_mb}m",
            nano_cpus=int(self.cpus * 1e9),
            pids_limit=limits.max_processes,
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            environment={},
            # Not PID 1: the kernel spares PID 1 the signals it has no handler for, so
            # RLIMIT_CPU's SIGXCPU would pass unnoticed until its SIGKILL (the engine's init
            # forwards the program's exit status, 128 + signal).
            init=True,
        )
        timed_out = truncated = False
        cap = limits.output_bytes + 4096  # room for the result line
        rc: int | None = None
        try:
            # Follow the output while waiting, so a program flooding it is stopped at the cap
            # (as the process backend does) rather than at the timeout.
            seen = [0]
            over, ended = threading.Event(), threading.Event()

            def follow() -> None:
                try:
                    for chunk in container.logs(
                        stdout=True, stderr=False, stream=True, follow=True
                    ):
                        seen[0] += len(chunk)
                        if seen[0] > cap:
                            over.set()
                            return
                except Exception:  # an engine without log streaming: the exit decides
                    with contextlib.suppress(Exception):
                        container.wait(timeout=limits.timeout_s)
                finally:
                    ended.set()

            threading.Thread(target=follow, daemon=True).start()
            ended.wait(timeout=max(0.0, started + limits.timeout_s - time.perf_counter()))
            if over.is_set():
                truncated = True
                container.kill()
            elif not ended.is_set():
                timed_out = True
                container.kill()
            else:
                try:
                    rc = int(container.wait(timeout=10).get("StatusCode", -1))
                except Exception:
                    timed_out = True
                    container.kill()
            out = container.logs(stdout=True, stderr=False)
            truncated = truncated or len(out) > cap
            out = out[:cap]
            err = container.logs(stdout=False, stderr=True)[: limits.output_bytes]
        finally:
            try:
                container.remove(force=True)
            except Exception:
                log.warning("could not remove sandbox container %s", getattr(container, "id", "?"))
        stdout, report = _split_report(out.decode("utf-8", "replace"), marker)
        return SandboxResult(
            ok=bool(report and report.get("ok")) and not timed_out and not truncated,
            result=report.get("result") if report else None,
            error=report.get("error") if report else None,
            stdout=stdout,
            stderr=err.decode("utf-8", "replace"),
            exit_code=rc,
            timed_out=timed_out,
            # the engine reports a process killed by signal N as exit code 128 + N
            signal=_signal_name(128 - rc) if rc is not None and rc > 128 else None,
            truncated=truncated,
            elapsed_s=time.perf_counter() - started,
            network="disabled",
        )
