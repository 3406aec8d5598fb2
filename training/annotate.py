"""Make validated maths annotations from GSM8K or SVAMP rows, train split only.

    python -m training.annotate --dataset svamp --out .run/training/annotations/svamp.jsonl
    python -m training.annotate --dataset gsm8k --method llm --base-url http://127.0.0.1:8000 \\
        --model gpt-4o --out .run/training/annotations/gsm8k_llm.jsonl

``--method rules`` uses `training.rules`; ``--method llm`` asks an OpenAI-compatible chat
endpoint to convert the worked solution (`training.llm_convert`). Either way every draft is
executed (`training.validate`) and only those reaching the dataset's answer are written;
the pass rate is printed. Questions in the test split (`eval.split`) are skipped unless
``--split test`` or ``--split all`` asks for them (for measuring, never for training).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from eval.data_dir import eval_data_dir
from eval.datasets import svamp_task
from eval.split import is_test
from lumos.jsonl import json_object, read_jsonl
from training.annotation import Draft, write_jsonl
from training.rules import DRAFTERS, ConversionError
from training.validate import Report, check_all


def task_of(dataset: str, row: dict[str, Any]) -> str:
    """The task text the split and the planner see (as `eval.datasets` builds it)."""
    if dataset == "svamp":
        return svamp_task(str(row["Body"]), str(row["Question"]))
    return str(row["question"]).strip()


def read_rows(dataset: str, data_dir: Path, split: str) -> list[dict[str, Any]]:
    path = data_dir / dataset / "dev.jsonl"
    rows = [row for _, row in read_jsonl(path, json_object)]
    if split == "all":
        return rows
    want_test = split == "test"
    return [r for r in rows if is_test(task_of(dataset, r)) == want_test]


def rule_drafts(
    dataset: str, rows: Sequence[dict[str, Any]]
) -> tuple[list[Draft], list[tuple[str, str]]]:
    drafts: list[Draft] = []
    unconverted: list[tuple[str, str]] = []
    for row in rows:
        try:
            drafts.append(DRAFTERS[dataset](row))
        except ConversionError as exc:
            unconverted.append((task_of(dataset, row)[:60], str(exc)))
    return drafts, unconverted


def annotate_rules(dataset: str, rows: Sequence[dict[str, Any]]) -> Report:
    drafts, unconverted = rule_drafts(dataset, rows)
    outcomes = asyncio.run(check_all(drafts))
    return Report(outcomes, unconverted)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.annotate", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--dataset", choices=sorted(DRAFTERS), required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=eval_data_dir(),
        help="folder with <dataset>/dev.jsonl (default: $LUMOS_EVAL_DATA_DIR or data/eval)",
    )
    parser.add_argument("--split", choices=("train", "test", "all"), default="train")
    parser.add_argument("--method", choices=("rules", "llm"), default="rules")
    parser.add_argument("--base-url", help="OpenAI-compatible server (--method llm)")
    parser.add_argument("--model", help="chat model name (--method llm)")
    parser.add_argument("--api-key", help="bearer token for the server, if it needs one")
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args(argv)
    rows = read_rows(args.dataset, args.data_dir, args.split)
    if args.method == "rules":
        report = annotate_rules(args.dataset, rows)
    else:
        if not args.base_url or not args.model:
            print("error: --method llm needs --base-url and --model", file=sys.stderr)
            return 2
        from training.llm_convert import ChatEndpoint, annotate_with_llm

        endpoint = ChatEndpoint(args.base_url, args.model, api_key=args.api_key)
        report = asyncio.run(annotate_with_llm(args.dataset, rows, endpoint, args.concurrency))
    n = write_jsonl(args.out, report.passed)
    print(report.summary(f"{args.dataset} ({args.split}, {args.method})"))
    print(f"wrote {n} annotations to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
