"""The loop closed, every part real: runs served by vLLM CPU through the gateway's OpenAI
facade, feedback on some, `lumos runs export`, `python -m training.sft` on the export, the
new LoRA adapter loaded into the running vLLM server with `lumos adapters load` (routed to
maths plans, no restart), and the next run planned by it.

The model is the tiny random one of the test session: its plans are noise, so what is
checked is the pipeline (which runs the export keeps, that training reads them, that the
served adapter is the trained one and answers the next run), not the quality of a plan.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from gateway.app import create_app
from lumos.domains import get_domain
from lumos.prompts import plan_prompt
from services.modelserver.profile import LaunchProfile
from tests.e2e.test_full_stack import executor_url  # noqa: F401  (a fixture)
from tests.gateway.helpers import serve, settings_for
from tests.vllm_server import (
    REPO_ROOT,
    VLLMProcess,
    _free_port,
    build_tiny_model,
    started_vllm,
    vllm_python,
)
from training.annotation import read_annotations

pytestmark = [pytest.mark.vllm, pytest.mark.redis, pytest.mark.slow]

TASKS = [
    "Tom has 3 boxes of 12 pencils and gives away 7. How many pencils are left?",
    "A baker makes 4 trays of 9 rolls and sells 20. How many rolls remain?",
    "Mia reads 15 pages a day for 6 days. How many pages does she read?",
    "A farmer has 48 eggs and packs them in boxes of 6. How many boxes does he fill?",
]
RATED_GOOD = 3  # the first three runs get score 1, the last one score 0
ADAPTER = "lumos-plan-loop"  # the served name of the adapter trained on the export
MAX_LORA_RANK = 8


@pytest.fixture(scope="module")
def lora_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """vLLM CPU serving the tiny model as lumos-plan/lumos-ground, adapters loadable at run
    time (`--enable-lora`, VLLM_ALLOW_RUNTIME_LORA_UPDATING): (base URL, model folder)."""
    python = vllm_python()
    model_dir = build_tiny_model(python)
    profile = LaunchProfile(
        model=str(model_dir),
        served_model_names=["lumos-plan", "lumos-ground"],
        host="127.0.0.1",
        port=_free_port(),
        cpu_kvcache_space_gib=1,
        extra_args=["--enable-lora", "--max-lora-rank", str(MAX_LORA_RANK), "--max-loras", "2"],
    )
    server = VLLMProcess.from_profile(
        profile,
        python,
        log_path=tmp_path_factory.mktemp("vllm") / "vllm.log",
        env={"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"},
    )
    with started_vllm(server):
        yield server.url, model_dir


async def _chat(client: openai.AsyncOpenAI, task: str) -> str:
    """Run `task` as lumos-maths (one step); the run id, whether the run succeeded or not."""
    try:
        raw = await client.chat.completions.with_raw_response.create(
            model="lumos-maths",
            messages=[{"role": "user", "content": task}],
            extra_body={"max_steps": 1},
        )
    except openai.InternalServerError as failed:  # the run failed: a 502 naming it
        assert failed.code == "run_failed", failed.message
        return failed.response.headers["X-Run-Id"]
    return raw.headers["X-Run-Id"]


async def _command(argv: list[str], log: Path) -> None:
    """One command of the loop, as the README gives it (`python -m lumos_cli` is `lumos`),
    while the gateway serves in this event loop; its output kept for a failure."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, *argv, cwd=REPO_ROOT, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await asyncio.wait_for(process.communicate(), timeout=900)
    await asyncio.to_thread(log.write_bytes, output)
    assert process.returncode == 0, f"{' '.join(argv)} failed:\n{output.decode()[-3000:]}"


async def test_served_runs_rated_exported_fine_tuned_and_served_again(
    lora_server,
    executor_url,  # noqa: F811  (the fixture imported above)
    redis_url,
    tmp_path,
):
    vllm_url, model_dir = lora_server
    settings = settings_for(
        redis_url, planner_urls=vllm_url, grounder_urls=vllm_url, executor_url=executor_url
    )
    async with serve(create_app(settings)) as url, httpx.AsyncClient(base_url=url) as http:
        # 1. serve: N runs through the OpenAI facade; 2. feedback on them
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0)
        run_ids = [await _chat(client, task) for task in TASKS]
        for k, run_id in enumerate(run_ids):
            score = 1 if k < RATED_GOOD else 0
            given = await http.post(f"/agent/runs/{run_id}/feedback", json={"score": score})
            assert given.status_code == 200, given.text
        runs = [(await http.get(f"/agent/runs/{run_id}")).json() for run_id in run_ids]

        # 3. export: the well-rated runs that completed their step (one step: max_steps)
        export = tmp_path / "runs.jsonl"
        await _command(
            ["-m", "lumos_cli", "runs", "export", "--redis-url", redis_url, "--out", str(export),
             "--min-score", "1", "--include-max-steps", "--include-failed-actions"],
            tmp_path / "export.log",
        )  # fmt: skip
        completed = {r["id"] for r in runs[:RATED_GOOD] if r["status"] == "succeeded"}
        assert completed, f"no well-rated run completed its step: {[r['error'] for r in runs]}"
        annotations = list(read_annotations(export))
        assert {a.id for a in annotations} == {f"run-{i}" for i in completed}
        exported = (tmp_path / "export.log").read_text()
        assert f"kept {len(completed)} of {len(TASKS)} stored runs" in exported

        # 4. fine-tune the planner on the export: a LoRA adapter of the served model
        adapter = tmp_path / "adapter"
        await _command(
            ["-m", "training.sft",
             "--override", f"model_name_or_path={model_dir}",
             "--override", f'train_files=["{export}"]',
             "--override", "module=plan", "--override", "formulation=iterative",
             "--override", f"output_dir={adapter}",
             "--override", "lora=true", "--override", f"lora_r={MAX_LORA_RANK}",
             "--override", "lora_alpha=32", "--override", "learning_rate=0.05",
             "--override", "effective_batch_size=1", "--override", "per_device_batch_size=1",
             "--override", "bf16=false", "--override", "gradient_checkpointing=false",
             "--override", "logging_steps=1", "--max-steps", "6"],
            tmp_path / "sft.log",
        )  # fmt: skip
        trained = json.loads((adapter / "lumos_training.json").read_text())
        assert trained["data"]["annotations"] == len(completed)
        log_lines = (tmp_path / "sft.log").read_text().splitlines()
        losses = [line for line in log_lines if line.startswith("step ") and " loss " in line]
        print(
            f"\n{exported.strip()}\nsft: {trained['data']['examples']} examples; first "
            f"{losses[0]}\n  last {losses[-1]}",
            file=sys.stderr,
        )

        # 5. load the adapter into the running server and route maths plans to it: no restart
        await _command(
            ["-m", "lumos_cli", "adapters", "--url", url, "load", ADAPTER, str(adapter),
             "--pool", "planner", "--route", "maths/iterative/planner"],
            tmp_path / "load.log",
        )  # fmt: skip

        # 6. the next run is planned by it
        run = (await http.get(f"/agent/runs/{await _chat(client, TASKS[0])}")).json()
    started = run["trace"][0]
    assert started["data"]["models"]["planner"] == ADAPTER, started
    assert started["data"]["models"]["grounder"] == "lumos-ground"
    subgoal = next(e for e in run["trace"] if e["type"] == "subgoal")["data"]["text"]

    # the subgoal is the adapter's own greedy answer to the run's prompt, not the base's
    prompt = plan_prompt(get_domain("maths"), TASKS[0], [])
    async with httpx.AsyncClient(base_url=vllm_url, timeout=120) as vllm:
        served = {m["id"] for m in (await vllm.get("/v1/models")).json()["data"]}
        assert ADAPTER in served

        async def greedy(model: str) -> str:
            body = {"model": model, "prompt": prompt, "max_tokens": 512, "temperature": 0}
            reply = await vllm.post("/v1/completions", json={**body, "stop": ["\n"]})
            return str(reply.json()["choices"][0]["text"]).strip()

        assert subgoal == await greedy(ADAPTER)
        assert subgoal != await greedy("lumos-plan"), "the trained adapter did not change the plan"
