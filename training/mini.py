"""Lumos-mini: the whole Lumos recipe at small scale, from annotations to served adapters.

    python -m training.mini all          # annotate, train the four adapters, pack them
    python -m training.mini annotate     # GSM8K + SVAMP train split, synthetic -> annotations
    python -m training.mini train [--only plan_iterative ...]
    python -m training.mini pack         # .run/training/mini/* -> models/lumos-mini/*

Four LoRA adapters on the Gemma 3 270M base (`make default-model` prepares it): planner
and grounder, iterative (Lumos-I) and onetime (Lumos-O), one recipe each in
`training/recipes/mini/`. `pack` keeps what serving needs (the adapter's config and its
weights in bfloat16, ~7.6 MB each) in `models/lumos-mini/<module>_<formulation>/`, where
`make run` finds them and serves them with vLLM as LoRA adapters of the one base model:
`lumos-plan`, `lumos-ground`, `lumos-plan-onetime`, `lumos-ground-onetime`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from services.modelserver.adapters import ADAPTERS, served_name

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ROOT / "training" / "recipes" / "mini"
ANNOTATIONS = ROOT / ".run" / "training" / "annotations"
PACKED = ROOT / "models" / "lumos-mini"
# Multi-step problems made by `training.synthetic` for the planners (GSM8K's train split
# alone has too few multi-step plans; see training/RESULTS.md).
SYNTHETIC_COUNT = 500
SYNTHETIC_SEED = 7
BASE_MODEL_NAME = "gemma-3-270m"  # what adapter_config.json names as its base (no local path)
# The fields of PEFT's adapter_config.json that loading a LoRA adapter reads (PEFT and vLLM).
CONFIG_KEYS = (
    "peft_type",
    "task_type",
    "r",
    "lora_alpha",
    "lora_dropout",
    "target_modules",
    "bias",
    "fan_in_fan_out",
    "use_rslora",
    "use_dora",
    "modules_to_save",
    "init_lora_weights",
    "inference_mode",
)


class MiniError(RuntimeError):
    """A step that cannot run; the message says what to do."""


def annotate(data_dir: Path | None = None) -> list[Path]:
    from training import annotate as annotate_cli

    written = []
    for dataset in ("gsm8k", "svamp"):
        out = ANNOTATIONS / f"{dataset}_train.jsonl"
        argv = ["--dataset", dataset, "--out", str(out), "--split", "train"]
        if data_dir is not None:
            argv += ["--data-dir", str(data_dir)]
        if annotate_cli.main(argv) != 0:
            raise MiniError(f"annotating {dataset} failed (see above)")
        written.append(out)
    from training import synthetic

    out = ANNOTATIONS / "synthetic_train.jsonl"
    argv = ["--count", str(SYNTHETIC_COUNT), "--seed", str(SYNTHETIC_SEED), "--out", str(out)]
    if synthetic.main(argv) != 0:
        raise MiniError("some synthetic problems failed validation (see above)")
    written.append(out)
    return written


def train(
    only: Sequence[str] = ADAPTERS, overrides: Sequence[str] = (), *, force: bool = False
) -> list[Path]:
    """Train the adapters in `only`, one after the other.

    Resumable: an adapter whose output folder already holds a finished run (its
    ``lumos_training.json``, written last) is skipped unless `force`, so an interrupted
    ``train`` started again goes on with the adapter it was training.
    """
    from training.config import load_config
    from training.sft import CONFIG_FILE
    from training.sft import train as sft_train

    outputs = []
    for k, adapter in enumerate(only, start=1):
        config = load_config(RECIPES / f"{adapter}.toml", overrides)
        missing = [
            f for f in config.train_files if not (ROOT / f).exists() and not Path(f).exists()
        ]
        if missing:
            raise MiniError(
                f"no annotations at {', '.join(missing)}: run `python -m training.mini annotate`"
            )
        if not Path(config.model_name_or_path, "config.json").exists():
            raise MiniError(
                f"no base model at {config.model_name_or_path}: run `make default-model`"
            )
        if not force and Path(config.output_dir, CONFIG_FILE).exists():
            print(
                f"[{k}/{len(only)}] {adapter}: already trained in {config.output_dir} "
                "(--force trains it again)",
                flush=True,
            )
            outputs.append(Path(config.output_dir))
            continue
        print(f"[{k}/{len(only)}] {adapter}", flush=True)
        started = time.perf_counter()
        result = sft_train(config)
        print(f"[{k}/{len(only)}] {adapter}: {time.perf_counter() - started:.0f} s", flush=True)
        outputs.append(result.output_dir)
    return outputs


def pack_adapter(checkpoint: Path, out: Path) -> dict[str, float]:
    """Copy a trained PEFT adapter to `out`: its config (portable) and bfloat16 weights."""
    import torch
    from safetensors.torch import load_file, save_file

    config_path = checkpoint / "adapter_config.json"
    weights_path = checkpoint / "adapter_model.safetensors"
    if not config_path.exists() or not weights_path.exists():
        raise MiniError(
            f"{checkpoint} holds no trained adapter (adapter_config.json, "
            "adapter_model.safetensors): run `python -m training.mini train` first"
        )
    config = json.loads(config_path.read_text())
    packed = {key: config[key] for key in CONFIG_KEYS if key in config}
    packed["base_model_name_or_path"] = BASE_MODEL_NAME
    packed["target_modules"] = sorted(packed.get("target_modules") or [])
    tensors = {
        name: t.to(torch.bfloat16).contiguous() for name, t in load_file(weights_path).items()
    }
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, out / "adapter_model.safetensors", metadata={"format": "pt"})
    (out / "adapter_config.json").write_text(json.dumps(packed, indent=2, sort_keys=True) + "\n")
    stats = {"parameters": float(sum(t.numel() for t in tensors.values()))}
    trained = checkpoint / "lumos_training.json"
    if trained.exists():
        record = json.loads(trained.read_text())
        keep = ("module", "formulation", "num_train_epochs", "learning_rate", "lora_r",
                "lora_alpha", "max_examples", "effective_batch_size", "seed", "init_adapter",
                "train_files", "data")  # fmt: skip
        (out / "training.json").write_text(
            json.dumps({k: record[k] for k in keep if k in record}, indent=2) + "\n"
        )
    return stats


def pack(
    source: Path = ROOT / ".run" / "training" / "mini",
    dest: Path = PACKED,
    only: Sequence[str] = ADAPTERS,
) -> list[Path]:
    written = []
    for adapter in only:
        out = dest / adapter
        stats = pack_adapter(source / adapter, out)
        size = (out / "adapter_model.safetensors").stat().st_size
        print(
            f"{adapter} -> {out} ({stats['parameters']:,.0f} parameters, {size / 2**20:.1f} MiB), "
            f"served as {served_name(adapter)}",
            flush=True,
        )
        written.append(out)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.mini",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("step", choices=("all", "annotate", "train", "pack"))
    parser.add_argument(
        "--only",
        nargs="+",
        choices=ADAPTERS,
        default=list(ADAPTERS),
        help="train (or pack) these only",
    )
    parser.add_argument(
        "--override", action="append", default=[], metavar="KEY=VALUE",
        help="replace a recipe setting in every adapter's recipe (e.g. max_steps=20)",
    )  # fmt: skip
    parser.add_argument(
        "--data-dir", type=Path, help="evaluation data (default: $LUMOS_EVAL_DATA_DIR or data/eval)"
    )
    parser.add_argument(
        "--force", action="store_true", help="train adapters again that are already trained"
    )
    args = parser.parse_args(argv)
    try:
        if args.step in ("all", "annotate"):
            annotate(args.data_dir)
        if args.step in ("all", "train"):
            train(args.only, args.override, force=args.force)
        if args.step in ("all", "pack"):
            pack(only=args.only)
    except MiniError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
