"""`lumos adapters`: load and unload LoRA adapters in a running deployment, show its routes.

A thin client of the gateway's operator endpoints (`POST /agent/adapters`,
`DELETE /agent/adapters/{name}`, `GET /agent/routes`): the gateway checks the adapter,
loads it into every vLLM server of the pool and routes runs to it, for all its replicas.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import httpx

TIMEOUT_S = 300.0  # a load waits for every replica to read the weights


class GatewayRefused(Exception):
    pass


def _call(args: argparse.Namespace, method: str, path: str, **kwargs: Any) -> Any:
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    url = args.url.rstrip("/") + path
    try:
        response = httpx.request(method, url, headers=headers, timeout=TIMEOUT_S, **kwargs)
    except httpx.HTTPError as exc:
        raise GatewayRefused(
            f"cannot reach the gateway at {args.url} ({type(exc).__name__}: {exc}); is it "
            "running? (--url or LUMOS_GATEWAY_URL)"
        ) from None
    if response.status_code >= 400:
        try:
            body = response.json()
            said = f"{body.get('detail')} ({body.get('code')})"
        except ValueError:
            said = response.text[:500]
        raise GatewayRefused(f"{method} {path}: {response.status_code}: {said}")
    return response.json()


def _load(args: argparse.Namespace) -> int:
    path = args.path
    if not Path(path).is_absolute() and Path(path).exists():
        path = str(Path(path).resolve())  # the servers do not share our working directory
    body: dict[str, Any] = {
        "name": args.name,
        "path": path,
        "pool": args.pool,
        "routes": args.route,
        "replace": args.replace,
    }
    if args.max_tokens is not None:
        body["sampling"] = {"max_tokens": args.max_tokens}
    out = _call(args, "POST", "/agent/adapters", json=body)
    print(f"loaded {out['name']} into {', '.join(out['servers'])} (pool {out['pool']})")
    for key in out["routes"]:
        print(f"  route {key} -> {out['name']}")
    if not out["routes"]:
        print("  no route sends runs to it yet: load again with --route domain/formulation/module")
    return 0


def _unload(args: argparse.Namespace) -> int:
    out = _call(args, "DELETE", f"/agent/adapters/{args.name}", params={"pool": args.pool})
    print(f"unloaded {out['name']} from {', '.join(out['servers'])} (pool {out['pool']})")
    for key in out["routes"]:
        print(f"  route {key} removed")
    return 0


def _routes(args: argparse.Namespace) -> int:
    table = _call(args, "GET", "/agent/routes")
    if args.json:
        json.dump(table, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    print(f"routes of {table['source']}")
    for route in table["routes"]:
        extra = " (run time)" if route["runtime"] else ""
        extra += "" if route.get("trained", True) else " (not trained for it)"
        print(f"  {route['key']:<32} -> {route['model']} @ {route['pool']}{extra}")
    if table.get("last_error"):
        print(f"the file's last change was not taken: {table['last_error']}")
    return 0


def _run(func: Any) -> Any:
    def wrapped(args: argparse.Namespace) -> int:
        try:
            return int(func(args))
        except GatewayRefused as exc:
            print(f"lumos adapters: {exc}", file=sys.stderr)
            return 2

    return wrapped


def add_parser(sub: Any) -> None:
    p = sub.add_parser("adapters", help="load and unload LoRA adapters; show the route table")
    p.add_argument("--url", default=os.environ.get("LUMOS_GATEWAY_URL", "http://127.0.0.1:8000"))
    p.add_argument("--api-key", default=os.environ.get("LUMOS_API_KEY"), help="an operator key")
    commands = p.add_subparsers(dest="adapters_command", required=True)

    load = commands.add_parser("load", help="load an adapter into a pool and route runs to it")
    load.add_argument("name", help="the served name runs will ask for")
    load.add_argument("path", help="the adapter's folder, as the model servers see it")
    load.add_argument("--pool", required=True, help="a pool of the route file")
    load.add_argument(
        "--route",
        action="append",
        default=[],
        metavar="DOMAIN/FORMULATION/MODULE",
        help="send these runs to it (repeatable; * for any), e.g. maths/onetime/planner",
    )
    load.add_argument("--replace", action="store_true", help="new weights under a served name")
    load.add_argument("--max-tokens", type=int, help="the routes' max_tokens (default 512)")
    load.set_defaults(func=_run(_load))

    unload = commands.add_parser("unload", help="stop routing to an adapter and unload it")
    unload.add_argument("name")
    unload.add_argument("--pool", required=True)
    unload.set_defaults(func=_run(_unload))

    routes = commands.add_parser("routes", help="the route table the gateway serves")
    routes.add_argument("--json", action="store_true")
    routes.set_defaults(func=_run(_routes))
