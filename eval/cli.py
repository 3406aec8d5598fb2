"""`lumos eval`: run benchmarks through a gateway, then report against the paper.

    lumos eval run gsm8k svamp --gateway http://127.0.0.1:8000 --concurrency 16 --limit 200
    lumos eval run hotpotqa --judge-url https://api.openai.com/v1 --judge-model gpt-4
    lumos eval run mind2web --mind2web-data data/mind2web/test_domain
    lumos eval report --out-dir eval_runs

Predictions go to ``<out-dir>/<benchmark>.<formulation>.predictions.jsonl``; running the
same command again resumes (answered questions are skipped, failed ones retried). The
report (``report.md``, ``report.png``) covers every predictions file in ``<out-dir>``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console

from eval.agent_client import AgentClient, GatewayTarget, TaskRunner
from eval.baselines import METHODS, BaselineClient, exemplars
from eval.data_dir import eval_data_dir
from eval.datasets import (
    BENCHMARKS,
    SPLITS,
    DatasetError,
    get_benchmark,
    load_questions,
)
from eval.harness import EvalOptions, StepBudget, read_predictions, run_benchmark
from eval.judge import JudgeConfig, LLMJudge
from eval.metrics import DEFAULT_ABS_TOL, DEFAULT_REL_TOL
from eval.report import write_report
from eval.scoring import NumericTolerance

PREDICTIONS_SUFFIX = ".predictions.jsonl"


def predictions_path(out_dir: Path, benchmark: str, formulation: str) -> Path:
    return out_dir / f"{benchmark}.{formulation}{PREDICTIONS_SUFFIX}"


def _step_budget(text: str) -> StepBudget:
    if text in ("original", "gateway"):
        return text  # type: ignore[return-value]
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected 'original', 'gateway' or a number, got {text!r}"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError("--max-steps must be at least 1")
    return value


def _configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="eval_command", required=True)

    run = sub.add_parser("run", help="evaluate benchmarks through a running gateway (resumable)")
    run.add_argument(
        "benchmarks",
        nargs="+",
        choices=sorted(BENCHMARKS),
        metavar="BENCHMARK",
        help=f"one or more of: {', '.join(BENCHMARKS)}",
    )
    run.add_argument(
        "--gateway",
        default=os.environ.get("LUMOS_GATEWAY_URL", "http://127.0.0.1:8000"),
        help="gateway base URL (env LUMOS_GATEWAY_URL)",
    )
    run.add_argument(
        "--api-key", default=os.environ.get("LUMOS_API_KEY"), help="gateway key (env LUMOS_API_KEY)"
    )
    run.add_argument("--formulation", default="iterative", choices=["iterative", "onetime"])
    run.add_argument("--concurrency", "-n", type=int, default=4, help="runs in flight at once")
    run.add_argument("--limit", type=int, help="only the first N questions of each benchmark")
    run.add_argument(
        "--split",
        choices=SPLITS,
        default="all",
        help="GSM8K/SVAMP: 'test' = only the questions training/ holds out (eval.split), "
        "'train' = the others; default all",
    )
    run.add_argument(
        "--method",
        choices=("lumos", *METHODS),
        default="lumos",
        help="'lumos' (default): the agent through the gateway; 'fewshot-cot' / 'direct': the "
        "base model alone, few-shot prompted, through --model-url (maths benchmarks)",
    )
    run.add_argument(
        "--model-url",
        default=os.environ.get("LUMOS_EVAL_MODEL_URL", "http://127.0.0.1:8001"),
        help="--method fewshot-cot/direct: OpenAI-compatible server (env LUMOS_EVAL_MODEL_URL)",
    )
    run.add_argument(
        "--model", default="lumos-base", help="--method fewshot-cot/direct: served model name"
    )
    run.add_argument(
        "--data-dir",
        type=Path,
        default=eval_data_dir(),
        help="folder with <benchmark>/dev.jsonl (default: $LUMOS_EVAL_DATA_DIR, else the "
        "repository's data/eval: %(default)s)",
    )
    run.add_argument(
        "--mind2web-data", type=Path, help="Mind2Web tasks (see eval/datasets.py for formats)"
    )
    run.add_argument("--webshop-data", type=Path, help="WebShop instructions, JSONL")
    run.add_argument(
        "--out-dir", type=Path, default=Path("eval_runs"), help="predictions and report"
    )
    run.add_argument(
        "--max-steps",
        type=_step_budget,
        default="original",
        help="subgoal limit per run: 'original' (the original harness's loop length; "
        "default), 'gateway' (send none) or a number",
    )
    run.add_argument("--timeout", type=float, default=900.0, help="seconds one run may take")
    run.add_argument(
        "--no-retry-errors",
        action="store_true",
        help="on resume, keep failed runs as they are instead of running them again",
    )
    run.add_argument(
        "--rel-tol",
        type=float,
        default=DEFAULT_REL_TOL,
        help="numeric accuracy: relative tolerance",
    )
    run.add_argument(
        "--abs-tol",
        type=float,
        default=DEFAULT_ABS_TOL,
        help="numeric accuracy: absolute tolerance",
    )
    run.add_argument(
        "--judge-url",
        default=os.environ.get("LUMOS_JUDGE_URL"),
        help="OpenAI-compatible base URL incl. /v1 for LLM-judged HotpotQA accuracy "
        "(env LUMOS_JUDGE_URL); unset: no judge",
    )
    run.add_argument("--judge-model", default=os.environ.get("LUMOS_JUDGE_MODEL", "gpt-4"))
    run.add_argument("--judge-api", choices=["chat", "completions"], default="chat")
    run.add_argument(
        "--judge-api-key",
        default=os.environ.get("LUMOS_JUDGE_API_KEY"),
        help="bearer key of the judge (env LUMOS_JUDGE_API_KEY)",
    )
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.set_defaults(func=_run_command)

    report = sub.add_parser(
        "report", help="rebuild report.md and report.png from the predictions files"
    )
    report.add_argument("--out-dir", type=Path, default=Path("eval_runs"))
    report.set_defaults(func=_report_command)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``eval`` to a parent CLI (``lumos``); its sub-commands set ``func``."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "eval",
        help="evaluate benchmarks through the gateway",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _configure(parser)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lumos eval", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    _configure(parser)
    return parser


def _collect(out_dir: Path) -> list[tuple[str, list[dict[str, Any]]]]:
    """(benchmark, records) for every predictions file in `out_dir`, in benchmark order."""
    groups = []
    for path in sorted(out_dir.glob(f"*{PREDICTIONS_SUFFIX}")):
        benchmark = path.name.split(".", 1)[0]
        if benchmark not in BENCHMARKS:
            continue
        records = list(read_predictions(path).values())
        if records:
            groups.append((benchmark, records))
    order = list(BENCHMARKS)
    return sorted(groups, key=lambda g: order.index(g[0]))


def _write_report(out_dir: Path, console: Console) -> bool:
    """Write the report of every predictions file in `out_dir`; False when there are none."""
    groups = _collect(out_dir)
    if not groups:
        print(f"lumos eval: no *{PREDICTIONS_SUFFIX} files in {out_dir}", file=sys.stderr)
        return False
    md, png, _ = write_report(groups, out_dir)
    console.print(
        f"report: {md}" + (f", {png}" if png else " (no PNG: matplotlib is not installed)")
    )
    return True


async def _run_all(args: argparse.Namespace, console: Console) -> int:
    # a baseline's predictions and report rows are labelled with its name
    label = args.formulation if args.method == "lumos" else args.method
    options = EvalOptions(
        formulation=label,
        concurrency=args.concurrency,
        step_budget=args.max_steps,
        retry_errors=not args.no_retry_errors,
        tolerance=NumericTolerance(rel=args.rel_tol, abs=args.abs_tol),
        show_progress=not args.no_progress,
    )
    target = GatewayTarget(
        url=args.gateway, api_key=args.api_key, formulation=args.formulation, timeout_s=args.timeout
    )
    limits = httpx.Limits(max_connections=max(args.concurrency, 1) + 4)
    attempted = failed = 0
    first_error: str | None = None
    async with httpx.AsyncClient(
        limits=limits, timeout=httpx.Timeout(args.timeout, connect=10.0)
    ) as client:
        agent: TaskRunner
        if args.method == "lumos":
            agent = AgentClient(target, client)
        else:
            not_maths = [b for b in args.benchmarks if get_benchmark(b).domain != "maths"]
            if not_maths:
                raise DatasetError(
                    f"--method {args.method} is a maths baseline; {', '.join(not_maths)} "
                    "is not maths (use --method lumos)"
                )
            agent = BaselineClient(
                args.method,
                args.model_url,
                args.model,
                exemplars=exemplars(args.data_dir),
                client=client,
                timeout_s=args.timeout,
            )
        judge = None
        if args.judge_url:
            judge = LLMJudge(
                JudgeConfig(
                    args.judge_url,
                    model=args.judge_model,
                    api=args.judge_api,
                    api_key=args.judge_api_key,
                ),
                client,
            )
        for name in args.benchmarks:
            benchmark = get_benchmark(name)
            path = {"mind2web": args.mind2web_data, "webshop": args.webshop_data}.get(name)
            questions = load_questions(
                benchmark, data_dir=args.data_dir, path=path, limit=args.limit, split=args.split
            )
            out = predictions_path(args.out_dir, name, label)
            result = await run_benchmark(
                benchmark,
                questions,
                out,
                agent=agent,
                options=options,
                judge=judge,
                console=console,
            )
            attempted += len(result.ran)
            failed += sum(r["error"] is not None for r in result.ran)
            first_error = first_error or next((r["error"] for r in result.ran if r["error"]), None)
            console.print(
                f"{name}: {len(questions)} questions, {len(result.ran)} run now, "
                f"{sum(r['error'] is not None for r in result.records)} failed overall -> {out}"
            )
    _write_report(args.out_dir, console)
    if attempted and failed == attempted:
        print(f"lumos eval: every run failed; the first: {first_error}", file=sys.stderr)
        return 1
    return 0


def _run_command(args: argparse.Namespace) -> int:
    console = Console(stderr=True)
    if args.concurrency < 1:
        print("lumos eval: --concurrency must be at least 1", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_run_all(args, console))
    except DatasetError as exc:
        print(f"lumos eval: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # Every finished question is already on disk (one line each, as it finishes).
        print(
            f"\nlumos eval: interrupted; answers so far are in {args.out_dir}/. "
            "Run the same command again to resume where it stopped.",
            file=sys.stderr,
        )
        return 130


def _report_command(args: argparse.Namespace) -> int:
    console = Console(stderr=True)
    if not args.out_dir.is_dir():
        console.print(
            f"lumos eval report: no folder {args.out_dir}; run `lumos eval run ...` first"
        )
        return 2
    return 0 if _write_report(args.out_dir, console) else 2


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))
