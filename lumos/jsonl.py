"""The one JSONL reader: each non-blank line's JSON value, checked by the caller's `parse`,
with its line number.

What a bad line does (not JSON, or refused by `parse` with a `ValueError`) is the caller's
policy: ``raise`` a `JsonlError` naming the file, the line and why; ``skip`` it (a file
another process appends to may end in a torn line); or ``yield`` the error in its place and
go on (a caller that reports every bad line).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal, TypeVar, overload

T = TypeVar("T")
BadLines = Literal["raise", "skip", "yield"]


class JsonlError(ValueError):
    """A line of a JSONL file that is not what its reader expects."""

    def __init__(self, path: Path, line: int, reason: str) -> None:
        super().__init__(f"{path}:{line}: {reason}")
        self.path = path
        self.line = line
        self.reason = reason


def json_value(value: Any) -> Any:
    """Any JSON value, as it is."""
    return value


def json_object(value: Any) -> dict[str, Any]:
    """A JSON object; anything else is a bad line."""
    if not isinstance(value, dict):
        raise ValueError(f"expected a JSON object, got {type(value).__name__}")
    return value


@overload
def read_jsonl(
    path: Path,
    parse: Callable[[Any], T],
    *,
    bad_lines: Literal["raise", "skip"] = "raise",
    expected: str | None = None,
) -> Iterator[tuple[int, T]]: ...


@overload
def read_jsonl(
    path: Path,
    parse: Callable[[Any], T],
    *,
    bad_lines: Literal["yield"],
    expected: str | None = None,
) -> Iterator[tuple[int, T | JsonlError]]: ...


def read_jsonl(
    path: Path,
    parse: Callable[[Any], T],
    *,
    bad_lines: BadLines = "raise",
    expected: str | None = None,
) -> Iterator[tuple[int, T | JsonlError]]:
    """(line number, `parse(value)`) for each non-blank line of `path`, in order.

    `expected` names what a line should be (``"an annotation"``); a bad line's reason then
    reads ``not an annotation (why)``.
    """
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                value = parse(json.loads(line))
            except ValueError as exc:  # JSON, pydantic's validation and the parser's own
                if bad_lines == "skip":
                    continue
                why = f"not JSON ({exc.msg})" if isinstance(exc, json.JSONDecodeError) else str(exc)
                error = JsonlError(path, number, f"not {expected} ({why})" if expected else why)
                if bad_lines == "raise":
                    raise error from exc
                yield number, error
                continue
            yield number, value
