"""The web-agent tools CLICK, TYPE and SELECT, offline on a snapshot or live in a browser."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lumos.actions import Action

from ..base import Tool, ToolContext, ToolError
from .elements import WebArguments, choose_element, parse_html_elements, parse_web_arguments
from .sessions import BrowserSessions

if TYPE_CHECKING:
    from ...settings import ExecutorSettings

_VARIABLE_RE = re.compile(r"^R\d+$")


class _WebAction(Tool):
    operation: str
    timeout_s = 30.0

    def __init__(self, sessions: BrowserSessions | None = None) -> None:
        self.sessions = sessions

    def _snapshot(
        self, args: WebArguments, variables: dict[str, Any], ctx: ToolContext
    ) -> str | None:
        if _VARIABLE_RE.match(args.env):
            value = variables.get(args.env)
            if isinstance(value, str) and "<" in value and ">" in value and "\nURL: " not in value:
                return value
        html = ctx.extras.get("html")
        return html if isinstance(html, str) else None

    async def run(
        self, action: Action, variables: dict[str, Any], ctx: ToolContext
    ) -> tuple[Any, ...]:
        args = parse_web_arguments(self.operation, action.args)
        if not args.query:
            raise ToolError(f"{self.operation}: QUERY is empty")
        if _VARIABLE_RE.match(args.env) and args.env not in variables:
            raise ToolError(f"{self.operation}: unknown variable {args.env}; bind it first")
        html = self._snapshot(args, variables, ctx)
        if html is not None:
            element = choose_element(
                parse_html_elements(html), self.operation, args.query, args.text
            )
            return (
                {
                    "tag": element.describe(),
                    "operation": self.operation,
                    "text": args.query if self.operation == "CLICK" else args.text,
                    "backend_node_id": element.attrs.get("backend_node_id"),
                },
            )
        if self.sessions is None:
            raise ToolError(
                f"{self.operation}: no browser configured and no HTML snapshot in the request"
            )
        url = ctx.extras.get("url")
        state = await self.sessions.act(
            ctx.run_id or "default", url if isinstance(url, str) else None, self.operation, args
        )
        return (state,)


class WebClick(_WebAction):
    name = "CLICK"
    operation = "CLICK"
    signature = "CLICK(Env, Query)"
    description = "Click the relevant html region in Env according to Query"


class WebType(_WebAction):
    name = "TYPE"
    operation = "TYPE"
    signature = "TYPE(Env, Query, Text)"
    description = "Type Text into the relevant html region in Env according to Query"


class WebSelect(_WebAction):
    name = "SELECT"
    operation = "SELECT"
    signature = "SELECT(Env, Query, Text)"
    description = "Select the value Text of the relevant selection box in Env according to Query"


def build_tools(settings: ExecutorSettings) -> list[Tool]:
    """CLICK, TYPE and SELECT; live actions when the browser exists, else offline only."""
    sessions = None
    if Path(settings.browser_path).exists():
        sessions = BrowserSessions(settings.browser_path, allowed_hosts=settings.web_allowed_hosts)
    return [cls(sessions) for cls in (WebClick, WebType, WebSelect)]
