"""The `lumos` command line: `lumos replay FILE.json`, `lumos run "task"`, `lumos eval ...`,
`lumos bench ...`, `lumos adapters ...`, `lumos runs export ...`; also `python -m lumos_cli`.

Each layer offers its sub-commands as ``add_parser(subparsers)`` (`eval.cli`, `bench.cli`,
`training.runs_export`, `lumos_cli.adapters`); this module, at the outer edge, gathers them,
so the core (`lumos/`) imports none of them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

from pydantic import ValidationError

from bench.cli import add_parser as add_bench_parser
from eval.cli import add_parser as add_eval_parser
from lumos_cli.adapters import add_parser as add_adapters_parser
from training.runs_export import add_parser as add_runs_parser


def _replay(args: argparse.Namespace) -> int:
    from lumos.replay import ReplayInput, replay

    try:
        raw = sys.stdin.read() if args.file == "-" else Path(args.file).read_text()
        spec = ReplayInput.model_validate_json(raw)
    except FileNotFoundError:
        print(f"lumos replay: no such file: {args.file}", file=sys.stderr)
        return 2
    except ValidationError as exc:
        print(
            f"lumos replay: {args.file} is not a replay spec "
            '(expected {"domain", "formulation", "task", "planner_outputs", '
            f'"grounder_outputs", "tool_results"}}):\n{exc}',
            file=sys.stderr,
        )
        return 2
    try:
        out = asyncio.run(replay(spec))
    except ValueError as exc:  # unknown domain and the like
        print(f"lumos replay: {exc}", file=sys.stderr)
        return 2
    payload = out.model_dump(mode="json", exclude={"events"} if not args.events else set())
    json.dump(payload, sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")
    return 0


def _run(args: argparse.Namespace) -> int:
    from lumos.client import GatewayError, run_task

    try:
        return run_task(
            args.task,
            domain=args.domain,
            formulation=args.formulation,
            url=args.url,
            api_key=args.api_key,
            max_steps=args.max_steps,
        )
    except GatewayError as exc:
        print(f"lumos run: {exc}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lumos", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("replay", help="run the loop against a recorded run; print its prompts")
    p.add_argument("file", help="replay spec (JSON), or - for standard input")
    p.add_argument("--events", action="store_true", help="also print the run's events")
    p.set_defaults(func=_replay)

    p = sub.add_parser("run", help="send a task to a running gateway and stream its steps")
    p.add_argument("task")
    p.add_argument("--domain", required=True, help="complex_qa, maths, web_agent or webshop")
    p.add_argument("--formulation", default="iterative", choices=["iterative", "onetime"])
    p.add_argument("--url", default=os.environ.get("LUMOS_GATEWAY_URL", "http://127.0.0.1:8000"))
    p.add_argument("--api-key", default=os.environ.get("LUMOS_API_KEY"))
    p.add_argument("--max-steps", type=int)
    p.set_defaults(func=_run)

    add_eval_parser(sub)
    add_bench_parser(sub)
    add_adapters_parser(sub)
    add_runs_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
