"""Serve the whole agent on this machine: Redis, vLLM (CPU build), executor and gateway.

`make run` calls this after setting everything up. It starts each process on loopback,
waits until the gateway's /readyz is green, prints how to use it, and stops every process
it started on Ctrl-C, or when one of them dies (saying which, and what it last logged).
Children die with this supervisor even if it is killed (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import sys
import time
from pathlib import Path

# Run as a script from the repository root: make the project's packages importable.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from gateway.route_table import RouteFileError, RouteTable  # noqa: E402
from lumos.domains import DOMAINS  # noqa: E402
from services.modelserver.adapters import (  # noqa: E402
    BASE_SERVED_NAME,
    AdapterError,
    adapter_folders,
    server_env,
)
from services.processes import ManagedProcess, StackError, wait_http  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
# Maths on the Lumos-mini adapters, every other domain on the base model (README: routes).
MINI_ROUTES = ROOT / "routes" / "lumos-mini.yaml"
RUN_DIR = ROOT / ".run"
LOG_DIR = RUN_DIR / "logs"


def child(name: str, argv: list[str], env: dict[str, str] | None = None) -> ManagedProcess:
    return ManagedProcess(
        name, argv, LOG_DIR / f"{name}.log", env or {}, cwd=ROOT, die_with_parent=True
    )


def note(message: str) -> None:
    print(f"  {message}")


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


# Lumos-mini's adapters were trained on maths only: runs of the other domains go to the base
# model with their domain's prompts instead of to maths-trained modules.
MINI_TRAINED_DOMAINS = "maths"


def domain_env() -> dict[str, str]:
    """The same choice as routes/lumos-mini.yaml in settings form (LUMOS_TRAINED_DOMAINS /
    LUMOS_UNTRAINED_MODEL), as docker-compose.cpu.yml's gateway takes it."""
    return {
        "LUMOS_TRAINED_DOMAINS": os.environ.get("LUMOS_TRAINED_DOMAINS", MINI_TRAINED_DOMAINS),
        "LUMOS_UNTRAINED_MODEL": os.environ.get("LUMOS_UNTRAINED_MODEL", BASE_SERVED_NAME),
    }


def routes_table(routes_file: str, model_url: str) -> RouteTable:
    """The gateway's route table, read as the gateway will read it (LUMOS_MODEL_URL set)."""
    previous = os.environ.get("LUMOS_MODEL_URL")
    os.environ["LUMOS_MODEL_URL"] = model_url
    try:
        return RouteTable.from_file(routes_file)
    finally:
        if previous is None:
            del os.environ["LUMOS_MODEL_URL"]
        else:
            os.environ["LUMOS_MODEL_URL"] = previous


def domains_line(table: RouteTable | None) -> str:
    """The ready banner's line on which domains have trained modules."""
    if table is None:
        return "no trained modules: the base model plans and grounds every domain"
    report = table.domain_report()
    trained, others = report["trained"], report["untrained"]
    unrouted = [d for d in sorted(DOMAINS) if d not in trained and d not in others]
    line = f"trained modules: {', '.join(trained) or 'none'}"
    if len(trained) == len(DOMAINS):
        line = "trained modules: every domain"
    if others:
        on = report["untrained_model"] or "modules not trained for them"
        line += f"; {', '.join(others)} run on {on} with their domain's prompts"
    if unrouted:
        line += f"; no route for {', '.join(unrouted)}"
    return line


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default=os.environ.get("LUMOS_MODEL_PATH", ""))
    p.add_argument(
        "--adapters",
        default=os.environ.get("LUMOS_ADAPTERS", str(ROOT / "models" / "lumos-mini")),
        help="folder of LoRA adapters of --model served as the planner and grounder "
        "(default: Lumos-mini, models/lumos-mini); 'none': the base model alone",
    )
    p.add_argument("--gateway-port", type=int, default=int(os.environ.get("LUMOS_PORT", 8000)))
    p.add_argument("--model-port", type=int, default=int(os.environ.get("LUMOS_MODEL_PORT", 8001)))
    p.add_argument(
        "--executor-port", type=int, default=int(os.environ.get("LUMOS_EXECUTOR_PORT", 8003))
    )
    p.add_argument("--redis-port", type=int, default=int(os.environ.get("LUMOS_REDIS_PORT", 6390)))
    p.add_argument("--kv-cache-gib", default=os.environ.get("VLLM_CPU_KVCACHE_SPACE", "2"))
    p.add_argument("--model-deadline-s", type=float, default=900)
    p.add_argument("--exit-when-ready", action="store_true", help="for tests and timing")
    args = p.parse_args(argv)

    model = Path(args.model) if args.model else None
    if model is None or not (model / "config.json").exists():
        print(
            f"no model folder at {model}; run `make run` (it prepares one) or set LUMOS_MODEL_PATH"
        )
        return 2
    ports = {
        "gateway (LUMOS_PORT)": args.gateway_port,
        "model server (LUMOS_MODEL_PORT)": args.model_port,
        "executor (LUMOS_EXECUTOR_PORT)": args.executor_port,
        "redis (LUMOS_REDIS_PORT)": args.redis_port,
    }
    taken = [f"{k}: port {v}" for k, v in ports.items() if not port_free(v)]
    if taken:
        print(
            "these ports are already taken on 127.0.0.1:\n  "
            + "\n  ".join(taken)
            + "\nStop whatever uses them (`ss -ltnp` shows it; an earlier `make run` perhaps) "
            "or choose others, e.g. `LUMOS_PORT=8100 make run`."
        )
        return 2
    redis_bin = shutil.which("redis-server")
    if redis_bin is None:
        print(
            "redis-server is not installed: `apt-get install redis-server` (make run does it as root)"
        )
        return 2
    model_url = f"http://127.0.0.1:{args.model_port}"
    model_env: dict[str, str] = {}
    module_env: dict[str, str] = {}
    table: RouteTable | None = None
    if args.adapters.lower() != "none":
        try:
            model_env = server_env(adapter_folders(Path(args.adapters)))
        except AdapterError as exc:
            print(f"{exc}\n(set LUMOS_ADAPTERS to another folder, or to none)")
            return 2
        routes_file = os.environ.get("LUMOS_ROUTES_FILE") or str(MINI_ROUTES)
        try:
            table = routes_table(routes_file, model_url)
        except RouteFileError as exc:
            print(f"LUMOS_ROUTES_FILE: {exc}")
            return 2
        module_env = {"LUMOS_ROUTES_FILE": routes_file, "LUMOS_MODEL_URL": model_url}
    vllm_python = ROOT / ".venv-vllm" / "bin" / "python"
    if not vllm_python.exists():
        print("the vLLM CPU build is missing (.venv-vllm): run `make vllm`")
        return 2

    # Redis keeps its data (runs, run-time routes) across restarts of the same stack; a stack
    # on another port (tests, benchmarks, a second stack) gets its own folder, so it never
    # starts with another stack's state.
    redis_dir = RUN_DIR / ("redis" if args.redis_port == 6390 else f"redis-{args.redis_port}")
    redis_dir.mkdir(parents=True, exist_ok=True)
    redis_url = f"redis://127.0.0.1:{args.redis_port}/0"
    executor_url = f"http://127.0.0.1:{args.executor_port}"
    gateway_url = f"http://127.0.0.1:{args.gateway_port}"
    py = sys.executable
    children = [
        child(
            "redis",
            [
                redis_bin,
                "--port",
                str(args.redis_port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(redis_dir),
                "--appendonly",
                "yes",
                "--save",
                "",
            ],
        ),  # fmt: skip
        child(
            "model-server",
            [
                py,
                "-m",
                "services.modelserver.launch",
                "--module",
                "both",
                "--target",
                "cpu",
                "--python",
                str(vllm_python),
            ],
            env={
                "LUMOS_MODELSERVER_MODEL": str(model),
                "LUMOS_MODELSERVER_HOST": "127.0.0.1",
                "LUMOS_MODELSERVER_PORT": str(args.model_port),
                "LUMOS_MODELSERVER_CPU_KVCACHE_SPACE_GIB": str(args.kv_cache_gib),
                "HF_HUB_OFFLINE": "1",
                # vllm-cpu 0.32 fails to load its own AOT compile cache ("finalize_loading"),
                # so every start recompiled; without AOT the compile cache is reused.
                "VLLM_USE_AOT_COMPILE": "0",
                # The action grammar over a 262K-token vocabulary takes ~10 s to compile on
                # 2 cores, past vLLM's 5 s default; the first grounding would fail with a 500.
                "VLLM_REGEX_COMPILATION_TIMEOUT_S": "120",
                # `lumos adapters load` adds adapters to the running server.
                "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True",
                **model_env,
            },
        ),  # fmt: skip
        child(
            "executor",
            [py, "-m", "services.executor"],
            env={
                "LUMOS_EXECUTOR_PORT": str(args.executor_port),
                "LUMOS_EXECUTOR_HOST": "127.0.0.1",
                "LUMOS_EXECUTOR_REDIS_URL": redis_url,
                "LUMOS_EXECUTOR_QA_BASE_URL": os.environ.get("LUMOS_EXECUTOR_QA_BASE_URL", ""),
            },
        ),
        child(
            "gateway",
            [py, "-m", "gateway"],
            env={
                "LUMOS_PORT": str(args.gateway_port),
                "LUMOS_HOST": "127.0.0.1",
                "LUMOS_REDIS_URL": redis_url,
                "LUMOS_PLANNER_URLS": model_url,
                "LUMOS_GROUNDER_URLS": model_url,
                "LUMOS_EXECUTOR_URL": executor_url,
                # A small model on 2 CPU cores writes ~15-20 tokens/s: allow long runs.
                "LUMOS_RUN_DEADLINE_S": os.environ.get("LUMOS_RUN_DEADLINE_S", "1200"),
                "LUMOS_MODULE_TIMEOUT_S": os.environ.get("LUMOS_MODULE_TIMEOUT_S", "300"),
                **module_env,
            },
        ),
    ]
    by_name = {c.name: c for c in children}
    stopping = False

    def stop_all(*_: object) -> None:
        nonlocal stopping
        if stopping:
            return
        stopping = True
        print("\nstopping: " + ", ".join(c.name for c in reversed(children) if c.alive()))
        for c in reversed(children):
            c.stop()

    signal.signal(signal.SIGTERM, lambda *a: (stop_all(), sys.exit(143)))
    t0 = time.monotonic()
    try:
        served = f"{model.name}" + (
            f" + the LoRA adapters in {args.adapters}" if model_env else ", no adapters"
        )
        print(f"starting Redis, the model server ({served}), the executor and the gateway")
        print(f"logs: {LOG_DIR.relative_to(ROOT)}/")
        for c in children:
            c.start()
        wait_http(by_name["executor"], f"{executor_url}/healthz", 120, what="/healthz", say=note)
        wait_http(
            by_name["model-server"], f"{model_url}/v1/models", args.model_deadline_s,
            what="vLLM to load the model (the first start compiles; minutes on 2 cores)",
            say=note,
        )  # fmt: skip
        wait_http(by_name["gateway"], f"{gateway_url}/readyz", 120, what="/readyz", say=note)
        ready_s = time.monotonic() - t0
        example = json.dumps(
            {"task": "Tom has 3 boxes of 12 pencils and gives away 7. How many are left?",
             "domain": "maths"}
        )  # fmt: skip
        print(
            f"\nLumos agent ready in {ready_s:.0f}s at {gateway_url}\n"
            f"{domains_line(table)} (GET {gateway_url}/agent/routes shows the routes)\n\n"
            f"  curl -s {gateway_url}/agent/run -H 'Content-Type: application/json' \\\n"
            f"       -d '{example}'\n\n"
            f'  .venv/bin/lumos run "What is 12 * 7 + 5?" --domain maths --url {gateway_url}\n\n'
            f"API docs: {gateway_url}/docs   metrics: {gateway_url}/metrics\n"
            f"logs: {LOG_DIR.relative_to(ROOT)}/{{redis,model-server,executor,gateway}}.log\n"
            "Ctrl-C stops everything.",
            flush=True,
        )
        if args.exit_when_ready:
            return 0
        while True:
            for c in children:
                if not c.alive():
                    raise StackError(
                        f"{c.name} stopped unexpectedly (exit code {c.returncode}).\n"
                        f"Last lines of {c.log.relative_to(ROOT)}:\n{c.tail()}\n"
                        "Everything else is being stopped; run `make run` again to restart."
                    )
            time.sleep(1.0)
    except KeyboardInterrupt:
        return 0
    except StackError as exc:
        print(f"\nerror: {exc}", file=sys.stderr)
        return 1
    finally:
        stop_all()


if __name__ == "__main__":
    raise SystemExit(main())
