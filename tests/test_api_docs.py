"""The API documentation works where the services run: `/docs` of the gateway and of the
executor render their operations in a real headless Chromium that can reach nothing but the
service itself (no CDN, no fonts, no telemetry)."""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from gateway.app import create_app as create_gateway
from gateway.settings import GatewaySettings
from services.executor.app import create_app as create_executor
from services.executor.tools.web.sessions import CHROMIUM_ARGS, DEFAULT_BROWSER_PATH

APPS: dict[str, Callable[[], FastAPI]] = {
    "gateway": lambda: create_gateway(GatewaySettings()),
    "executor": lambda: create_executor(external_tools=False),
}
# Where the suite must prove the browser (CI sets LUMOS_REQUIRE_BROWSER), a missing one
# fails these tests instead of skipping them.
needs_browser = pytest.mark.skipif(
    not os.path.exists(DEFAULT_BROWSER_PATH) and not os.environ.get("LUMOS_REQUIRE_BROWSER"),
    reason="needs Debian's chromium (apt-get install chromium)",
)


@pytest.mark.parametrize("service", sorted(APPS))
@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_every_asset_from_the_service(service: str, page: str) -> None:
    client = TestClient(APPS[service]())
    html = client.get(page).text
    assets = re.findall(r"""(?:src|href)=["']([^"']+)""", html) + re.findall(
        r"url: ?'([^']+)'", html
    )
    assert assets and not [a for a in assets if "://" in a or a.startswith("//")], assets
    for asset in assets:
        assert client.get(asset).status_code == 200, asset


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def serve() -> Iterator[Callable[[FastAPI], str]]:
    """Serves an app on a free local port (no lifespan: /docs needs no Redis, no tools)."""
    servers: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(app: FastAPI) -> str:
        port = _free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_level="error")
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 20
        while not server.started:
            assert time.monotonic() < deadline, "the app did not start"
            time.sleep(0.05)
        servers.append((server, thread))
        return f"http://127.0.0.1:{port}"

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(timeout=10)


async def _operations_shown_offline(base_url: str, path: str) -> tuple[list[str], list[str]]:
    """(the operations /docs shows, the requests that tried to leave the service)."""
    playwright_api = pytest.importorskip("playwright.async_api")
    service = urlsplit(base_url).netloc
    blocked: list[str] = []

    async def only_the_service(route: object) -> None:
        request = route.request  # type: ignore[attr-defined]
        if urlsplit(request.url).netloc == service:
            await route.continue_()  # type: ignore[attr-defined]
        else:
            blocked.append(request.url)
            await route.abort("internetdisconnected")  # type: ignore[attr-defined]

    async with playwright_api.async_playwright() as p:
        browser = await p.chromium.launch(
            executable_path=DEFAULT_BROWSER_PATH, headless=True, args=list(CHROMIUM_ARGS)
        )
        try:
            context = await browser.new_context()
            await context.route("**/*", only_the_service)
            page = await context.new_page()
            await page.goto(base_url + path)
            try:
                await page.wait_for_selector(".opblock-summary", timeout=20_000)
            except playwright_api.TimeoutError:
                return [], blocked
            summaries = page.locator(".opblock-summary")
            operations = [
                " ".join((await summaries.nth(i).inner_text()).split())
                for i in range(await summaries.count())
            ]
        finally:
            await browser.close()
    return operations, blocked


def _has(operations: list[str], method: str, path: str) -> bool:
    return any(op.startswith(f"{method} {path}") for op in operations)


@pytest.mark.browser
@needs_browser
async def test_gateway_docs_show_its_operations_with_no_network(serve):
    url = serve(APPS["gateway"]())
    operations, blocked = await _operations_shown_offline(url, "/docs")
    assert not blocked, f"/docs asked for resources outside the service: {blocked}"
    assert _has(operations, "POST", "/agent/run"), operations
    assert _has(operations, "GET", "/agent/runs/{run_id}"), operations


@pytest.mark.browser
@needs_browser
async def test_executor_docs_show_its_operations_with_no_network(serve):
    url = serve(APPS["executor"]())
    operations, blocked = await _operations_shown_offline(url, "/docs")
    assert not blocked, f"/docs asked for resources outside the service: {blocked}"
    assert _has(operations, "POST", "/v1/execute"), operations
    assert _has(operations, "GET", "/v1/tools"), operations
