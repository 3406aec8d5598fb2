"""Which URLs the live browser may load: the web tools' allow-list
(``LUMOS_EXECUTOR_WEB_ALLOWED_HOSTS``), its entries and the address checks behind it.

Standard library only: the executor's settings validate their entries with it.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

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


def parse_ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def is_internal_address(address: str) -> bool:
    """True for loopback, private, link-local, unspecified and other non-public addresses."""
    ip = parse_ip(address)
    if ip is None:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


def _is_internal_host(host: str) -> bool:
    """An IP literal of a non-public address, or a name Chromium resolves to loopback itself."""
    return is_internal_address(host) or host == "localhost" or host.endswith(".localhost")


def authority(url: str) -> tuple[str, int] | None:
    try:
        _, host, port = url_host_port(url)
    except ValueError:
        return None
    return host, port


def host_label(host: str, port: int) -> str:
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
        if parse_ip(host) is None and not _HOSTNAME_RE.match(host):
            raise ValueError(f"web allow-list entry {entry!r}: {host!r} is not a host name")
        if subdomains and parse_ip(host) is not None:
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
        label = host_label(host, port)
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
                    f"host {host_label(_canonical_host(host), port)} resolves to {address}, a "
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
