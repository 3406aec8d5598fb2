"""The network guard of one browser context: its route handler and its checking proxy
keep every connection the page opens to what the allow-list allows."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from .allow_list import WebAllowList, authority, host_label, parse_ip, url_host_port

log = logging.getLogger(__name__)


async def resolve_host(host: str, port: int) -> list[str]:
    """The addresses `host` resolves to (the guard proxy's DNS look-up)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


@dataclass(frozen=True)
class Refusal:
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


class NetworkGuard:
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
        self.refusals: list[Refusal] = []
        self.navigations: list[str] = []
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[Any] | None] = set()

    def take(self) -> list[Refusal]:
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

    def refused_navigation(self, page_url: str) -> Refusal | None:
        """The refusal that stopped the main frame's navigation since the last `take`, if any.

        The route handler knows when it aborts a navigation; a redirect's next hop is
        refused by the proxy instead, which leaves the page on an error page (https) or on
        the proxy's 403 answer for the refused URL (http).
        """
        navigated = {authority(url) for url in self.navigations}
        refusals = self.take()
        for refusal in refusals:
            if refusal.navigation:
                return refusal
        for refusal in reversed(refusals):
            if refusal.by_proxy and authority(refusal.url) in navigated:
                if refusal.url == page_url or page_url.startswith("chrome-error:"):
                    return refusal
        return None

    def _refuse(self, refusal: Refusal) -> None:
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
            self._refuse(Refusal(request.url, reason, navigation=navigation))
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
        if parse_ip(host) is not None:
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
                error = f"cannot connect to {host_label(host, port)}: {exc or type(exc).__name__}"
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
                self._refuse(Refusal(url, reason, by_proxy=True))
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
