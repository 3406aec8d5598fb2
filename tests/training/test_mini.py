"""`python -m training.mini`: the Lumos-mini steps, and the adapters committed for `make run`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.modelserver.adapters import (
    ADAPTERS,
    AdapterError,
    adapter_folders,
    gateway_env,
    served_name,
    server_env,
)
from training.config import load_config
from training.mini import PACKED, RECIPES, main

ROOT = Path(__file__).resolve().parents[2]


def test_every_adapter_has_a_recipe_for_its_own_module_and_formulation() -> None:
    for adapter in ADAPTERS:
        config = load_config(RECIPES / f"{adapter}.toml")
        assert f"{config.module}_{config.formulation}" == adapter
        assert config.lora and config.exclude_test
        assert config.output_dir.endswith(adapter)


def test_served_names_are_what_the_gateway_asks_for() -> None:
    assert [served_name(a) for a in ADAPTERS] == [
        "lumos-plan",
        "lumos-ground",
        "lumos-plan-onetime",
        "lumos-ground-onetime",
    ]
    env = gateway_env()
    assert (env["LUMOS_PLANNER_MODEL"], env["LUMOS_GROUNDER_MODEL_ONETIME"]) == (
        "lumos-plan",
        "lumos-ground-onetime",
    )
    with pytest.raises(AdapterError, match="not <plan|ground>"):
        served_name("plan_sideways")


def test_the_committed_adapters_are_complete_and_portable() -> None:
    folders = adapter_folders(PACKED)  # raises, naming the folder, when one is missing
    env = server_env(folders)
    assert json.loads(env["LUMOS_MODELSERVER_SERVED_MODEL_NAMES"]) == ["lumos-base"]
    assert set(json.loads(env["LUMOS_MODELSERVER_LORA_MODULES"])) == set(folders)
    assert json.loads(env["LUMOS_MODELSERVER_EXTRA_ARGS"]) == ["--max-loras", "4"]
    for folder in folders.values():
        config = json.loads((folder / "adapter_config.json").read_text())
        assert config["base_model_name_or_path"] == "gemma-3-270m"  # no machine path
        assert env["LUMOS_MODELSERVER_MAX_LORA_RANK"] == str(config["r"])
        size = (folder / "adapter_model.safetensors").stat().st_size
        assert size < 10 * 2**20, f"{folder} is {size} bytes: not packed to bfloat16?"
    assert (PACKED / "NOTICE").read_text().startswith("Gemma is provided under")


def test_pack_without_trained_adapters_says_what_to_run(tmp_path, capsys) -> None:
    from training import mini

    with pytest.raises(mini.MiniError, match="python -m training.mini train"):
        mini.pack(source=tmp_path / "nothing", dest=tmp_path / "out")
    code = main(
        ["train", "--only", "plan_iterative", "--override", f"train_files=['{tmp_path}/x']"]
    )
    assert code == 2
    assert "python -m training.mini annotate" in capsys.readouterr().err
