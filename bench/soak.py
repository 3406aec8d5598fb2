"""`lumos bench soak`: steady load through `make run`'s stack, reported minute by minute.

Starts `scripts/run_local.py` (Redis, vLLM CPU with the default model and the Lumos-mini
adapters, the executor, the gateway) on free loopback ports, keeps `concurrency` clients each
sending one sync run after another (a closed loop: the rate is what the machine sustains),
and every `sample_s` reads the resident memory of every process of the stack and Redis's
`used_memory`. After `minutes` it stops sending, lets the runs in flight finish, stops the
stack and reports, per minute: runs completed, failures by reason, latency p50/p95/p99, RSS
per process, Redis memory; and overall: the same plus each process's RSS growth after the
warm-up minute. Results: `soak.json` and `soak.md` in --out-dir.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis

from bench.processes import ROOT, free_port, say
from bench.stats import percentile

RUN_LOCAL = ROOT / "scripts" / "run_local.py"
DEFAULT_MODEL = ROOT / ".cache" / "models" / "gemma-3-270m"
READY_LINE = "Lumos agent ready"
# Grade-school maths, the domain Lumos-mini's adapters were trained on.
TASKS = (
    "Tom has 3 boxes of 12 pencils and gives away 7. How many pencils are left?",
    "A baker makes 24 rolls and sells 17. How many rolls are left?",
    "What is 12 * 7 + 5?",
    "Sara reads 15 pages a day. How many pages does she read in 6 days?",
    "A shirt costs $20 and is 25% off. What does it cost now?",
    "There are 48 apples shared equally by 6 children. How many does each child get?",
)


@dataclass(frozen=True)
class RunOutcome:
    finished_at: float  # seconds since the load started
    latency_s: float
    status: str  # succeeded, failed, cancelled, or http_<code> / client_error
    reason: str | None = None
    message: str | None = None  # what the run's error (or the HTTP answer) said


@dataclass
class Sample:
    at: float  # seconds since the load started
    rss_mib: dict[str, float]
    redis_used_mib: float | None


@dataclass
class SoakReport:
    config: dict[str, Any]
    minutes: list[dict[str, Any]] = field(default_factory=list)
    totals: dict[str, Any] = field(default_factory=dict)


def children_by_parent() -> dict[int, list[int]]:
    """Parent pid -> the pids of its children, for every process now (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        children.setdefault(ppid, []).append(int(entry.name))
    return children


def stack_processes(root_pid: int) -> dict[str, int]:
    """Name -> pid of every process under `root_pid` (the supervisor included)."""
    children = children_by_parent()
    found: dict[str, int] = {}
    todo: list[tuple[int, str]] = [(root_pid, "")]
    while todo:
        pid, parent = todo.pop()
        name = process_name(pid, parent)
        if name is not None:
            found[name if name not in found else f"{name}-{pid}"] = pid
        todo += [(c, name or parent) for c in children.get(pid, [])]
    return found


def process_name(pid: int, parent: str = "") -> str | None:
    """What a process of the stack is, from its command line (None once it is gone); a
    helper process (multiprocessing, a worker) is named after its parent."""
    try:
        argv = (Path("/proc") / str(pid) / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    text = " ".join(a.decode(errors="replace") for a in argv)
    if "run_local.py" in text:
        return "supervisor"
    if "redis-server" in text:
        return "redis"
    if "services.executor" in text:
        return "executor"
    if "-m gateway" in text:
        return "gateway"
    if "services.modelserver.launch" in text:
        return "model-launcher"
    if "api_server" in text or " serve " in text:
        return "vllm-api"
    if "EngineCore" in text:
        return "vllm-engine"
    if "VLLM" in text or "VllmWorker" in text:
        return "vllm-worker"
    if "resource_tracker" in text:
        return f"{parent or 'python'}.resource-tracker"
    if "multiprocessing" in text:
        return f"{parent or 'python'}.child"
    return f"{parent}.{Path(argv[0].decode(errors='replace')).name}".lstrip(".") or None


def rss_mib(pid: int) -> float | None:
    try:
        for line in (Path("/proc") / str(pid) / "status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


class Stack:
    """`scripts/run_local.py` in its own process group, stopped with the group."""

    def __init__(self, model: Path, adapters: str, out_dir: Path, ready_s: float) -> None:
        self.ports = {name: free_port() for name in ("gateway", "model", "executor", "redis")}
        self.url = f"http://127.0.0.1:{self.ports['gateway']}"
        self.redis_url = f"redis://127.0.0.1:{self.ports['redis']}/0"
        self.log_path = out_dir / "stack.log"
        argv = [
            sys.executable, str(RUN_LOCAL), "--model", str(model), "--adapters", adapters,
            "--gateway-port", str(self.ports["gateway"]), "--model-port", str(self.ports["model"]),
            "--executor-port", str(self.ports["executor"]),
            "--redis-port", str(self.ports["redis"]),
        ]  # fmt: skip
        self.log = self.log_path.open("w")
        self.process = subprocess.Popen(
            argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True,
        )  # fmt: skip
        self._wait_ready(ready_s)

    def _wait_ready(self, ready_s: float) -> None:
        assert self.process.stdout is not None
        deadline = time.monotonic() + ready_s
        for line in self.process.stdout:
            self.log.write(line)
            self.log.flush()
            if READY_LINE in line:
                threading.Thread(target=self._copy_output, daemon=True).start()
                return
            if time.monotonic() > deadline:
                break
        self.stop()
        raise RuntimeError(
            f"make run's stack did not get ready within {ready_s:g} s; see {self.log_path}"
        )

    def _copy_output(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.log.write(line)
            self.log.flush()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # the supervisor stops its children
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)  # whatever is left of the group
        except ProcessLookupError:
            pass
        self.process.wait(10)
        self.log.close()


def _client(
    url: str,
    stop: threading.Event,
    outcomes: list[RunOutcome],
    t0: float,
    i: int,
    max_steps: int | None,
) -> None:
    with httpx.Client(base_url=url, timeout=httpx.Timeout(1800, connect=10)) as http:
        n = i
        while not stop.is_set():
            body: dict[str, Any] = {"task": TASKS[n % len(TASKS)], "domain": "maths"}
            if max_steps is not None:
                body["max_steps"] = max_steps
            n += 1
            started = time.monotonic()
            try:
                response = http.post("/agent/run", json=body)
                if response.status_code == 200:
                    run = response.json()
                    status = run["status"]
                    error = run.get("error") or {}
                    reason, message = error.get("reason"), error.get("message")
                else:
                    answer = response.json()
                    status = f"http_{response.status_code}"
                    reason, message = answer.get("code"), answer.get("detail")
            except (httpx.HTTPError, ValueError) as exc:
                status, reason, message = "client_error", type(exc).__name__, str(exc)
            now = time.monotonic()
            outcomes.append(RunOutcome(now - t0, now - started, status, reason, message))


def _sampler(
    stack: Stack, stop: threading.Event, samples: list[Sample], t0: float, every_s: float
) -> None:
    r = redis.Redis.from_url(stack.redis_url, socket_timeout=5)
    try:
        while True:
            pids = stack_processes(stack.process.pid)
            rss = {name: v for name, pid in sorted(pids.items()) if (v := rss_mib(pid)) is not None}
            try:
                used: float | None = round(int(r.info("memory")["used_memory"]) / 2**20, 2)
            except redis.RedisError:
                used = None
            samples.append(Sample(time.monotonic() - t0, rss, used))
            if stop.wait(every_s):
                return
    finally:
        r.close()


def summarize(
    outcomes: list[RunOutcome], samples: list[Sample], bucket_s: float, config: dict[str, Any]
) -> SoakReport:
    """Per-bucket (minute) and overall figures; pure, so it is tested without a stack."""
    report = SoakReport(config=config)
    last = max([o.finished_at for o in outcomes] + [s.at for s in samples] + [0.0])
    buckets = max(1, math.ceil(last / bucket_s))

    def index(at: float) -> int:
        return min(int(at // bucket_s), buckets - 1)

    for b in range(buckets):
        done = [o for o in outcomes if index(o.finished_at) == b]
        sampled = [s for s in samples if index(s.at) == b]
        sample = sampled[-1] if sampled else None  # the state at the end of the bucket
        report.minutes.append(
            {
                "minute": b + 1,
                "from_s": round(b * bucket_s, 1),
                **_outcome_figures(done),
                "rss_mib": sample.rss_mib if sample else {},
                "redis_used_mib": sample.redis_used_mib if sample else None,
            }
        )
    totals = _outcome_figures(outcomes)
    totals["runs_per_minute"] = round(len(outcomes) / max(last / 60, 1e-9), 2) if outcomes else 0
    # Memory growth after the warm-up bucket: its last sample against the run's last.
    after_warmup = [s for s in samples if s.at >= bucket_s] or samples
    growth: dict[str, float] = {}
    if after_warmup:
        first, final = after_warmup[0], samples[-1]
        for name, start in first.rss_mib.items():
            if name in final.rss_mib and start > 0:
                growth[name] = round(100 * (final.rss_mib[name] - start) / start, 1)
    totals["rss_growth_after_warmup_pct"] = growth
    examples: dict[str, str] = {}
    for o in outcomes:
        if o.status != "succeeded" and o.message:
            examples.setdefault(o.reason or o.status, o.message[:500])
    totals["failure_examples"] = examples
    totals["rss_mib_last"] = samples[-1].rss_mib if samples else {}
    totals["redis_used_mib_last"] = samples[-1].redis_used_mib if samples else None
    report.totals = totals
    return report


def _outcome_figures(outcomes: list[RunOutcome]) -> dict[str, Any]:
    latencies = sorted(o.latency_s for o in outcomes if o.status == "succeeded")
    failures = Counter(o.reason or o.status for o in outcomes if o.status != "succeeded")
    return {
        "runs": len(outcomes),
        "succeeded": sum(1 for o in outcomes if o.status == "succeeded"),
        "failures_by_reason": dict(sorted(failures.items())),
        "latency_p50_s": round(percentile(latencies, 50), 2) if latencies else None,
        "latency_p95_s": round(percentile(latencies, 95), 2) if latencies else None,
        "latency_p99_s": round(percentile(latencies, 99), 2) if latencies else None,
    }


def markdown(report: SoakReport) -> str:
    processes = sorted({n for m in report.minutes for n in m["rss_mib"]})
    head = ["minute", "runs", "ok", "failures", "p50 s", "p95 s", "p99 s", "Redis MiB"]
    head += [f"{p} MiB" for p in processes]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in report.minutes:
        failures = ", ".join(f"{k} {v}" for k, v in m["failures_by_reason"].items()) or "0"
        row = [m["minute"], m["runs"], m["succeeded"], failures, m["latency_p50_s"],
               m["latency_p95_s"], m["latency_p99_s"], m["redis_used_mib"]]  # fmt: skip
        row += [m["rss_mib"].get(p, "") for p in processes]
        lines.append("| " + " | ".join("-" if v is None else str(v) for v in row) + " |")
    t = report.totals
    lines += [
        "",
        f"runs {t['runs']} ({t['runs_per_minute']}/min), succeeded {t['succeeded']}, failures "
        f"{t['failures_by_reason'] or 0}; latency p50/p95/p99 {t['latency_p50_s']} / "
        f"{t['latency_p95_s']} / {t['latency_p99_s']} s; Redis {t['redis_used_mib_last']} MiB",
        "RSS growth after the first minute (%): "
        + ", ".join(f"{k} {v:+}" for k, v in t["rss_growth_after_warmup_pct"].items()),
    ]
    return "\n".join(lines) + "\n"


def run(
    out_dir: Path,
    *,
    minutes: float = 10.0,
    concurrency: int = 2,
    model: Path = DEFAULT_MODEL,
    adapters: str = str(ROOT / "models" / "lumos-mini"),
    sample_s: float = 10.0,
    bucket_s: float = 60.0,
    ready_s: float = 1200.0,
    drain_s: float = 600.0,
    max_steps: int | None = None,
) -> SoakReport:
    out_dir.mkdir(parents=True, exist_ok=True)
    model = model if model.is_absolute() or model.exists() else ROOT / model
    if adapters.lower() != "none" and not Path(adapters).exists():
        adapters = str(ROOT / adapters)  # given relative to the repository
    if not (model / "config.json").exists():
        raise SystemExit(f"no model folder at {model}; `make default-model` prepares the default")
    say(f"starting make run's stack ({model.name}, adapters: {adapters})")
    stack = Stack(model, adapters, out_dir, ready_s)
    outcomes: list[RunOutcome] = []
    samples: list[Sample] = []
    try:
        say(f"stack ready at {stack.url}; one warm-up run (grammar compile, caches)")
        warm = httpx.post(
            f"{stack.url}/agent/run", json={"task": TASKS[0], "domain": "maths"}, timeout=1800
        )
        say(f"warm-up: {warm.status_code} {warm.json().get('status')}")
        stop, stop_sampling = threading.Event(), threading.Event()
        t0 = time.monotonic()
        sampler = threading.Thread(
            target=_sampler, args=(stack, stop_sampling, samples, t0, sample_s), daemon=True
        )
        sampler.start()
        clients = [
            threading.Thread(
                target=_client, args=(stack.url, stop, outcomes, t0, i, max_steps), daemon=True
            )
            for i in range(concurrency)
        ]
        for c in clients:
            c.start()
        say(f"soak: {concurrency} clients for {minutes:g} min")
        while time.monotonic() - t0 < minutes * 60:
            time.sleep(min(5.0, max(0.1, minutes * 60 - (time.monotonic() - t0))))
            say(f"{(time.monotonic() - t0) / 60:.1f} min: {len(outcomes)} runs finished")
        stop.set()
        for c in clients:
            c.join(drain_s)  # the runs in flight finish and count
        stop_sampling.set()
        sampler.join(30)
    finally:
        say("stopping the stack")
        stack.stop()
    config = {
        "minutes": minutes, "concurrency": concurrency, "model": model.name,
        "adapters": Path(adapters).name, "sample_s": sample_s, "bucket_s": bucket_s,
        "max_steps": max_steps,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cores": os.cpu_count(),
    }  # fmt: skip
    report = summarize(outcomes, samples, bucket_s, config)
    (out_dir / "soak.json").write_text(json.dumps(asdict(report), indent=2) + "\n")
    table = markdown(report)
    (out_dir / "soak.md").write_text(table)
    print(table, flush=True)
    return report
