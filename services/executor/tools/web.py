"""Web-agent tools CLICK, TYPE and SELECT: act on the page element that best matches QUERY.

Two modes:

- **live**: a headless Chromium (Debian's, driven by Playwright; never a downloaded one)
  with one browser context per run id. The element is chosen by ranking the page's visible
  interactive elements against QUERY (and TEXT for SELECT) with BM25 over their text,
  label, aria-label, placeholder, name, id, value and title; the result is the page's new
  state (title, URL, some visible text, the interactive elements) for the planner to read.
  A run's page opens at ``ctx.extras["url"]`` (or the tools' start URL) on its first action.
  Sessions close after `idle_timeout_s` without actions, or through `BrowserSessions.close`.
  The browser loads only what the allow-list (``LUMOS_EXECUTOR_WEB_ALLOWED_HOSTS``,
  `WebAllowList`) allows, checked on every request and redirect hop (`_NetworkGuard`):
  model-written actions are hostile input, and a page they reach may lead anywhere.
- **offline** (Mind2Web style): when ``ctx.extras["html"]`` holds a page snapshot, or the
  first argument is a variable bound to HTML, the element is chosen the same way from the
  parsed snapshot and the result is ``{"tag", "operation", "text", "backend_node_id"}``
  without any browser, like the original's ``{"tag", "text"}`` step prediction.

The original Lumos evaluation ranked Mind2Web's candidate elements with a cross-encoder
(MindAct's candidate generator); the lexical ranking here needs no model.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
import socket
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from lumos.actions import Action

from .base import Tool, ToolContext, ToolError
from .retrieve import bm25_scores

if TYPE_CHECKING:
    from ..settings import ExecutorSettings

log = logging.getLogger(__name__)

DEFAULT_BROWSER_PATH = "/usr/bin/chromium"
# Launch flags for a sandboxless container with no network beyond the pages it is sent to.
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
MAX_LISTED_ELEMENTS = 40
MAX_PAGE_TEXT = 600

_TEXT_INPUT_TYPES = {"", "text", "search", "email", "password", "tel", "url", "number", "date"}
_CLICKABLE_ROLES = {"button", "link", "checkbox", "radio", "tab", "menuitem", "option", "switch"}
_SPACE_RE = re.compile(r"\s+")
_VARIABLE_RE = re.compile(r"^R\d+$")


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
            out += f" {_clip(label, 80)}"
        value = self.attrs.get("value", "")
        if value and self.tag in ("input", "textarea", "select"):
            out += f' value="{_clip(value, 60)}"'
        if self.options:
            out += " options: " + " | ".join(_clip(o, 30) for o in self.options[:12])
        return out


def _clip(text: str, n: int) -> str:
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
        self._label: tuple[str, list[str]] | None = None
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
            self._label = (attrs.get("for", ""), [])
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
                select.options.append(_clip(" ".join(self._option), 80))
            self._option = None
        if tag == "label" and self._label is not None:
            target, words = self._label
            if target:
                self._labels[target] = _clip(" ".join(words), 80)
            self._label = None
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
        if self._label is not None:
            self._label[1].append(data.strip())
        for tag, element in self._open:
            if element is not None and tag != "select":
                element.text = _clip(f"{element.text} {data}", 200)

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


# -- which URLs the live browser may load -----------------------------------------------------

ALLOWED_HOSTS_SETTING = "LUMOS_EXECUTOR_WEB_ALLOWED_HOSTS"
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
_LOCAL_ONLY_URLS = ("about:blank", "about:srcdoc")  # and data:/blob: URLs: nothing leaves
_HOSTNAME_RE = re.compile(
    r"^[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*$"
)
_LEGACY_IPV4_RE = re.compile(r"^[0-9a-fx.]+$")  # 0x7f.1, 2130706433: still an IPv4 address


def _canonical_host(host: str) -> str:
    """Lower case, no trailing dot, IP addresses in their standard form (as Chromium sends them)."""
    host = host.strip().lower().rstrip(".")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    if _LEGACY_IPV4_RE.match(host) and any(c.isdigit() for c in host):
        with contextlib.suppress(OSError):
            return socket.inet_ntoa(socket.inet_aton(host))
    if not host.isascii():
        with contextlib.suppress(UnicodeError):
            host = host.encode("idna").decode("ascii")
    return host


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def is_internal_address(address: str) -> bool:
    """True for loopback, private, link-local, unspecified and other non-public addresses."""
    ip = _ip(address)
    if ip is None:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


def _is_internal_host(host: str) -> bool:
    """An IP literal of a non-public address, or a name Chromium resolves to loopback itself."""
    return is_internal_address(host) or host == "localhost" or host.endswith(".localhost")


def _authority(url: str) -> tuple[str, int] | None:
    try:
        _, host, port = url_host_port(url)
    except ValueError:
        return None
    return host, port


def _label(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def url_host_port(url: str) -> tuple[str, str, int]:
    """``(scheme, host, port)`` of an absolute URL, the port defaulted from the scheme."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if not parts.hostname:
        raise ValueError(f"{url!r} has no host")
    port = parts.port or _DEFAULT_PORTS.get(scheme)
    if port is None:
        raise ValueError(f"{url!r} has no port")
    return scheme, _canonical_host(parts.hostname), port


@dataclass(frozen=True)
class HostRule:
    """One allow-list entry: ``*``, ``host``, ``host:port`` or ``*.domain[:port]``."""

    host: str  # "*" for any public host; the domain of a "*.domain" entry
    port: int | None = None  # None: any port
    subdomains: bool = False

    @classmethod
    def parse(cls, entry: str) -> HostRule:
        text = entry.strip().lower()
        if text == "*":
            return cls("*")
        if not text or any(c in text for c in "/@?#") or "://" in text:
            raise ValueError(
                f"web allow-list entry {entry!r}: give a host, host:port, *.domain or *, not a URL"
            )
        subdomains = text.startswith("*.")
        if subdomains:
            text = text[2:]
        port_text = ""
        if text.startswith("["):  # [IPv6] or [IPv6]:port
            host, _, rest = text[1:].partition("]")
            if rest and not rest.startswith(":"):
                raise ValueError(f"web allow-list entry {entry!r}: cannot read the port")
            port_text = rest[1:]
        elif text.count(":") == 1:
            host, port_text = text.split(":")
        else:  # a name, an IPv4 address or a bare IPv6 address
            host = text
        port: int | None = None
        if port_text or text.endswith(":"):
            if not port_text.isdigit() or not 0 < int(port_text) < 65536:
                raise ValueError(f"web allow-list entry {entry!r}: {port_text!r} is not a port")
            port = int(port_text)
        host = _canonical_host(host)
        if _ip(host) is None and not _HOSTNAME_RE.match(host):
            raise ValueError(f"web allow-list entry {entry!r}: {host!r} is not a host name")
        if subdomains and _ip(host) is not None:
            raise ValueError(f"web allow-list entry {entry!r}: *. needs a domain, not an address")
        return cls(host, port, subdomains)

    def matches(self, host: str, port: int) -> bool:
        if self.port is not None and self.port != port:
            return False
        if self.host == "*":
            return True
        if self.subdomains:
            return host.endswith("." + self.host)
        return host == self.host

    @property
    def exact(self) -> bool:
        return self.host != "*" and not self.subdomains


class WebAllowList:
    """Which URLs the live browser may load (``LUMOS_EXECUTOR_WEB_ALLOWED_HOSTS``).

    Only http(s) (and ws(s)) URLs reach the network, and only to a host an entry allows:
    ``example.com`` (any port), ``example.com:8080``, ``*.example.com`` (its subdomains) or
    ``*`` (any public host). A loopback, private or link-local address, and ``localhost``,
    is allowed only by an exact entry (``127.0.0.1:8080``), never by ``*`` or ``*.domain``;
    for a host allowed only by a wildcard, the addresses its name resolves to are checked the
    same way. No entries: nothing but ``about:blank`` and ``data:`` pages. Other schemes
    (``file:``, ``chrome:``, ``javascript:``, ...) are never opened.
    """

    def __init__(self, entries: Iterable[str] = ()) -> None:
        self.entries = tuple(e.strip() for e in entries if e.strip())
        self.rules = tuple(HostRule.parse(e) for e in self.entries)

    def __repr__(self) -> str:
        return f"WebAllowList({list(self.entries)!r})"

    def explicitly_allows(self, host: str, port: int) -> bool:
        return any(r.exact and r.matches(host, port) for r in self.rules)

    def host_refusal(self, host: str, port: int) -> str | None:
        """Why a connection to ``host:port`` is refused, or None when it is allowed."""
        host = _canonical_host(host)
        if self.explicitly_allows(host, port):
            return None
        label = _label(host, port)
        if _is_internal_host(host):
            return (
                f"host {label} is a loopback, private or link-local address, which only an "
                f"exact entry in {ALLOWED_HOSTS_SETTING} allows"
            )
        if any(not r.exact and r.matches(host, port) for r in self.rules):
            return None
        return f"host {label} is not in the web tools' allow-list ({ALLOWED_HOSTS_SETTING})"

    def address_refusal(self, host: str, port: int, addresses: Sequence[str]) -> str | None:
        """Why connecting to `host`, resolved to `addresses`, is refused (None: allowed)."""
        if self.explicitly_allows(_canonical_host(host), port):
            return None
        for address in addresses:
            if is_internal_address(address):
                return (
                    f"host {_label(_canonical_host(host), port)} resolves to {address}, a "
                    f"loopback, private or link-local address, which only an exact entry in "
                    f"{ALLOWED_HOSTS_SETTING} allows"
                )
        return None

    def url_refusal(self, url: str) -> str | None:
        """Why the browser may not load `url`, or None when it may."""
        scheme = url.split(":", 1)[0].lower() if ":" in url else ""
        if url in _LOCAL_ONLY_URLS or scheme in ("data", "blob"):
            return None
        if scheme not in _DEFAULT_PORTS:
            shown = f"{scheme}: URLs are" if scheme else f"{url!r} is not an absolute URL and"
            return f"{shown} never opened by the web tools (http and https only)"
        try:
            _, host, port = url_host_port(url)
        except ValueError as exc:
            return f"{exc}, so it is not opened"
        return self.host_refusal(host, port)


async def resolve_host(host: str, port: int) -> list[str]:
    """The addresses `host` resolves to (the guard proxy's DNS look-up)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


@dataclass(frozen=True)
class _Refusal:
    url: str
    reason: str
    navigation: bool = False  # a main-frame navigation the route handler refused
    by_proxy: bool = False  # refused by the guard proxy (e.g. a redirect's next hop)


_HOP_BY_HOP = ("connection:", "keep-alive:", "proxy-connection:", "proxy-authorization:")


def _closing_head(head: bytes, first_line: str | None = None) -> bytes:
    """An HTTP head with its hop-by-hop headers replaced by ``Connection: close``."""
    lines = head.decode("latin-1").split("\r\n")
    kept = [first_line or lines[0]]
    kept += [h for h in lines[1:] if h and not h.lower().startswith(_HOP_BY_HOP)]
    kept += ["Connection: close", "", ""]
    return "\r\n".join(kept).encode("latin-1")


class _Refused(Exception):
    """The guard proxy refuses a connection; the message says why."""


async def _answer(writer: asyncio.StreamWriter, status: str, text: str) -> None:
    """The proxy's own answer to the browser (the page shows it for http URLs)."""
    body = f"{text}\n".encode()
    writer.write(
        f"HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )
    await writer.drain()


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()


class _NetworkGuard:
    """Holds one browser context to the allow-list, at two places on the network path.

    - its **route handler** (``context.route("**/*")``) aborts every request the page makes
      to a refused URL (navigations, clicks, subresources, fetches) before it is sent;
      an aborted navigation leaves the page where it was;
    - its **proxy** (the context's HTTP proxy, on 127.0.0.1) sees every connection the
      context opens, including those Playwright's routes never see: the next hop of a
      redirect, WebSockets, preconnects. It refuses a host the allow-list refuses, resolves
      the others itself, refuses a name that a wildcard entry allows but that resolves to a
      private address, and connects to the address it checked.

    Each refusal is kept until the session reads it (`take`), to explain blocked actions.
    """

    def __init__(self, allow: WebAllowList, timeout_s: float) -> None:
        self.allow = allow
        self.timeout_s = timeout_s
        self.refusals: list[_Refusal] = []
        self.navigations: list[str] = []
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[Any] | None] = set()

    def take(self) -> list[_Refusal]:
        """The refusals since the last call (and forget the navigations seen meanwhile)."""
        refusals, self.refusals = self.refusals, []
        self.navigations = []
        return refusals

    def on_request(self, request: Any) -> None:
        """The page's ``request`` listener: remembers the main frame's navigation requests,
        the hops of redirects included (which the route handler never sees)."""
        with contextlib.suppress(Exception):
            if request.is_navigation_request() and request.frame.parent_frame is None:
                self.navigations.append(request.url)
                del self.navigations[:-20]

    def refused_navigation(self, page_url: str) -> _Refusal | None:
        """The refusal that stopped the main frame's navigation since the last `take`, if any.

        The route handler knows when it aborts a navigation; a redirect's next hop is
        refused by the proxy instead, which leaves the page on an error page (https) or on
        the proxy's 403 answer for the refused URL (http).
        """
        navigated = {_authority(url) for url in self.navigations}
        refusals = self.take()
        for refusal in refusals:
            if refusal.navigation:
                return refusal
        for refusal in reversed(refusals):
            if refusal.by_proxy and _authority(refusal.url) in navigated:
                if refusal.url == page_url or page_url.startswith("chrome-error:"):
                    return refusal
        return None

    def _refuse(self, refusal: _Refusal) -> None:
        log.info("web: refused %s: %s", refusal.url, refusal.reason)
        self.refusals.append(refusal)
        del self.refusals[:-50]  # a page may keep asking; the latest are enough to explain

    async def route(self, route: Any) -> None:
        """The context's route handler for ``**/*``."""
        request = route.request
        reason = self.allow.url_refusal(request.url)
        try:
            if reason is None:
                await route.continue_()
                return
            navigation = False
            with contextlib.suppress(Exception):  # a service worker's request has no frame
                navigation = request.is_navigation_request() and request.frame.parent_frame is None
            self._refuse(_Refusal(request.url, reason, navigation=navigation))
            await route.abort("aborted")  # "aborted": the page stays, no error page
        except Exception as exc:  # the page or the context closed meanwhile
            log.debug("web: route for %s ended: %s", request.url, exc)

    async def start(self) -> str:
        """Start the proxy; its address, for the context's ``proxy`` setting."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            for task in list(self._tasks):
                if task is not None:
                    task.cancel()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    async def _connect(
        self, host: str, port: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | str:
        """A connection to the checked address of `host`, or why there is none.

        Raises `_Refused` when `host` resolves to an address the allow-list refuses.
        """
        if _ip(host) is not None:
            addresses = [host]
        else:
            try:
                addresses = await asyncio.wait_for(resolve_host(host, port), self.timeout_s)
            except (TimeoutError, OSError) as exc:
                return f"cannot resolve {host}: {exc or type(exc).__name__}"
            refusal = self.allow.address_refusal(host, port, addresses)
            if refusal is not None:
                raise _Refused(refusal)
        error = f"cannot resolve {host}"
        for address in addresses:
            try:
                return await asyncio.wait_for(
                    asyncio.open_connection(address, port), self.timeout_s
                )
            except (TimeoutError, OSError) as exc:
                error = f"cannot connect to {_label(host, port)}: {exc or type(exc).__name__}"
        return error

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One proxied connection: a CONNECT tunnel or one plain-HTTP request."""
        task = asyncio.current_task()
        self._tasks.add(task)
        self._writers.add(writer)
        upstream: asyncio.StreamWriter | None = None
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.timeout_s)
            method, target, version = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
            tunnel = method.upper() == "CONNECT"
            if tunnel:
                url = f"https://{target}"
                reason = self.allow.url_refusal(url)
            else:
                url = target
                reason = self.allow.url_refusal(target)
                if reason is None and urlsplit(target).scheme.lower() != "http":
                    reason = f"{target!r} is not a proxy request"
            if reason is None:
                _, host, port = url_host_port(url)
                try:
                    connected = await self._connect(host, port)
                except _Refused as refused:
                    reason = str(refused)
            if reason is not None:
                self._refuse(_Refusal(url, reason, by_proxy=True))
                await _answer(writer, "403 Forbidden", f"Refused by the Lumos executor: {reason}")
                return
            if isinstance(connected, str):
                await _answer(writer, "502 Bad Gateway", connected)
                return
            upstream_reader, upstream = connected
            if tunnel:
                writer.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
                back = _pipe(upstream_reader, writer)
            else:  # one request per connection: absolute-form to origin-form, then close
                parts = urlsplit(target)
                path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
                upstream.write(_closing_head(head, f"{method} {path} {version}"))
                back = self._relay_response(upstream_reader, writer)
            # the request body (or the client's side of the tunnel) flows meanwhile
            pipes = [asyncio.ensure_future(_pipe(reader, upstream)), asyncio.ensure_future(back)]
            try:
                await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for pipe in pipes:
                    pipe.cancel()
                await asyncio.gather(*pipes, return_exceptions=True)
        except (
            TimeoutError,
            OSError,
            ValueError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
        ) as exc:
            log.debug("web: proxied connection ended: %s", exc)
        except asyncio.CancelledError:  # the guard closed (its session ended)
            pass
        finally:
            self._writers.discard(writer)
            self._tasks.discard(task)
            for w in (writer, upstream):
                if w is not None:
                    w.close()

    async def _relay_response(
        self, upstream: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            head = await asyncio.wait_for(upstream.readuntil(b"\r\n\r\n"), self.timeout_s)
            writer.write(_closing_head(head))  # so Chromium does not reuse the connection
            await _pipe(upstream, writer)


# -- live mode: browser sessions ---------------------------------------------------------------

# Marks every visible interactive element with data-lumos-idx and describes it.
_COLLECT_JS = """
() => {
  const selector = 'a[href], button, input:not([type=hidden]), select, textarea, summary, '
    + '[role=button], [role=link], [role=checkbox], [role=radio], [role=tab], [role=menuitem], '
    + '[role=option], [role=switch], [role=listbox], [role=combobox], [onclick], [contenteditable]';
  for (const el of document.querySelectorAll('[data-lumos-idx]')) el.removeAttribute('data-lumos-idx');
  const out = [];
  for (const el of document.querySelectorAll(selector)) {
    const box = el.getBoundingClientRect();
    const style = getComputedStyle(el);
    if (box.width === 0 || box.height === 0 || style.visibility === 'hidden' || style.display === 'none') continue;
    const index = out.length;
    el.setAttribute('data-lumos-idx', String(index));
    let label = '';
    if (el.id) {
      const l = document.querySelector('label[for="' + CSS.escape(el.id) + '"]');
      if (l) label = l.innerText;
    }
    if (!label && el.closest('label')) label = el.closest('label').innerText;
    const attrs = {};
    for (const k of ['aria-label', 'placeholder', 'name', 'id', 'title', 'alt', 'role', 'contenteditable']) {
      const v = el.getAttribute(k);
      if (v !== null) attrs[k] = v;
    }
    if (el.value !== undefined && el.value !== null && el.tagName !== 'BUTTON') attrs['value'] = String(el.value);
    const tag = el.tagName.toLowerCase();
    out.push({
      index, tag, type: el.getAttribute('type') || '',
      text: tag === 'select' ? '' : (el.innerText || '').trim().slice(0, 200),
      label: (label || '').trim().slice(0, 120),
      attrs,
      options: tag === 'select' ? Array.from(el.options).map(o => o.text.trim()) : [],
    });
  }
  return out;
}
"""


@dataclass
class _Session:
    context: Any
    page: Any
    guard: _NetworkGuard
    last_used: float
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def close(self) -> None:
        with contextlib.suppress(Exception):  # the browser may be gone; forget the session
            await self.context.close()
        await self.guard.close()


class BrowserSessions:
    """One headless Chromium for the process, one browser context (page) per run id.

    The browser starts on first use from `browser_path` (Debian's chromium); Playwright's
    own browser downloads are never used. Every context loads only what `allowed_hosts`
    (a `WebAllowList` or its entries) allows: nothing but about:blank and data: pages
    when it is empty. A refused navigation is a `ToolError` and the page stays where it was.
    """

    def __init__(
        self,
        browser_path: str = DEFAULT_BROWSER_PATH,
        *,
        allowed_hosts: WebAllowList | Iterable[str] = (),
        start_url: str | None = None,
        idle_timeout_s: float = 300.0,
        action_timeout_s: float = 10.0,
        launch_args: tuple[str, ...] = CHROMIUM_ARGS,
    ) -> None:
        self.browser_path = browser_path
        self.allow = (
            allowed_hosts
            if isinstance(allowed_hosts, WebAllowList)
            else WebAllowList(allowed_hosts)
        )
        self.start_url = start_url
        self.idle_timeout_s = idle_timeout_s
        self.action_timeout_s = action_timeout_s
        self.launch_args = launch_args
        self._playwright: Any = None
        self._browser: Any = None
        self._sessions: dict[str, _Session] = {}
        self._opening: dict[str, asyncio.Lock] = {}  # one session per run, even when raced
        self._start_lock = asyncio.Lock()

    async def _ensure_browser(self) -> Any:
        async with self._start_lock:
            if self._browser is not None and not self._browser.is_connected():
                # The browser died (crash, OOM kill): its contexts are gone with it.
                for dead in self._sessions.values():
                    await dead.guard.close()
                self._sessions.clear()
                self._browser = None
                await self._playwright.stop()
                self._playwright = None
            if self._browser is None:
                try:
                    from playwright.async_api import async_playwright
                except ImportError as exc:
                    raise ToolError(
                        "live web actions need the playwright package (the 'web' extra)"
                    ) from exc
                self._playwright = await async_playwright().start()
                try:
                    self._browser = await self._playwright.chromium.launch(
                        executable_path=self.browser_path,
                        headless=True,
                        args=list(self.launch_args),
                    )
                except Exception as exc:
                    await self._playwright.stop()
                    self._playwright = None
                    raise ToolError(
                        f"cannot start the browser at {self.browser_path} ({exc}); "
                        "install Debian's chromium or set the browser path"
                    ) from exc
            return self._browser

    async def close_idle(self) -> None:
        """Close the sessions unused for longer than `idle_timeout_s`."""
        now = time.monotonic()
        for run_id, session in list(self._sessions.items()):
            if now - session.last_used > self.idle_timeout_s and not session.lock.locked():
                await self.close(run_id)

    async def session(self, run_id: str, url: str | None) -> _Session:
        """The run's session, opened at `url` (or the start URL) when it has none yet."""
        await self.close_idle()
        async with self._opening.setdefault(run_id, asyncio.Lock()):
            existing = self._sessions.get(run_id)
            if existing is not None and existing.page.is_closed():
                del self._sessions[run_id]
                await existing.close()
                existing = None
            if existing is not None:
                existing.last_used = time.monotonic()
                return existing
            session = await self._open(url)
            self._sessions[run_id] = session
            return session

    async def _open(self, url: str | None) -> _Session:
        url = url or self.start_url
        if not url:
            raise ToolError(
                "no page open for this run and no start URL; pass the page's address as "
                "extras.url, or an HTML snapshot as extras.html for offline mode"
            )
        refusal = self.allow.url_refusal(url)
        if refusal is not None:
            raise ToolError(f"cannot open {url}: {refusal}")
        browser = await self._ensure_browser()
        guard = _NetworkGuard(self.allow, self.action_timeout_s)
        context: Any = None
        try:
            # Every connection of the context goes through the guard's proxy, loopback too.
            proxy = {"server": await guard.start(), "bypass": "<-loopback>"}
            context = await browser.new_context(proxy=proxy, service_workers="block")
            context.set_default_timeout(self.action_timeout_s * 1000)
            await context.route("**/*", guard.route)
            page = await context.new_page()
            page.on("request", guard.on_request)
            session = _Session(context=context, page=page, guard=guard, last_used=0.0)
            failure: Exception | None = None
            try:
                await page.goto(url, wait_until="domcontentloaded")
            except Exception as exc:
                failure = exc
            refused = guard.refused_navigation(page.url)
            if refused is not None:
                raise ToolError(f"cannot open {url}: {_explain(refused)}")
            if failure is not None:
                raise ToolError(f"cannot open {url}: {failure}") from failure
        except BaseException:
            if context is not None:
                with contextlib.suppress(Exception):
                    await context.close()
            await guard.close()
            raise
        session.last_used = time.monotonic()
        return session

    def __contains__(self, run_id: str) -> bool:
        return run_id in self._sessions

    def __len__(self) -> int:
        return len(self._sessions)

    async def close(self, run_id: str) -> bool:
        session = self._sessions.pop(run_id, None)
        self._opening.pop(run_id, None)
        if session is None:
            return False
        await session.close()
        return True

    async def aclose(self) -> None:
        for run_id in list(self._sessions):
            await self.close(run_id)
        if self._browser is not None:
            await self._browser.close()
            self._browser = None
        if self._playwright is not None:
            await self._playwright.stop()
            self._playwright = None

    async def elements(self, page: Any) -> list[PageElement]:
        raw = await page.evaluate(_COLLECT_JS)
        return [
            PageElement(
                index=r["index"],
                tag=r["tag"],
                type=r["type"],
                text=_clip(r["text"], 200),
                label=r["label"],
                attrs=r["attrs"],
                options=r["options"],
            )
            for r in raw
        ]

    async def state(self, page: Any, did: str) -> str:
        """The page's state as the planner reads it."""
        elements = await self.elements(page)
        body = await page.evaluate("() => document.body ? document.body.innerText : ''")
        lines = [
            f"Action: {did}",
            f"Title: {await page.title()}",
            f"URL: {page.url}",
            f"Text: {_clip(body, MAX_PAGE_TEXT)}",
            "Elements:",
        ]
        lines += [f"({e.index}) {e.describe()}" for e in elements[:MAX_LISTED_ELEMENTS]]
        if len(elements) > MAX_LISTED_ELEMENTS:
            lines.append(f"... {len(elements) - MAX_LISTED_ELEMENTS} more")
        return "\n".join(lines)

    async def act(self, run_id: str, url: str | None, operation: str, args: WebArguments) -> str:
        session = await self.session(run_id, url)
        async with session.lock:
            page = session.page
            element = choose_element(await self.elements(page), operation, args.query, args.text)
            target = page.locator(f'[data-lumos-idx="{element.index}"]')
            before = page.url
            session.guard.take()  # what was refused between actions is not this action's doing
            try:
                if operation == "CLICK":
                    await target.click()
                    did = f"clicked {element.describe()}"
                elif operation == "TYPE":
                    await target.fill(args.text or "")
                    did = f"typed {args.text!r} into {element.describe()}"
                else:
                    if element.tag != "select":
                        raise ToolError(f"SELECT: {element.describe()} is not a select box")
                    option = best_option(element.options, args.text or "")
                    await target.select_option(label=option)
                    did = f"selected {option!r} in {element.describe()}"
                await page.wait_for_load_state("domcontentloaded")
            except ToolError:
                raise
            except Exception as exc:
                await self._refuse_navigation(session, before, operation, element)
                raise ToolError(f"{operation} on {element.describe()} failed: {exc}") from exc
            await self._refuse_navigation(session, before, operation, element)
            session.last_used = time.monotonic()
            return await self.state(page, did)

    async def _refuse_navigation(
        self, session: _Session, before: str, operation: str, element: PageElement
    ) -> None:
        """Raise a `ToolError` when the action's navigation was refused, back on the old page."""
        page = session.page
        refused = session.guard.refused_navigation(page.url)
        if refused is None:
            return
        if page.url != before:  # a refused redirect hop leaves an error page: go back
            with contextlib.suppress(Exception):
                await page.go_back(wait_until="domcontentloaded")
            if page.url != before:
                with contextlib.suppress(Exception):
                    await page.goto(before, wait_until="domcontentloaded")
            session.guard.take()
        session.last_used = time.monotonic()
        raise ToolError(
            f"{operation} on {element.describe()} was refused: {_explain(refused)}; "
            f"the page is still {page.url}"
        )


def _explain(refusal: _Refusal) -> str:
    return f"it leads to {refusal.url}, which is refused: {refusal.reason}"


# -- the tools ---------------------------------------------------------------------------------


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
