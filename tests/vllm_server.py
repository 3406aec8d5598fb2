"""pytest plugin: one real vLLM CPU server for the whole test session.

It serves a tiny random Llama (built once into `.cache/tiny-model`) under both module
names, `lumos-plan` and `lumos-ground`, from the `.venv-vllm` environment that
`scripts/setup_vllm.sh` installs. Without that environment the tests that use it skip,
unless `LUMOS_REQUIRE_VLLM` is set (CI sets it): then they fail.

Register with ``pytest_plugins = ["tests.vllm_server"]`` in tests/conftest.py.

Tests that need a vLLM server of their own (adapters, several servers) start it with the
same launcher, `VLLMProcess` (or `started_vllm` around it): offline, in its own process
group, ready when `lumos.readiness` says so, the log's tail shown when it is not.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from lumos.readiness import NotReadyError, wait_ready
from services.modelserver.profile import LaunchProfile, command, environment

REPO_ROOT = Path(__file__).resolve().parent.parent
VLLM_VENV = REPO_ROOT / ".venv-vllm"
CACHE_DIR = REPO_ROOT / ".cache"
TINY_MODEL_DIR = CACHE_DIR / "tiny-model"
SERVER_LOG = CACHE_DIR / "vllm-server.log"
SERVED_MODEL_NAMES = ("lumos-plan", "lumos-ground")
# First start on 2 cores: ~50 s for the tiny model (torch.compile warm-up); leave room
# for a busy CI machine.
STARTUP_DEADLINE_S = float(os.environ.get("LUMOS_VLLM_STARTUP_S", "600"))
REQUIRE_ENV = "LUMOS_REQUIRE_VLLM"


@dataclass(frozen=True)
class VLLMServer:
    base_url: str
    served_model_names: tuple[str, ...]
    model_dir: Path
    log_path: Path
    startup_s: float
    pid: int


def _unavailable(reason: str) -> None:
    if os.environ.get(REQUIRE_ENV):
        pytest.fail(f"{reason} (and {REQUIRE_ENV} is set, so this is an error)", pytrace=False)
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(cannot read {path}: {exc})"


def _offline_env() -> dict[str, str]:
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
    }


def build_tiny_model(python: Path, out: Path = TINY_MODEL_DIR) -> Path:
    """Build the tiny model into `out` unless a complete one is already there."""
    wanted = ("config.json", "tokenizer.json", "model.safetensors")
    if all((out / name).exists() for name in wanted):
        return out
    result = subprocess.run(
        [str(python), str(REPO_ROOT / "scripts" / "build_tiny_model.py"), "--out", str(out)],
        capture_output=True,
        text=True,
        env=_offline_env(),
        timeout=300,
    )
    if result.returncode != 0:
        pytest.fail(
            f"building the tiny model failed ({result.returncode}):\n{result.stderr[-3000:]}",
            pytrace=False,
        )
    return out


def _stop(process: subprocess.Popen[bytes]) -> None:
    """End the server and its engine workers (they share its process group)."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    except ProcessLookupError:
        pass


def vllm_python() -> Path:
    """The vLLM environment's interpreter; without it the test skips (fails when required)."""
    python = VLLM_VENV / "bin" / "python"
    if not python.exists():
        _unavailable(f"{VLLM_VENV} is missing; create it with scripts/setup_vllm.sh")
    return python


class VLLMProcess:
    """A vLLM server the tests start: `argv` run offline from the repository, in its own
    process group (so `stop` reaches the engine workers), its output in `log_path`."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        port: int,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        name: str = "the vLLM server",
    ) -> None:
        self.name = name
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(
                list(argv),
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**_offline_env(), **(env or {})},
                cwd=REPO_ROOT,
                start_new_session=True,
            )

    @classmethod
    def from_profile(
        cls,
        profile: LaunchProfile,
        python: Path,
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        name: str = "the vLLM server",
    ) -> VLLMProcess:
        """The CPU server of a launch profile (its command and its environment)."""
        return cls(
            command(profile, "cpu", python=str(python)),
            port=profile.port,
            log_path=log_path,
            env={**environment(profile, "cpu"), **(env or {})},
            name=name,
        )

    def exited(self) -> str | None:
        code = self.process.poll()
        return None if code is None else f"{self.name} exited with code {code}"

    async def ready(self, deadline_s: float = STARTUP_DEADLINE_S) -> None:
        """Wait until it serves; fail the test with the log's last lines when it does not."""
        try:
            await wait_ready(self.url, deadline_s, give_up=self.exited)
        except NotReadyError as exc:
            pytest.fail(
                f"{exc}\n--- last lines of {self.log_path} ---\n{_tail(self.log_path)}",
                pytrace=False,
            )

    def stop(self) -> None:
        _stop(self.process)


@contextmanager
def started_vllm(server: VLLMProcess) -> Iterator[VLLMProcess]:
    """`server`, once ready (outside an event loop); stopped on the way out, whatever happens."""
    try:
        asyncio.run(server.ready())
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def vllm_server() -> Iterator[VLLMServer]:
    python = vllm_python()
    model_dir = build_tiny_model(python, TINY_MODEL_DIR)
    profile = LaunchProfile(
        model=str(model_dir),
        served_model_names=list(SERVED_MODEL_NAMES),
        host="127.0.0.1",
        port=_free_port(),
        cpu_kvcache_space_gib=1,
    )
    started = time.monotonic()
    with started_vllm(VLLMProcess.from_profile(profile, python, log_path=SERVER_LOG)) as launched:
        server = VLLMServer(
            base_url=launched.url,
            served_model_names=SERVED_MODEL_NAMES,
            model_dir=model_dir,
            log_path=SERVER_LOG,
            startup_s=time.monotonic() - started,
            pid=launched.process.pid,
        )
        print(
            f"\nvLLM CPU server ready at {server.base_url} in {server.startup_s:.0f} s",
            file=sys.stderr,
        )
        yield server
