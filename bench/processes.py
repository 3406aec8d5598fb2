"""The servers a benchmark starts: each in its own process group, stopped with the group.

`Stack` starts Redis, the executor, the gateway, a vLLM CPU server or the scripted model
server on free loopback ports, waits until each answers, prints progress and, on exit,
stops every group it started (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Self

from services.processes import ManagedProcess, StackError, wait_http

ROOT = Path(__file__).resolve().parent.parent
VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"
TINY_MODEL_DIR = ROOT / ".cache" / "tiny-model"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


class Stack:
    """Processes started for one benchmark; a context manager that stops them all."""

    def __init__(self, log_dir: Path | None = None) -> None:
        self.log_dir = log_dir or Path(tempfile.mkdtemp(prefix="lumos-bench-"))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.children: list[ManagedProcess] = []

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        for child in reversed(self.children):
            child.stop()
        if self.children:
            say("stopped " + ", ".join(c.name for c in reversed(self.children)))
        self.children.clear()

    def stop_one(self, name: str) -> None:
        for child in [c for c in self.children if c.name == name]:
            child.stop()
            self.children.remove(child)

    def start(
        self, name: str, argv: list[str], env: dict[str, str] | None = None
    ) -> ManagedProcess:
        child = ManagedProcess(name, argv, self.log_dir / f"{name}.log", env or {}, cwd=ROOT)
        child.start()
        self.children.append(child)
        return child

    def wait_http(self, child: ManagedProcess, url: str, deadline_s: float) -> None:
        wait_http(child, url, deadline_s, say=say, poll_s=0.2, tail_lines=30)

    # --- the servers ---------------------------------------------------------------------

    def redis(self) -> str:
        binary = shutil.which("redis-server")
        if binary is None:
            raise StackError("redis-server is not installed: apt-get install -y redis-server")
        port = free_port()
        data = self.log_dir / "redis"
        data.mkdir(exist_ok=True)
        child = self.start(
            "redis",
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data),
             "--save", "", "--appendonly", "no", "--protected-mode", "no"],
        )  # fmt: skip
        started = time.monotonic()
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if time.monotonic() - started > 10 or not child.alive():
                raise StackError(f"redis-server did not start: {child.tail(30)}")
            time.sleep(0.05)
        say(f"redis ready on port {port}")
        return f"redis://127.0.0.1:{port}/0"

    def executor(self, redis_url: str | None = None) -> str:
        """The executor, its results cached in `redis_url` (none: no cache); ready when its
        tools are built."""
        port = free_port()
        child = self.start(
            "executor",
            [sys.executable, "-m", "services.executor"],
            {
                "LUMOS_EXECUTOR_HOST": "127.0.0.1",
                "LUMOS_EXECUTOR_PORT": str(port),
                "LUMOS_EXECUTOR_LOG_LEVEL": "warning",
                **({"LUMOS_EXECUTOR_REDIS_URL": redis_url} if redis_url else {}),
            },
        )
        url = f"http://127.0.0.1:{port}"
        self.wait_http(child, f"{url}/readyz", 120)
        return url

    def gateway(
        self,
        redis_url: str,
        model_url: str,
        executor_url: str,
        *,
        extra_env: dict[str, str] | None = None,
        profile_to: Path | None = None,
        name: str = "gateway",
    ) -> str:
        port = free_port()
        argv = [sys.executable, "-m", "gateway"]
        if profile_to is not None:  # the report is written as the gateway exits
            argv = [sys.executable, "-m", "bench.profiled_gateway", str(profile_to)]
        child = self.start(
            name,
            argv,
            {
                "LUMOS_HOST": "127.0.0.1",
                "LUMOS_PORT": str(port),
                "LUMOS_LOG_LEVEL": "warning",
                "LUMOS_REDIS_URL": redis_url,
                "LUMOS_PLANNER_URLS": model_url,
                "LUMOS_GROUNDER_URLS": model_url,
                "LUMOS_EXECUTOR_URL": executor_url,
                "LUMOS_MAX_CONCURRENT_RUNS_PER_KEY": "0",
                "LUMOS_RUN_DEADLINE_S": "1200",
                "LUMOS_MODULE_TIMEOUT_S": "600",
                **(extra_env or {}),
            },
        )
        url = f"http://127.0.0.1:{port}"
        self.wait_http(child, f"{url}/readyz", 120)
        return url

    def scripted_model(self, steps: int | None = None, name: str = "scripted-model") -> str:
        """`bench.scripted_server`: its maths run, or the counting run of `steps` steps."""
        port = free_port()
        argv = [sys.executable, "-m", "bench.scripted_server", "--port", str(port)]
        child = self.start(name, argv + (["--steps", str(steps)] if steps is not None else []))
        url = f"http://127.0.0.1:{port}"
        self.wait_http(child, f"{url}/health", 60)
        return url

    def vllm(
        self, model_dir: Path = TINY_MODEL_DIR, kv_cache_gib: int = 1, dev_mode: bool = False
    ) -> str:
        if not VLLM_PYTHON.exists():
            raise StackError(f"{VLLM_PYTHON} is missing; create it with scripts/setup_vllm.sh")
        offline = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1"}
        if not (model_dir / "model.safetensors").exists():
            say(f"building the tiny model into {model_dir}")
            subprocess.run(
                [str(VLLM_PYTHON), str(ROOT / "scripts" / "build_tiny_model.py"),
                 "--out", str(model_dir)],
                check=True, env={**os.environ, **offline}, timeout=300,
            )  # fmt: skip
        from services.modelserver.profile import LaunchProfile, command, environment

        port = free_port()
        profile = LaunchProfile(
            model=str(model_dir),
            served_model_names=["lumos-plan", "lumos-ground"],
            host="127.0.0.1",
            port=port,
            cpu_kvcache_space_gib=kv_cache_gib,
        )
        say(f"starting vLLM CPU ({model_dir.name}) on port {port}; the first start compiles")
        child = self.start(
            "vllm",
            command(profile, "cpu", python=str(VLLM_PYTHON)),
            {
                **offline,
                **environment(profile, "cpu"),
                "VLLM_USE_AOT_COMPILE": "0",
                "VLLM_REGEX_COMPILATION_TIMEOUT_S": "120",
                # dev mode adds POST /reset_prefix_cache (a cold cache between passes)
                **({"VLLM_SERVER_DEV_MODE": "1"} if dev_mode else {}),
            },
        )
        url = f"http://127.0.0.1:{port}"
        self.wait_http(child, f"{url}/v1/models", 600)
        return url
