"""Supervised fine-tuning of one Lumos module: a thin script over `TrainConfig`.

    python -m training.sft --recipe training/recipes/small.toml --max-steps 20
    accelerate launch --num_processes 8 -m training.sft \\
        --recipe training/recipes/paper/maths_plan_iterative.toml \\
        --override deepspeed=training/recipes/ds_zero3.json

Hugging Face `Trainer` does the optimisation (AdamW, linear schedule with warmup, bf16,
gradient accumulation to the effective batch, DeepSpeed when configured); `training.data`
renders the examples, the only part that is Lumos'. The resolved config is saved beside
the checkpoint as ``lumos_training.json`` (`training.export` reads the module from it).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.config import ConfigError, TrainConfig, load_config
from training.data import load_examples
from training.encode import IGNORE_INDEX, Encoded

CONFIG_FILE = "lumos_training.json"


@dataclass
class RunResult:
    output_dir: Path
    log_history: list[dict[str, Any]]
    examples: int

    @property
    def losses(self) -> list[float]:
        return [float(e["loss"]) for e in self.log_history if "loss" in e]


class PaddingCollator:
    """Right-pads a batch to its longest example (labels with -100).

    Takes `Encoded` examples or the ``{"input_ids", "labels"}`` dicts `train` hands the
    `Trainer` (its length-grouped sampler reads ``input_ids`` from dict items).
    """

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, batch: Sequence[Encoded | dict[str, list[int]]]) -> dict[str, Any]:
        import torch

        pairs = [
            (e["input_ids"], e["labels"]) if isinstance(e, dict) else (e.input_ids, e.labels)
            for e in batch
        ]
        width = max(len(i) for i, _ in pairs)
        ids = [i + [self.pad_token_id] * (width - len(i)) for i, _ in pairs]
        labels = [lab + [IGNORE_INDEX] * (width - len(lab)) for _, lab in pairs]
        mask = [[1] * len(i) + [0] * (width - len(i)) for i, _ in pairs]
        return {
            "input_ids": torch.tensor(ids, dtype=torch.long),
            "labels": torch.tensor(labels, dtype=torch.long),
            "attention_mask": torch.tensor(mask, dtype=torch.long),
        }


def answer_token_loss(model: Any, batch: dict[str, Any], num_items: Any = None) -> Any:
    """Next-token cross entropy over the labelled positions of `batch`.

    Without `num_items` it is the mean over the batch's labelled tokens, like
    ``model(labels=...)``. With `num_items` (the labelled tokens of the whole accumulated
    batch) it is the sum divided by that count, so that micro-batches accumulated into one
    optimizer step add up to the mean over *every* labelled token of the step: each token
    weighs the same wherever it sits. A mean per micro-batch instead gives a token of a
    batch of short conversations several times the weight of one in a batch of long ones
    (batches are grouped by length), which taught the first Lumos-mini planners the short
    one-step conversations' "stop" far more than the data holds it (training/RESULTS.md).

    The output projection runs only on the hidden states whose next token carries a label:
    with Gemma's 262K-entry vocabulary it is most of a small model's compute, and the
    answers are 8-35 % of a Lumos conversation's tokens, so this is ~2x faster on CPU.
    """
    import torch

    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    hidden = causal_lm.get_decoder()(
        input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask")
    ).last_hidden_state
    targets = batch["labels"][:, 1:]
    keep = targets != IGNORE_INDEX
    logits = vocabulary_logits(causal_lm, hidden[:, :-1][keep])
    if num_items is None:
        return torch.nn.functional.cross_entropy(logits, targets[keep])
    total = torch.nn.functional.cross_entropy(logits, targets[keep], reduction="sum")
    return total / torch.as_tensor(num_items, dtype=total.dtype, device=total.device)


def vocabulary_logits(causal_lm: Any, hidden: Any) -> Any:
    """The model's next-token logits (float32, soft-capped as Gemma's are) for the given
    hidden states only: the output projection is the costly part with a 262K vocabulary."""
    import torch

    logits = causal_lm.get_output_embeddings()(hidden).float()
    cap = getattr(causal_lm.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


def _trainer_class() -> Any:
    from transformers import Trainer

    class AnswerTokenTrainer(Trainer):
        """`Trainer` whose loss is `answer_token_loss`, weighted per labelled token.

        ``model_accepts_loss_kwargs`` makes `Trainer` count the labelled tokens of each
        accumulated batch (``num_items_in_batch``) and not divide the loss again by the
        accumulation steps: our loss divides by that count itself.
        """

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.model_accepts_loss_kwargs = True

        def compute_loss(
            self,
            model: Any,
            inputs: dict[str, Any],
            return_outputs: bool = False,
            num_items_in_batch: Any = None,
        ) -> Any:
            loss = answer_token_loss(model, inputs, num_items_in_batch)
            return (loss, None) if return_outputs else loss

    return AnswerTokenTrainer


def _progress_callback() -> Any:
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        """One line per logging step: loss, learning rate, tokens/s and time left."""

        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.started = time.perf_counter()
            self.last_time, self.last_tokens = self.started, 0

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            if not state.is_world_process_zero or not logs or "loss" not in logs:
                return
            now = time.perf_counter()
            tokens = int(getattr(state, "num_input_tokens_seen", 0) or 0)
            rate = (tokens - self.last_tokens) / max(now - self.last_time, 1e-9)
            self.last_time, self.last_tokens = now, tokens
            elapsed = now - self.started
            left = elapsed / max(state.global_step, 1) * (state.max_steps - state.global_step)
            print(
                f"step {state.global_step}/{state.max_steps} epoch {state.epoch or 0:.2f} "
                f"loss {logs['loss']:.4f} lr {logs.get('learning_rate', 0):.2e} "
                f"tokens/s {rate:,.0f} elapsed {_clock(elapsed)} eta {_clock(left)}",
                flush=True,
            )

    return Progress()


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def train(config: TrainConfig) -> RunResult:
    """Fine-tune per `config`; the model (or LoRA adapter) ends up in `config.output_dir`."""
    import torch
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        PrinterCallback,
        TrainingArguments,
    )

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    accumulation = config.gradient_accumulation_steps(world_size)
    tokenizer = AutoTokenizer.from_pretrained(
        config.tokenizer_name_or_path or config.model_name_or_path
    )
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    examples, report = load_examples(
        config.train_files,
        config.module,
        config.formulation,
        tokenizer,
        config.max_length,
        exclude_test=config.exclude_test,
        max_examples=config.max_examples,
        sample_seed=config.seed if config.sample_examples else None,
        max_one_step=config.max_one_step_examples,
    )
    print(f"data: {report.summary()}", flush=True)
    for why in report.unparsable[:5]:
        print(f"  skipped {why}", flush=True)
    if not examples:
        raise ConfigError(f"no training examples in {', '.join(config.train_files)}")

    dtype = torch.bfloat16 if config.bf16 else torch.float32
    model: Any = AutoModelForCausalLM.from_pretrained(config.model_name_or_path, dtype=dtype)
    if config.init_adapter:  # load_config has checked that lora is on
        from peft import PeftModel

        if not Path(config.init_adapter, "adapter_config.json").exists():
            raise ConfigError(f"init_adapter {config.init_adapter} holds no adapter_config.json")
        model = PeftModel.from_pretrained(model, config.init_adapter, is_trainable=True)
    elif config.lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(
            model,
            LoraConfig(
                task_type="CAUSAL_LM",
                r=config.lora_r,
                lora_alpha=config.lora_alpha,
                lora_dropout=config.lora_dropout,
                target_modules=config.lora_target_modules,
            ),
        )
    steps_per_epoch = math.ceil(len(examples) / (config.per_device_batch_size * world_size))
    total = config.max_steps
    if total <= 0:
        total = math.ceil(steps_per_epoch / accumulation * config.num_train_epochs)
    print(
        f"model: {config.model_name_or_path} ({sum(p.numel() for p in model.parameters()):,} "
        f"parameters{', LoRA' if config.lora else ''}); {world_size} process(es), batch "
        f"{config.per_device_batch_size} x {accumulation} accumulation = "
        f"{config.per_device_batch_size * accumulation * world_size}; {total} optimizer steps",
        flush=True,
    )
    # passed only when wanted: newer transformers warn that the name is deprecated
    checkpointing: dict[str, Any] = (
        {"gradient_checkpointing": True} if config.gradient_checkpointing else {}
    )
    args = TrainingArguments(
        **checkpointing,
        output_dir=config.output_dir,
        per_device_train_batch_size=config.per_device_batch_size,
        gradient_accumulation_steps=accumulation,
        learning_rate=config.learning_rate,
        num_train_epochs=config.num_train_epochs,
        max_steps=config.max_steps,
        lr_scheduler_type=config.lr_scheduler_type,
        warmup_steps=config.warmup_ratio,  # a float below 1 is a ratio of all steps
        weight_decay=config.weight_decay,
        bf16=config.bf16,
        deepspeed=config.deepspeed,
        logging_steps=config.logging_steps,
        logging_first_step=True,
        save_strategy="steps" if config.save_steps > 0 else "epoch",
        save_steps=config.save_steps if config.save_steps > 0 else 500,
        save_only_model=True,
        seed=config.seed,
        report_to="none",
        remove_unused_columns=False,
        include_num_input_tokens_seen="non_padding",
        disable_tqdm=True,
        use_cpu=not torch.cuda.is_available(),
        # batches of similar lengths: less padding (the conversations vary 3-5x in length)
        train_sampling_strategy="group_by_length" if config.group_by_length else "random",
    )
    trainer = _trainer_class()(
        model=model,
        args=args,
        train_dataset=[{"input_ids": e.input_ids, "labels": e.labels} for e in examples],
        data_collator=PaddingCollator(tokenizer.pad_token_id),
        callbacks=[_progress_callback()],
    )
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    trainer.save_model(config.output_dir)
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(config.output_dir)
        saved = dataclasses.asdict(config) | {"data": dataclasses.asdict(report)}
        Path(config.output_dir, CONFIG_FILE).write_text(json.dumps(saved, indent=2) + "\n")
        print(f"saved to {config.output_dir}", flush=True)
    return RunResult(Path(config.output_dir), list(trainer.state.log_history), len(examples))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.sft", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--recipe", type=Path, help="a TOML recipe (training/recipes/...)")
    parser.add_argument(
        "--override", action="append", default=[], metavar="KEY=VALUE", help="replace one setting"
    )
    parser.add_argument("--max-steps", type=int, help="stop after this many optimizer steps")
    args = parser.parse_args(argv)
    overrides = list(args.override)
    if args.max_steps is not None:
        overrides.append(f"max_steps={args.max_steps}")
    try:
        config = load_config(args.recipe, overrides)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    train(config)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
