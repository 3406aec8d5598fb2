"""Serving a set of LoRA adapters of one base model: Lumos-mini's four, by default.

A folder of adapters holds one subfolder per module x formulation (`plan_iterative`,
`ground_iterative`, `plan_onetime`, `ground_onetime`, as `python -m training.mini pack`
writes them). One vLLM server loads the base model once and every adapter under the
served name the gateway asks for (`lumos-plan`, `lumos-ground`, `lumos-plan-onetime`,
`lumos-ground-onetime`); the base model itself answers as `lumos-base`.
"""

from __future__ import annotations

import json
from pathlib import Path

ADAPTERS = ("plan_iterative", "ground_iterative", "plan_onetime", "ground_onetime")
BASE_SERVED_NAME = "lumos-base"


class AdapterError(ValueError):
    """An adapter folder that cannot be served; the message says what is missing."""


def served_name(adapter: str) -> str:
    """`plan_iterative` -> `lumos-plan`, `ground_onetime` -> `lumos-ground-onetime`."""
    module, _, formulation = adapter.partition("_")
    if module not in ("plan", "ground") or formulation not in ("iterative", "onetime"):
        raise AdapterError(f"{adapter!r} is not <plan|ground>_<iterative|onetime>")
    return f"lumos-{module}" + ("" if formulation == "iterative" else f"-{formulation}")


def adapter_folders(root: Path) -> dict[str, Path]:
    """Served name -> adapter folder, for every adapter `root` must hold."""
    folders = {}
    for adapter in ADAPTERS:
        folder = root / adapter
        missing = [
            f
            for f in ("adapter_config.json", "adapter_model.safetensors")
            if not (folder / f).is_file()
        ]
        if missing:
            raise AdapterError(
                f"{folder} lacks {', '.join(missing)}: pack trained adapters there with "
                "`python -m training.mini pack`, or serve the base model alone (LUMOS_ADAPTERS=none)"
            )
        folders[served_name(adapter)] = folder.resolve()
    return folders


def max_rank(folders: dict[str, Path]) -> int:
    return max(
        int(json.loads((f / "adapter_config.json").read_text())["r"]) for f in folders.values()
    )


def server_env(folders: dict[str, Path], prefix: str = "LUMOS_MODELSERVER_") -> dict[str, str]:
    """Environment for `services.modelserver.launch --module both`: base + every adapter.

    vLLM's default of one adapter per batch would serialize planner and grounder requests
    of concurrent runs, so every adapter may be in a batch (`--max-loras`).
    """
    return {
        f"{prefix}SERVED_MODEL_NAMES": json.dumps([BASE_SERVED_NAME]),
        f"{prefix}LORA_MODULES": json.dumps({name: str(path) for name, path in folders.items()}),
        f"{prefix}MAX_LORA_RANK": str(max_rank(folders)),
        f"{prefix}EXTRA_ARGS": json.dumps(["--max-loras", str(len(folders))]),
    }


def gateway_env() -> dict[str, str]:
    """The gateway's model names for the adapters (onetime runs get the onetime ones)."""
    return {
        "LUMOS_PLANNER_MODEL": served_name("plan_iterative"),
        "LUMOS_GROUNDER_MODEL": served_name("ground_iterative"),
        "LUMOS_PLANNER_MODEL_ONETIME": served_name("plan_onetime"),
        "LUMOS_GROUNDER_MODEL_ONETIME": served_name("ground_onetime"),
    }
