"""The API documentation works where the services run: `/docs` of the gateway and of the
executor render their operations in a real headless Chromium that can reach nothing but the
service itself (no CDN, no fonts, no telemetry)."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from urllib.parse import urlsplit

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from gateway.app import create_app as create_gateway
from gateway.settings import GatewaySettings
from services.executor.app import create_app as create_executor
from services.executor.tools.web.sessions import CHROMIUM_ARGS, DEFAULT_BROWSER_PATH
from tests.gateway.helpers import serve

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


# Operations each service's /docs must show (method, path).
SHOWN = {
    "gateway": [("POST", "/agent/run"), ("GET", "/agent/runs/{run_id}")],
    "executor": [("POST", "/v1/execute"), ("GET", "/v1/tools")],
}


@pytest.mark.browser
@needs_browser
@pytest.mark.parametrize("service", sorted(APPS))
async def test_docs_show_the_operations_with_no_network(service):
    # no lifespan: /docs needs no Redis and no tools
    async with serve(APPS[service](), lifespan="off") as url:
        operations, blocked = await _operations_shown_offline(url, "/docs")
    assert not blocked, f"/docs asked for resources outside the service: {blocked}"
    for method, path in SHOWN[service]:
        assert any(op.startswith(f"{method} {path}") for op in operations), (
            method,
            path,
            operations,
        )
