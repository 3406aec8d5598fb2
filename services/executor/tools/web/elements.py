"""The page-element model of the web tools: a page's interactive elements (from an HTML
snapshot or the live page), the actions' arguments, and how QUERY chooses the element.

Pure Python (BM25 ranking from `retrieve`): the offline mode needs nothing else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html.parser import HTMLParser

from ..base import ToolError
from ..retrieve import bm25_scores

_TEXT_INPUT_TYPES = {"", "text", "search", "email", "password", "tel", "url", "number", "date"}
_CLICKABLE_ROLES = {"button", "link", "checkbox", "radio", "tab", "menuitem", "option", "switch"}
_SPACE_RE = re.compile(r"\s+")


@dataclass
class PageElement:
    """One interactive element, as the ranking and the state summary see it."""

    index: int
    tag: str
    type: str = ""
    text: str = ""
    label: str = ""
    attrs: dict[str, str] = field(default_factory=dict)
    options: list[str] = field(default_factory=list)

    @property
    def role(self) -> str:
        return self.attrs.get("role", "")

    def is_typable(self) -> bool:
        if self.tag == "textarea" or self.attrs.get("contenteditable") in ("", "true"):
            return True
        return self.tag == "input" and self.type.lower() in _TEXT_INPUT_TYPES

    def is_selectable(self) -> bool:
        return self.tag == "select" or self.role in ("listbox", "combobox")

    def document(self) -> str:
        """The text BM25 ranks this element by."""
        keys = ("aria-label", "placeholder", "name", "id", "value", "title", "alt")
        parts = [self.text, self.label, *(self.attrs.get(k, "") for k in keys), *self.options]
        return " ".join(p for p in parts if p)

    def describe(self) -> str:
        """Compact one-line form, e.g. ``[input type=text name=q placeholder="Search"]``."""
        head = self.tag + (f" type={self.type}" if self.type else "")
        for key in ("name", "id", "role"):
            if self.attrs.get(key):
                head += f" {key}={self.attrs[key]}"
        for key in ("aria-label", "placeholder"):
            if self.attrs.get(key):
                head += f' {key}="{self.attrs[key]}"'
        out = f"[{head}]"
        label = self.text or self.label
        if label:
            out += f" {clip(label, 80)}"
        value = self.attrs.get("value", "")
        if value and self.tag in ("input", "textarea", "select"):
            out += f' value="{clip(value, 60)}"'
        if self.options:
            out += " options: " + " | ".join(clip(o, 30) for o in self.options[:12])
        return out


def clip(text: str, n: int) -> str:
    text = _SPACE_RE.sub(" ", text).strip()
    return text if len(text) <= n else text[: n - 1] + "…"


# -- arguments ------------------------------------------------------------------------------


@dataclass(frozen=True)
class WebArguments:
    env: str  # "Env" or a variable name
    query: str
    text: str | None = None


def parse_web_arguments(name: str, args: str) -> WebArguments:
    """``"Env, QUERY: the search box, TEXT: shoes"`` -> its parts (as the original split them)."""
    at = args.find(", QUERY:")
    if at < 0:
        at = args.lower().find(", query:")
    if at < 0:
        raise ToolError(
            f"expected '{name}(Env, QUERY: ...{', TEXT: ...' if name != 'CLICK' else ''})', "
            f"got {args!r}"
        )
    env = args[:at].strip()
    rest = args[at + len(", QUERY:") :]
    if name == "CLICK":
        return WebArguments(env, rest.strip())
    text_at = rest.rfind(", TEXT:")
    if text_at < 0:
        text_at = rest.lower().rfind(", text:")
    if text_at < 0:
        raise ToolError(f"expected '{name}(Env, QUERY: ..., TEXT: ...)', got {args!r}")
    return WebArguments(env, rest[:text_at].strip(), rest[text_at + len(", TEXT:") :].strip())


# -- choosing the element ---------------------------------------------------------------------


def rank_elements(
    elements: list[PageElement], operation: str, query: str, text: str | None = None
) -> list[PageElement]:
    """Elements able to take `operation`, best match for the query first.

    TYPE prefers text inputs and SELECT prefers select boxes (any element when the page has
    none of that kind). Elements with no matching word are dropped unless they are the only
    candidate of the preferred kind.
    """
    if operation == "TYPE":
        preferred = [e for e in elements if e.is_typable()]
    elif operation == "SELECT":
        preferred = [e for e in elements if e.is_selectable()]
    else:
        preferred = list(elements)  # clicking into a text box is a valid step too
    candidates = preferred or elements
    if not candidates:
        return []
    ranking_query = query if operation != "SELECT" or not text else f"{query} {text}"
    scores = bm25_scores(ranking_query, [e.document() for e in candidates])
    if preferred and len(preferred) == 1 and not any(scores):
        return preferred
    order = sorted(range(len(candidates)), key=lambda i: (-scores[i], i))
    return [candidates[i] for i in order if scores[i] > 0]


def choose_element(
    elements: list[PageElement], operation: str, query: str, text: str | None = None
) -> PageElement:
    ranked = rank_elements(elements, operation, query, text)
    if not ranked:
        listed = "; ".join(e.describe() for e in elements[:15]) or "none"
        raise ToolError(
            f"{operation}: no element on the page matches {query!r}; the page has: {listed}"
        )
    return ranked[0]


def best_option(options: list[str], text: str) -> str:
    """The option whose label equals `text` (ignoring case), else the best BM25 match."""
    for option in options:
        if option.strip().lower() == text.strip().lower():
            return option
    scores = bm25_scores(text, options)
    if not options or not any(scores):
        raise ToolError(f"SELECT: no option like {text!r}; the options are: {' | '.join(options)}")
    return options[max(range(len(options)), key=lambda i: (scores[i], -i))]


# -- offline mode: parse a snapshot --------------------------------------------------------------


class _ElementCollector(HTMLParser):
    """Interactive elements of an HTML snapshot, with their text, labels and select options."""

    _VOID = {"input", "img", "br", "hr", "meta", "link"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[PageElement] = []
        self._open: list[tuple[str, PageElement | None]] = []  # (tag, element it opened)
        self._labels: dict[str, str] = {}  # label's "for" -> its text
        self.host_label: tuple[str, list[str]] | None = None
        self._option: list[str] | None = None
        self._skip = 0  # inside <script>/<style>

    @staticmethod
    def _interactive(tag: str, attrs: dict[str, str]) -> bool:
        return (
            tag in ("a", "button", "select", "textarea")
            or (tag == "input" and attrs.get("type", "").lower() != "hidden")
            or attrs.get("role", "") in _CLICKABLE_ROLES | {"listbox", "combobox"}
            or "onclick" in attrs
        )

    def handle_starttag(self, tag: str, attrs_list: list[tuple[str, str | None]]) -> None:
        attrs = {k: v or "" for k, v in attrs_list}
        if tag in ("script", "style"):
            self._skip += 1
            return
        if tag == "label":
            self.host_label = (attrs.get("for", ""), [])
        if tag == "option":
            self._option = []
        element = None
        if self._interactive(tag, attrs):
            element = PageElement(
                index=len(self.elements), tag=tag, type=attrs.get("type", ""), attrs=attrs
            )
            self.elements.append(element)
        if tag not in self._VOID:
            self._open.append((tag, element))

    def handle_startendtag(self, tag: str, attrs_list: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs_list)
        if tag not in self._VOID and self._open and self._open[-1][0] == tag:
            self._open.pop()

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self._skip = max(0, self._skip - 1)
            return
        if tag == "option" and self._option is not None:
            select = next((e for t, e in reversed(self._open) if t == "select" and e), None)
            if select is not None:
                select.options.append(clip(" ".join(self._option), 80))
            self._option = None
        if tag == "label" and self.host_label is not None:
            target, words = self.host_label
            if target:
                self._labels[target] = clip(" ".join(words), 80)
            self.host_label = None
        for i in range(len(self._open) - 1, -1, -1):
            if self._open[i][0] == tag:
                del self._open[i:]
                break

    def handle_data(self, data: str) -> None:
        if self._skip or not data.strip():
            return
        if self._option is not None:
            self._option.append(data.strip())
            return
        if self.host_label is not None:
            self.host_label[1].append(data.strip())
        for tag, element in self._open:
            if element is not None and tag != "select":
                element.text = clip(f"{element.text} {data}", 200)

    def result(self) -> list[PageElement]:
        for element in self.elements:
            label = self._labels.get(element.attrs.get("id", ""))
            if label and not element.label:
                element.label = label
        return self.elements


def parse_html_elements(html: str) -> list[PageElement]:
    """The interactive elements of an HTML page snapshot, in document order."""
    collector = _ElementCollector()
    collector.feed(html)
    collector.close()
    return collector.result()
