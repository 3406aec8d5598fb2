"""The Lumos action grammar: parse grounder output into typed actions and format them back.

Grounder output is model-written and therefore hostile: the parser never evaluates anything,
never raises anything but `ActionParseError`, and reports the offending span.

Syntax (from the Lumos unified format)::

    R1 = KnowledgeQuery(Julius Caesar); R2 = ParagraphRetrieve(R1, Query: How many kids?)
    R3, R4 = SolveEquation(R2)
    R5 = QA([R2, R3], Question: ...)

Actions are joined by ``"; "``; each has one or more result variables, a tool name and a
raw argument string whose parentheses balance. Arguments stay raw text: each tool reads
its own argument shape (see `split_arguments`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

VARIABLE_RE = re.compile(r"\bR(\d+)\b")
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OUTPUT_RE = re.compile(r"R\d+")

# A hard ceiling on what the parser will look at: grounder completions are capped at 512
# tokens, so anything far larger is not a grounding but an attack or a bug.
MAX_ACTIONS_TEXT = 64_000
MAX_ACTIONS = 64


class ActionParseError(ValueError):
    """Grounder output that is not a well-formed action list.

    `start`/`end` delimit the offending span of `text` so callers can show it.
    """

    def __init__(self, message: str, text: str, start: int, end: int) -> None:
        self.reason = message
        self.text = text
        self.start = start
        self.end = end
        snippet = text[start:end] if end > start else text[start : start + 40]
        super().__init__(f"{message} at characters {start}-{end}: {snippet!r}")


@dataclass(frozen=True)
class Action:
    """One grounded action: ``outputs = name(args)``."""

    outputs: tuple[str, ...]
    name: str
    args: str

    @property
    def references(self) -> tuple[str, ...]:
        """Variables (``R1``...) the arguments refer to, in order of first appearance."""
        seen: dict[str, None] = {}
        for m in VARIABLE_RE.finditer(self.args):
            seen.setdefault(m.group(0), None)
        return tuple(seen)

    def format(self) -> str:
        return f"{', '.join(self.outputs)} = {self.name}({self.args})"

    def __str__(self) -> str:
        return self.format()


@dataclass(frozen=True)
class ActionResult:
    """What executing one action produced: a value per output variable, or an error."""

    action: Action
    values: tuple[object, ...] = ()
    error: str | None = None
    elapsed_s: float = 0.0
    meta: dict[str, object] = field(default_factory=dict, compare=False)

    @property
    def ok(self) -> bool:
        return self.error is None

    def bindings(self) -> dict[str, object]:
        """Variable -> value for the outputs this result binds (none on error)."""
        if self.error is not None:
            return {}
        return dict(zip(self.action.outputs, self.values, strict=False))


def format_actions(actions: Iterable[Action]) -> str:
    return "; ".join(a.format() for a in actions)


def _skip_spaces(text: str, i: int) -> int:
    while i < len(text) and text[i] == " ":
        i += 1
    return i


def _parse_one(text: str, i: int) -> tuple[Action, int]:
    """Parse one action starting at `i`; return it and the index just past its ')'."""
    start = i
    outputs: list[str] = []
    while True:
        m = _OUTPUT_RE.match(text, i)
        if not m:
            raise ActionParseError(
                "expected a result variable like R1", text, i, min(len(text), i + 20)
            )
        outputs.append(m.group(0))
        i = _skip_spaces(text, m.end())
        if i < len(text) and text[i] == ",":
            i = _skip_spaces(text, i + 1)
            continue
        break
    if i >= len(text) or text[i] != "=":
        raise ActionParseError("expected '=' after the result variables", text, start, i + 1)
    i = _skip_spaces(text, i + 1)
    m = _NAME_RE.match(text, i)
    if not m:
        raise ActionParseError("expected a tool name after '='", text, i, min(len(text), i + 20))
    name = m.group(0)
    i = m.end()
    if i >= len(text) or text[i] != "(":
        raise ActionParseError(f"expected '(' after tool name {name!r}", text, start, i + 1)
    depth = 0
    j = i
    while j < len(text):
        c = text[j]
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                break
        j += 1
    else:
        raise ActionParseError(f"unbalanced parentheses in {name}(...)", text, start, len(text))
    return Action(tuple(outputs), name, text[i + 1 : j]), j + 1


def parse_actions(text: str, allowed: Sequence[str] | None = None) -> list[Action]:
    """Parse a grounder completion into actions.

    `allowed`, when given, is the domain's tool names; any other name is an error.
    """
    if not isinstance(text, str):
        raise ActionParseError("grounder output must be text", repr(text), 0, 0)
    if len(text) > MAX_ACTIONS_TEXT:
        raise ActionParseError(
            f"grounder output is {len(text)} characters; at most {MAX_ACTIONS_TEXT} are parsed",
            text[:80],
            0,
            80,
        )
    stripped = text.strip()
    if not stripped:
        raise ActionParseError("grounder output is empty", text, 0, 0)
    actions: list[Action] = []
    i = 0
    while True:
        i = _skip_spaces(stripped, i)
        action, i = _parse_one(stripped, i)
        if allowed is not None and action.name not in allowed:
            at = stripped.find(action.name + "(")
            raise ActionParseError(
                f"unknown action {action.name!r}; expected one of {', '.join(allowed)}",
                stripped,
                at,
                at + len(action.name),
            )
        actions.append(action)
        if len(actions) > MAX_ACTIONS:
            raise ActionParseError(f"more than {MAX_ACTIONS} actions", stripped, i, i)
        rest = stripped[i:]
        if not rest.strip() or rest.strip() == ".":
            # Lumos' own WebShop examples end their action list with a full stop.
            return actions
        if rest.startswith(";"):
            i += 1
            if not stripped[i:].strip():
                return actions  # a trailing ';' is harmless
            continue
        raise ActionParseError(
            "expected '; ' between actions", stripped, i, min(len(stripped), i + 20)
        )


def complete_actions(text: str, allowed: Sequence[str] | None = None) -> tuple[list[Action], str]:
    """The whole actions a grounding starts with, and the text they span.

    For a completion cut by the token limit in the middle of an action
    (``R1 = KnowledgeQuery(Paris); R2 = QA([R1], Question: Wh``): the actions before the
    cut are complete and runnable (here ``R1``), the cut one is not. Parsing stops at the
    first action that is not whole, or whose tool is not in `allowed`; nothing raises.
    """
    stripped = text.strip()[:MAX_ACTIONS_TEXT]
    actions: list[Action] = []
    i = end = 0
    while len(actions) < MAX_ACTIONS:
        i = _skip_spaces(stripped, i)
        try:
            action, j = _parse_one(stripped, i)
        except ActionParseError:
            break
        if allowed is not None and action.name not in allowed:
            break
        actions.append(action)
        end = j
        if not stripped.startswith(";", j):
            break
        i = j + 1
    return actions, stripped[:end]


def split_arguments(args: str) -> list[str]:
    """Split a raw argument string on top-level commas (outside (), [] and {}).

    ``"R1, Query: who?"`` -> ``["R1", "Query: who?"]``. Each part is stripped.
    """
    parts: list[str] = []
    depth = 0
    buf: list[str] = []
    for c in args:
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth = max(0, depth - 1)
        if c == "," and depth == 0:
            parts.append("".join(buf).strip())
            buf = []
        else:
            buf.append(c)
    parts.append("".join(buf).strip())
    return parts


def substitute_variables(text: str, variables: dict[str, object], wrap: str = "{}") -> str:
    """Replace each ``R<n>`` in `text` by its value, formatted through `wrap`.

    Whole-word replacement, so ``R1`` never clobbers ``R12``. Unknown variables raise
    `KeyError` with the variable's name.
    """

    def repl(m: re.Match[str]) -> str:
        name = m.group(0)
        if name not in variables:
            raise KeyError(name)
        return wrap.format(variables[name])

    return VARIABLE_RE.sub(repl, text)


def action_regex(tool_names: Sequence[str], *, prefilled: bool = False) -> str:
    """A regular expression that accepts exactly well-formed action lists of these tools.

    Used for vLLM structured outputs so a grounder can only emit parseable actions. The
    argument body allows one level of nested parentheses/brackets (formulas like
    ``(3+4)*2`` and lists like ``[R1, R2]``) and no newline (Lumos stops at the newline).

    Every repetition is bounded, and bounded on single characters: measured on vLLM 0.32
    (xgrammar backend), a ``{1,400}`` repetition of an alternation decoded ~20x slower per
    token, and an unbounded ``*`` inside a group let a weak model stay inside one bracket
    until ``max_tokens``, so its output was cut off and did not parse.

    `prefilled`: the prompt already ends with the first action's ``"R1 = "`` (WebShop's
    first grounding turn), so the output starts at the tool name.
    """
    names = "|".join(re.escape(n) for n in tool_names)
    text = r"[^()\[\]\n;]"
    group = rf"(?:\({text}{{0,200}}\)|\[{text}{{0,200}}\])"
    body = rf"{text}{{0,200}}(?:{group}{text}{{0,200}}){{0,4}}"
    outputs = r"R[1-9][0-9]?(?:, R[1-9][0-9]?){0,3}"
    call = rf"(?:{names})\({body}\)"
    one = rf"{outputs} = {call}"
    return rf"{call if prefilled else one}(?:; {one}){{0,9}}"
