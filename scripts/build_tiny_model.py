"""Build a tiny random LlamaForCausalLM and a byte-level BPE tokenizer into one folder.

The model's output is noise, but vLLM serves it like any checkpoint, and structured
outputs make it syntactically valid: enough for protocol, loop and serving tests without
a model hub. Deterministic: the same data gives the same files.

Run with the vLLM environment's Python (it has torch and transformers):

    .venv-vllm/bin/python scripts/build_tiny_model.py --out .cache/tiny-model
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
# Run as a script from the repository root: make the project's packages importable.
sys.path.insert(0, str(REPO_ROOT))
from eval.data_dir import eval_data_dir  # noqa: E402
from lumos.jsonl import json_object, read_jsonl  # noqa: E402

SEED = 0

# Text the Lumos prompts and action grammar are made of, so the tokenizer has tokens for
# it: short token paths make regex-constrained decoding cheap and prompts compact.
TOOL_NAMES = (
    "KnowledgeQuery ParagraphRetrieve QA Calculator Code SetEquation SolveEquation Count "
    "SolveInequality Define CLICK TYPE SELECT Search FeatureRetrieve Pick Click"
).split()
LUMOS_TEXT = [
    "<|user|>\nPlease provide a reasonable subgoal-based plan to solve the given task.\n"
    "Task: How many kids did Julius Caesar have?; Initial Environment Description: None.\n"
    "<|assistant|>\nSubgoal 1: Obtain the number of kids Julius Caesar had.\n\n"
    "<|user|>\nThe execution result for Subgoal 1 is 3.\n"
    "Should we stop planning?\n<|assistant|>\nNo, I will keep planning.\n"
    "Yes, I will stop planning.\n",
    "Task: Janet sells eggs. \nSubgoal to be grounded: Subgoal 2: Calculate the money.\n"
    "Subgoals to be grounded: Subgoal 1: ...; Subgoal 2: ...\n",
    "R1 = KnowledgeQuery(Julius Caesar); R2 = ParagraphRetrieve(R1, Query: How many kids "
    "did Julius Caesar have?); R3 = QA([R2], Question: How many kids did Julius Caesar have?)",
    "R1 = Calculator(16 - 3 - 4); R2 = Calculator(R1 * 2); R3 = SetEquation(x + 2 = 5); "
    "R4, R5 = SolveEquation(R3); R6 = Count([R4, R5]); R7 = SolveInequality(x > 2); "
    "R8 = Define(x = 3); R9 = Code(print(R8))",
    "R1 = CLICK(Env, QUERY: Find the search box); R2 = TYPE(R1, QUERY: Enter the city, "
    "TEXT: New York); R3 = SELECT(R2, QUERY: Pick a date, TEXT: May 1)",
    "R1 = Search(red shoes); R2 = FeatureRetrieve(R1, Query: price); "
    "R3 = Pick(R1, R2, Query: cheapest); R4 = Click(R3)",
    " ".join(f"R{i} = " for i in range(1, 21)),
    " ".join(f"{name}(" for name in TOOL_NAMES),
]
FALLBACK_TEXT = [
    "Were Scott Derrickson and Ed Wood of the same nationality?",
    "How many bolts in total does it take?",
    "Is it common to see frost during some college commencements?",
    "Each pack of dvds costs 76 dollars. How much do you have to pay to buy each pack?",
]
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>"]


def questions(data_dir: Path) -> list[str]:
    """Question text from every `*/dev.jsonl` under `data_dir`, in a fixed order."""
    texts: list[str] = []
    for path in sorted(data_dir.glob("*/dev.jsonl")):
        for _, row in read_jsonl(path, json_object):
            text = row.get("question") or " ".join(
                str(row[k]) for k in ("Body", "Question") if row.get(k)
            )
            if text:
                texts.append(str(text))
    return texts


def build_tokenizer(corpus: list[str], vocab_size: int):  # type: ignore[no-untyped-def]
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    bos_id = tok.token_to_id("<s>")
    # Like LLaMA's tokenizer: <s> before every prompt, nothing after; no chat template.
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        model_max_length=4096,
        clean_up_tokenization_spaces=False,
    )


def build_model(tokenizer, hidden: int, layers: int, heads: int):  # type: ignore[no-untyped-def]
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(SEED)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        torch_dtype="float32",
    )
    model = LlamaForCausalLM(config)
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / ".cache" / "tiny-model")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=eval_data_dir(),
        help="folder with <dataset>/dev.jsonl files for the tokenizer (default: %(default)s)",
    )
    parser.add_argument("--vocab-size", type=int, default=4096)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    args = parser.parse_args(argv)

    corpus = questions(args.data_dir) if args.data_dir.is_dir() else []
    if not corpus:
        print(f"no questions under {args.data_dir}; using the built-in text", file=sys.stderr)
        corpus = list(FALLBACK_TEXT)
    corpus += LUMOS_TEXT * 50  # frequent enough that their merges are learnt first

    tokenizer = build_tokenizer(corpus, args.vocab_size)
    model = build_model(tokenizer, args.hidden, args.layers, args.heads)
    args.out.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(args.out)
    model.save_pretrained(args.out, safe_serialization=True)
    params = sum(p.numel() for p in model.parameters())
    print(
        f"wrote {args.out}: {params / 1e6:.2f}M parameters, "
        f"vocabulary of {len(tokenizer)} tokens, from {len(corpus)} texts"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
