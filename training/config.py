"""The fine-tuning run's settings: one dataclass, read from a TOML recipe plus overrides.

A recipe is a flat TOML file whose keys are `TrainConfig`'s fields. ``--override key=value``
replaces one field; the value is read as a TOML value (``2e-5``, ``true``,
``["a.jsonl", "b.jsonl"]``) and, failing that, as a plain string (``/models/llama``).
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A recipe or override that does not fit `TrainConfig`."""


@dataclass
class TrainConfig:
    """Everything a run needs; defaults are the Lumos paper's recipe (LLaMA-2-7B, full SFT)."""

    model_name_or_path: str
    train_files: list[str]
    module: str  # plan | ground
    formulation: str  # iterative | onetime
    output_dir: str
    tokenizer_name_or_path: str | None = None
    num_train_epochs: float = 2.0
    learning_rate: float = 2e-5
    lr_scheduler_type: str = "linear"
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    effective_batch_size: int = 128  # per-device batch x devices x gradient accumulation
    per_device_batch_size: int = 2
    max_length: int = 1024
    bf16: bool = True
    gradient_checkpointing: bool = True
    lora: bool = False
    lora_r: int = 64
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"]
    )
    # continue training this LoRA adapter (its folder) instead of starting from fresh
    # weights; its own rank, alpha and target modules apply (lora_r etc. are ignored)
    init_adapter: str | None = None
    deepspeed: str | None = None  # a DeepSpeed JSON config, e.g. training/recipes/ds_zero3.json
    max_steps: int = -1  # > 0: stop after this many optimizer steps (smoke runs)
    logging_steps: int = 10
    save_steps: int = 0  # 0: save at the end of each epoch
    seed: int = 42
    max_examples: int = 0  # 0: all
    # >= 0: keep at most this many one-step annotations (the first in file order); SVAMP's
    # are three quarters of it and taught the first Lumos-mini planners to stop at once
    max_one_step_examples: int = -1
    sample_examples: bool = False  # max_examples drawn at random (seed) instead of the first
    group_by_length: bool = True  # batch examples of similar length (less padding)
    exclude_test: bool = True  # drop GSM8K/SVAMP annotations whose question is in the test split

    def gradient_accumulation_steps(self, world_size: int) -> int:
        per_step = self.per_device_batch_size * world_size
        if self.effective_batch_size % per_step:
            raise ConfigError(
                f"effective_batch_size {self.effective_batch_size} is not a multiple of "
                f"per_device_batch_size x devices = {per_step}; change one of them"
            )
        return self.effective_batch_size // per_step


def _field_types() -> dict[str, Any]:
    hints = typing.get_type_hints(TrainConfig)
    return {f.name: hints[f.name] for f in dataclasses.fields(TrainConfig)}


def _parse_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _check(name: str, value: Any, kind: Any) -> Any:
    args = typing.get_args(kind)
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() == "none"):
            return None
        kind = next(a for a in args if a is not type(None))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if typing.get_origin(kind) is list:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value
    elif isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    raise ConfigError(f"{name} = {value!r} is not a {getattr(kind, '__name__', kind)}")


def load_config(recipe: Path | None, overrides: Sequence[str] = ()) -> TrainConfig:
    """`TrainConfig` from a TOML recipe (optional) with ``key=value`` overrides applied."""
    values: dict[str, Any] = {}
    if recipe is not None:
        try:
            values.update(tomllib.loads(Path(recipe).read_text(encoding="utf-8")))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read recipe {recipe}: {exc}") from exc
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"override {item!r} is not key=value")
        values[key.strip()] = _parse_value(raw.strip())
    types_ = _field_types()
    unknown = sorted(set(values) - set(types_))
    if unknown:
        raise ConfigError(
            f"unknown setting(s) {', '.join(unknown)}; expected some of {', '.join(types_)}"
        )
    checked = {k: _check(k, v, types_[k]) for k, v in values.items()}
    missing = [
        f.name
        for f in dataclasses.fields(TrainConfig)
        if f.name not in checked
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(
            f"missing setting(s) {', '.join(missing)}: put them in the recipe or --override"
        )
    config = TrainConfig(**checked)
    if config.module not in ("plan", "ground"):
        raise ConfigError(f"module = {config.module!r}; expected plan or ground")
    if config.formulation not in ("iterative", "onetime"):
        raise ConfigError(f"formulation = {config.formulation!r}; expected iterative or onetime")
    if config.init_adapter and not config.lora:
        raise ConfigError("init_adapter needs lora = true (it continues a LoRA adapter)")
    return config


def to_toml(values: dict[str, Any]) -> str:
    """A flat TOML document (strings, numbers, booleans, lists of strings)."""
    lines = []
    for key, value in values.items():
        lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")
