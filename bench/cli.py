"""`lumos bench` / `python -m bench`: measure the serving stack on this machine.

    lumos bench overhead        # our code's cost per step, instant scripted models
    lumos bench prefix-cache    # vLLM prefix-cache hit share per step (tiny model)
    lumos bench concurrency     # runs/s and tokens/s at 1..16 concurrent runs (tiny model)
    lumos bench original        # the original HF-generate evaluation vs our stack
    lumos bench soak            # steady load through `make run`'s stack, minute by minute

Each starts the servers it needs and stops them; results go to --out-dir (JSON + PNG).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def _levels(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected numbers separated by commas, got {text!r}"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("concurrency levels must be at least 1")
    return values


def _overhead(args: argparse.Namespace) -> int:
    from bench import overhead

    overhead.run(
        args.out_dir, concurrency=args.concurrency, runs=args.runs, profile_runs=args.profile_runs
    )
    return 0


def _prefix_cache(args: argparse.Namespace) -> int:
    from bench import prefix_cache

    prefix_cache.run(args.out_dir, steps=args.steps)
    return 0


def _concurrency(args: argparse.Namespace) -> int:
    from bench import concurrency

    concurrency.run(
        args.out_dir, levels=args.concurrency, max_steps=args.max_steps, waves=args.waves
    )
    return 0


def _original(args: argparse.Namespace) -> int:
    from bench import original

    original.run(
        args.out_dir,
        questions=args.questions,
        max_steps=args.max_steps,
        max_new_tokens=args.max_new_tokens,
    )
    return 0


def _soak(args: argparse.Namespace) -> int:
    from bench import soak

    report = soak.run(
        args.out_dir,
        minutes=args.minutes,
        concurrency=args.concurrency,
        model=args.model,
        adapters=args.adapters,
        sample_s=args.sample_s,
        max_steps=args.max_steps,
    )
    return 0 if report.totals["runs"] > 0 else 1


def _configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bench_command", required=True)

    def add(name: str, help_: str, func: Any) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_)
        p.add_argument("--out-dir", type=Path, default=Path("bench_results"))
        p.set_defaults(func=func)
        return p

    p = add("overhead", "gateway+executor+Redis cost per step, instant scripted models", _overhead)
    p.add_argument("--concurrency", type=_levels, default=[1, 4, 16], help="e.g. 1,4,16")
    p.add_argument("--runs", type=int, default=200, help="runs per concurrency level")
    p.add_argument("--profile-runs", type=int, default=40, help="runs profiled (0: no profile)")

    p = add("prefix-cache", "vLLM prefix-cache hit share per step (tiny model)", _prefix_cache)
    p.add_argument("--steps", type=int, default=4, help="plan/ground iterations")

    p = add("concurrency", "throughput and latency vs concurrent runs (tiny model)", _concurrency)
    p.add_argument("--concurrency", type=_levels, default=[1, 2, 4, 8, 16])
    p.add_argument("--max-steps", type=int, default=2)
    p.add_argument("--waves", type=int, default=2, help="runs per level = waves x level")

    p = add("soak", "steady load through make run's stack: failures, latency, memory", _soak)
    p.add_argument("--minutes", type=float, default=10.0, help="how long the load lasts")
    p.add_argument("--concurrency", type=int, default=2, help="clients, each one run at a time")
    p.add_argument("--model", type=Path, default=Path(".cache/models/gemma-3-270m"))
    p.add_argument("--adapters", default="models/lumos-mini", help="LoRA adapters, or none")
    p.add_argument("--sample-s", type=float, default=10.0, help="memory sampling period")
    p.add_argument("--max-steps", type=int, help="per run (default: the gateway's)")

    p = add("original", "HF generate with model reloads vs our stack (tiny model)", _original)
    p.add_argument("--questions", type=int, default=8, help="first N of gsm8k dev")
    p.add_argument("--max-steps", type=int, default=2, help="plan/ground iterations, both sides")
    p.add_argument(
        "--max-new-tokens", type=int, default=512, help="both sides (the gateway sends 512)"
    )


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add `bench` to the `lumos` command's sub-commands."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "bench",
        help="benchmarks of the serving stack",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _configure(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _configure(parser)
    args = parser.parse_args(argv)
    return int(args.func(args))
