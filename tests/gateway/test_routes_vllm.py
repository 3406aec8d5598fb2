"""Routes over real vLLM CPU servers: each run reaches the model its route names, as the
servers' own request logs (`--enable-log-requests`) record it, and an adapter loaded while
runs are in flight serves the next run without a restart and without failing them.

Server A serves the tiny model with two LoRA adapters (`maths-plan`, `maths-ground`) and
may load more at run time; server B serves the tiny model alone (`tiny-b`). Three routes:
maths' planner and grounder to A's adapters, everything else to B.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.app import create_app
from services.modelserver.profile import LaunchProfile
from tests.e2e.test_full_stack import executor_url  # noqa: F401  (a fixture)
from tests.gateway.helpers import serve, settings_for
from tests.vllm_server import VLLMProcess, _free_port, build_tiny_model, vllm_python

pytestmark = [pytest.mark.vllm, pytest.mark.redis, pytest.mark.slow]

RANK = 8
SAMPLING = {"max_tokens": 24}
# A run that the tiny model's noise ends early is fine; one the stack failed is not.
STACK_FAILURES = {"planner_failed", "grounder_failed", "executor_failed", "gateway_error"}
MATHS = "Tom has 3 boxes of 12 pencils and gives away 7. How many pencils are left?"
QA = "Which city is the capital of the country where the Eiffel Tower stands?"
# The last `lora_request: ...` of a vLLM request log line (the params before it may hold
# anything, the grammar included).
REQUEST = re.compile(
    r"Received request (\S+): .*lora_request: (None|LoRARequest\(lora_name='([^']+)')"
)


def make_adapter(model_dir: Path, out: Path, seed: int, rank: int = RANK) -> Path:
    """A LoRA adapter of the tiny model with random (non-zero) weights, as PEFT saves it."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    config = LoraConfig(
        task_type="CAUSAL_LM",
        r=rank,
        lora_alpha=2 * rank,
        init_lora_weights=False,
        target_modules=["q_proj", "v_proj"],
    )
    get_peft_model(base, config).save_pretrained(out)
    return out


def requests_by_model(log: Path, base_name: str) -> Counter[str]:
    """Completions each served model (adapter or base) answered, from vLLM's request log."""
    counts: Counter[str] = Counter()
    for line in log.read_text(errors="replace").splitlines():
        match = REQUEST.search(line)
        if match:
            counts[match.group(3) or base_name] += 1
    return counts


class Server:
    def __init__(self, name: str, profile: LaunchProfile, python: Path, log: Path) -> None:
        self.vllm = VLLMProcess.from_profile(
            profile,
            python,
            log_path=log,
            env={
                "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True",
                "VLLM_USE_AOT_COMPILE": "0",
                "VLLM_REGEX_COMPILATION_TIMEOUT_S": "120",
            },
            name=f"vLLM server {name}",
        )
        self.url = self.vllm.url
        self.base = profile.served_model_names[0]

    def requests(self) -> Counter[str]:
        return requests_by_model(self.vllm.log_path, self.base)

    async def ready(self) -> None:
        await self.vllm.ready()


def delta(after: Counter[str], before: Counter[str]) -> dict[str, int]:
    return {k: after[k] - before[k] for k in after if after[k] != before[k]}


def calls(run: dict[str, Any]) -> tuple[int, int]:
    return run["timings"]["planner_calls"], run["timings"]["grounder_calls"]


def models_in_trace(run: dict[str, Any], event: str) -> set[str]:
    return {e["data"]["model"] for e in run["trace"] if e["type"] == event}


def assert_not_failed_by_the_stack(run: dict[str, Any]) -> None:
    if run["status"] != "succeeded":
        assert run["error"]["reason"] not in STACK_FAILURES, run["error"]


async def test_runs_reach_the_models_their_routes_name_and_an_adapter_loads_while_runs_fly(
    tmp_path: Path,
    redis_url: str,
    executor_url: str,  # noqa: F811
) -> None:
    python = vllm_python()
    model_dir = build_tiny_model(python)
    plan = make_adapter(model_dir, tmp_path / "maths-plan", seed=1)
    ground = make_adapter(model_dir, tmp_path / "maths-ground", seed=2)
    qa_plan = make_adapter(model_dir, tmp_path / "qa-plan", seed=3)

    common = dict(host="127.0.0.1", cpu_kvcache_space_gib=1, dtype="float32")
    a = Server(
        "A",
        LaunchProfile(
            model=str(model_dir),
            served_model_names=["tiny-a"],
            port=_free_port(),
            lora_modules={"maths-plan": str(plan), "maths-ground": str(ground)},
            max_lora_rank=RANK,
            extra_args=["--max-loras", "3", "--enable-log-requests"],
            **common,  # type: ignore[arg-type]
        ),
        python,
        tmp_path / "vllm-a.log",
    )
    b = Server(
        "B",
        LaunchProfile(
            model=str(model_dir),
            served_model_names=["tiny-b"],
            port=_free_port(),
            extra_args=["--enable-log-requests"],
            **common,  # type: ignore[arg-type]
        ),
        python,
        tmp_path / "vllm-b.log",
    )
    routes_file = tmp_path / "routes.yaml"
    routes_file.write_text(
        f"""
pools:
  a: {{urls: ["{a.url}"], max_lora_rank: {RANK}}}
  b: {{urls: ["{b.url}"]}}
routes:
  - {{domain: maths, module: planner, pool: a, model: maths-plan, sampling: {json.dumps(SAMPLING)}}}
  - {{domain: maths, module: grounder, pool: a, model: maths-ground, sampling: {json.dumps(SAMPLING)}}}
  - {{module: "*", pool: b, model: tiny-b, sampling: {json.dumps(SAMPLING)}}}
"""
    )
    settings = settings_for(
        redis_url,
        routes_file=str(routes_file),
        routes_poll_s=0.5,
        executor_url=executor_url,
        run_deadline_s=600,
        module_timeout_s=300,
    )
    try:
        await asyncio.gather(a.ready(), b.ready())
        async with (
            serve(create_app(settings)) as url,
            httpx.AsyncClient(base_url=url, timeout=660) as c,
        ):
            ready = await c.get("/readyz")
            assert ready.status_code == 200, ready.text

            async def run(domain: str, formulation: str, **extra: Any) -> dict[str, Any]:
                body = {"task": QA if domain == "complex_qa" else MATHS, "domain": domain,
                        "formulation": formulation, "max_steps": 2, **extra}  # fmt: skip
                response = await c.post("/agent/run", json=body)
                assert response.status_code in (200, 202), response.text
                return dict(response.json())

            # -- two domains x both formulations, each on the model its route names -----
            for domain in ("maths", "complex_qa"):
                for formulation in ("iterative", "onetime"):
                    before_a, before_b = a.requests(), b.requests()
                    done = await run(domain, formulation)
                    assert_not_failed_by_the_stack(done)
                    planner_calls, grounder_calls = calls(done)
                    assert planner_calls >= 1 and grounder_calls >= 1, done
                    got = (delta(a.requests(), before_a), delta(b.requests(), before_b))
                    if domain == "maths":
                        wanted = ({"maths-plan": planner_calls, "maths-ground": grounder_calls}, {})
                    else:
                        wanted = ({}, {"tiny-b": planner_calls + grounder_calls})
                    assert got == wanted, (domain, formulation, done["trace"])

            # -- a dataset of the maths domain takes the maths route -------------------
            before_a = a.requests()
            done = await run("gsm8k", "iterative")
            assert delta(a.requests(), before_a).get("maths-plan") == calls(done)[0]

            # -- the adapter checks, before vLLM is asked ---------------------------------
            refused = await c.post(
                "/agent/adapters",
                json={"name": "maths-plan", "path": str(qa_plan), "pool": "a"},
            )
            assert refused.status_code == 409 and refused.json()["code"] == "adapter_name_taken"
            big = make_adapter(model_dir, tmp_path / "rank-16", seed=4, rank=16)
            refused = await c.post(
                "/agent/adapters", json={"name": "big", "path": str(big), "pool": "a"}
            )
            assert refused.status_code == 422, refused.text
            assert refused.json()["code"] == "adapter_rank_too_large"
            foreign = tmp_path / "foreign"
            foreign.mkdir()
            config = json.loads((qa_plan / "adapter_config.json").read_text())
            config["base_model_name_or_path"] = "meta-llama/Llama-2-7b-hf"
            (foreign / "adapter_config.json").write_text(json.dumps(config))
            refused = await c.post(
                "/agent/adapters", json={"name": "foreign", "path": str(foreign), "pool": "a"}
            )
            assert refused.json()["code"] == "adapter_base_mismatch", refused.text

            # -- an adapter loaded while runs are in flight ---------------------------------
            before_a, before_b = a.requests(), b.requests()
            flying = [
                (await run("complex_qa", "iterative", background=True, max_steps=4))["id"]
                for _ in range(3)
            ]
            running: list[str] = []
            deadline = time.monotonic() + 300
            while not running and time.monotonic() < deadline:
                views = [(await c.get(f"/agent/runs/{i}")).json() for i in flying]
                running = [v["id"] for v in views if v["status"] == "running"]
                await asyncio.sleep(0.05)
            assert running, "no run was in flight"
            load_started = time.time()
            loaded = await c.post(
                "/agent/adapters",
                json={"name": "qa-plan", "path": str(qa_plan), "pool": "a",
                      "routes": ["complex_qa/*/planner"], "sampling": SAMPLING},
            )  # fmt: skip
            assert loaded.status_code == 200, loaded.text
            assert loaded.json()["servers"] == [a.url]
            views = [(await c.get(f"/agent/runs/{i}")).json() for i in running]
            in_flight = [v["id"] for v in views if v["status"] not in ("succeeded", "failed")]
            while True:  # the runs in flight finish, on the route they started with
                views = [(await c.get(f"/agent/runs/{i}")).json() for i in flying]
                if all(v["status"] in ("succeeded", "failed", "cancelled") for v in views):
                    break
                assert time.monotonic() < deadline, views
                await asyncio.sleep(0.2)
            for view in views:
                assert_not_failed_by_the_stack(view)
                assert models_in_trace(view, "subgoal") <= {"tiny-b"}, view["trace"]
            old_calls = sum(sum(calls(v)) for v in views)
            assert delta(a.requests(), before_a) == {}
            assert delta(b.requests(), before_b) == {"tiny-b": old_calls}

            before_a, before_b = a.requests(), b.requests()
            done = await run("complex_qa", "iterative")  # the next run: the new adapter plans
            assert_not_failed_by_the_stack(done)
            planner_calls, grounder_calls = calls(done)
            assert delta(a.requests(), before_a) == {"qa-plan": planner_calls}
            assert delta(b.requests(), before_b) == {"tiny-b": grounder_calls}
            assert models_in_trace(done, "subgoal") == {"qa-plan"}

            table = (await c.get("/agent/routes")).json()
            runtime = [r for r in table["routes"] if r["runtime"]]
            assert [(r["key"], r["model"]) for r in runtime] == [
                ("complex_qa/*/planner", "qa-plan")
            ]
            assert (await c.get("/readyz")).status_code == 200

            unloaded = await c.delete("/agent/adapters/qa-plan", params={"pool": "a"})
            assert unloaded.status_code == 200, unloaded.text
            assert unloaded.json()["routes"] == ["complex_qa/*/planner"]
            served = (await c.get(f"{a.url}/v1/models")).json()["data"]
            assert "qa-plan" not in {m["id"] for m in served}
            metrics = (await c.get("/metrics")).text
            for model in ("maths-plan", "maths-ground", "tiny-b", "qa-plan"):
                assert f'model="{model}"' in metrics, model
            print(
                f"\nvLLM A answered {dict(a.requests())}, B {dict(b.requests())}; "
                f"in flight at the load: {len(in_flight)} of {len(flying)} runs; "
                f"load took {loaded.elapsed.total_seconds():.2f} s "
                f"(started {time.time() - load_started:.0f} s ago)",
                flush=True,
            )
    finally:
        a.vllm.stop()
        b.vllm.stop()
