"""Does an iterative planner's stop decision read the task? Measured on annotations.

    python -m training.stopcheck --model .cache/models/gemma-3-270m \\
        --adapter models/lumos-mini/plan_iterative --data .run/training/annotations/gsm8k_train.jsonl

After each executed step the Lumos-I planner answers ``Yes, I will stop planning.`` or
``No, I will keep planning. Subgoal k+1: ...``: its first token is the decision. For every
decision point of every annotation (gold history, rendered by `training.render` exactly as
served) this reads P(``Yes``) and P(``No``) of that first token and reports them split by
the gold decision and by the step the decision follows. A planner that learnt the decision
puts a high P(Yes) where the gold says stop and a low one elsewhere; one that learnt a
prior gives the same P(Yes) everywhere. One forward pass per conversation, projected to the vocabulary only at the
positions before each answer (the decisions).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.annotation import Annotation, read_annotations
from training.render import render
from training.sft import vocabulary_logits


@dataclass(frozen=True)
class Decision:
    after_step: int  # the decision follows this many executed steps
    gold_stop: bool
    p_yes: float
    p_no: float

    @property
    def predicted_stop(self) -> bool:
        return self.p_yes > self.p_no


@dataclass
class StopReport:
    decisions: list[Decision] = field(default_factory=list)

    def _select(self, gold_stop: bool) -> list[Decision]:
        return [d for d in self.decisions if d.gold_stop is gold_stop]

    @staticmethod
    def _mean(values: Iterable[float]) -> float:
        values = list(values)
        return sum(values) / len(values) if values else float("nan")

    @property
    def accuracy(self) -> float:
        return self._mean(float(d.predicted_stop == d.gold_stop) for d in self.decisions)

    def summary(self) -> dict[str, Any]:
        by_step: dict[int, dict[str, Any]] = {}
        for step in sorted({d.after_step for d in self.decisions}):
            here = [d for d in self.decisions if d.after_step == step]
            by_step[step] = {
                "decisions": len(here),
                "gold_stop_share": self._mean(float(d.gold_stop) for d in here),
                "mean_p_yes_gold_stop": self._mean(d.p_yes for d in here if d.gold_stop),
                "mean_p_yes_gold_continue": self._mean(d.p_yes for d in here if not d.gold_stop),
                "accuracy": self._mean(float(d.predicted_stop == d.gold_stop) for d in here),
            }
        return {
            "decisions": len(self.decisions),
            "accuracy": self.accuracy,
            "mean_p_yes_gold_stop": self._mean(d.p_yes for d in self._select(True)),
            "mean_p_yes_gold_continue": self._mean(d.p_yes for d in self._select(False)),
            "by_step": by_step,
        }


def decision_token_ids(tokenizer: Any) -> tuple[int, int]:
    """The first token of ``Yes, ...`` and of ``No, ...`` as they follow the prompt."""
    ids = []
    for word in ("Yes", "No"):
        encoded = tokenizer(word, add_special_tokens=False)["input_ids"]
        ids.append(encoded[0])
    return ids[0], ids[1]


def check(model: Any, tokenizer: Any, annotations: Sequence[Annotation]) -> StopReport:
    import torch

    yes_id, no_id = decision_token_ids(tokenizer)
    report = StopReport()
    model.eval()
    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    for annotation in annotations:
        example = render(annotation, "plan", "iterative")
        encoding = tokenizer(example.text, return_offsets_mapping=True)
        starts = [s for s, _ in encoding["offset_mapping"]]
        # the token that opens each answer after the first: its logits come from the position before
        positions = [
            next(i for i, s in enumerate(starts) if s >= example.spans[turn][0] and i > 0) - 1
            for turn in range(1, len(example.spans))
        ]
        with torch.no_grad():
            # LoRA layers live inside the base model's modules: its decoder includes them
            hidden = causal_lm.get_decoder()(
                input_ids=torch.tensor([encoding["input_ids"]])
            ).last_hidden_state[0]
            logits = vocabulary_logits(causal_lm, hidden[positions])
        probs = torch.softmax(logits, dim=-1)
        steps = len(annotation.steps)
        for turn, row in enumerate(probs, start=1):  # turn k answers after k executed steps
            report.decisions.append(
                Decision(turn, turn == steps, float(row[yes_id]), float(row[no_id]))
            )
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.stopcheck", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--model", required=True, help="base model folder")
    parser.add_argument("--adapter", help="a LoRA adapter folder on top of it")
    parser.add_argument("--data", type=Path, nargs="+", required=True, help="annotation files")
    parser.add_argument("--limit", type=int, default=200, help="annotations per file")
    parser.add_argument("--json", type=Path, help="also write the summary here")
    args = parser.parse_args(argv)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model: Any = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    if args.adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, args.adapter)
    annotations: list[Annotation] = []
    for path in args.data:
        if not path.exists():
            print(f"error: no annotations at {path}", file=sys.stderr)
            return 2
        annotations += list(read_annotations(path))[: args.limit]
    summary = check(model, tokenizer, annotations).summary()
    print(
        f"{summary['decisions']} decisions: accuracy {summary['accuracy']:.3f}; mean P(Yes) "
        f"where gold stops {summary['mean_p_yes_gold_stop']:.3f}, where gold continues "
        f"{summary['mean_p_yes_gold_continue']:.3f}"
    )
    for step, row in summary["by_step"].items():
        print(
            f"  after step {step}: {row['decisions']} decisions, gold stops "
            f"{row['gold_stop_share']:.2f}, P(Yes) {row['mean_p_yes_gold_stop']:.3f} (stop) / "
            f"{row['mean_p_yes_gold_continue']:.3f} (continue), accuracy {row['accuracy']:.3f}"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
