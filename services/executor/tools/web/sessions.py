"""Live mode: one headless Chromium for the process, one guarded browser context per run."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..base import ToolError
from .allow_list import WebAllowList
from .elements import PageElement, WebArguments, best_option, choose_element, clip
from .guard import NetworkGuard, Refusal

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
    guard: NetworkGuard
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
        guard = NetworkGuard(self.allow, self.action_timeout_s)
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
                text=clip(r["text"], 200),
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
            f"Text: {clip(body, MAX_PAGE_TEXT)}",
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


def _explain(refusal: Refusal) -> str:
    return f"it leads to {refusal.url}, which is refused: {refusal.reason}"
