"""Web-agent tools: element choice on HTML snapshots, and live actions in Debian's Chromium."""

from __future__ import annotations

import asyncio
import functools
import os
import re
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from lumos.actions import Action
from services.executor.settings import ExecutorSettings
from services.executor.tools.base import ToolContext, ToolError
from services.executor.tools.web import guard as guard_module
from services.executor.tools.web.allow_list import WebAllowList
from services.executor.tools.web.elements import (
    best_option,
    parse_html_elements,
    parse_web_arguments,
)
from services.executor.tools.web.guard import NetworkGuard
from services.executor.tools.web.sessions import DEFAULT_BROWSER_PATH, BrowserSessions
from services.executor.tools.web.tools import WebClick, WebSelect, WebType, build_tools

REPO = Path(__file__).resolve().parents[2]

SNAPSHOT = """<html><head><style>button { color: red }</style></head><body>
<script>var fake = "<button>Book now</button>";</script>
<form>
  <label for="from">Departure city</label>
  <input id="from" name="origin" type="text" placeholder="From" backend_node_id="101">
  <input type="hidden" name="token" value="secret">
  <select name="cabin" backend_node_id="102"><option>Economy</option><option>Business class</option></select>
  <button type="submit" backend_node_id="103">Search flights</button>
</form>
<a href="/deals" backend_node_id="104">Today's deals</a>
<div role="button" aria-label="Close the cookie banner" backend_node_id="105">X</div>
</body></html>"""


def web(name: str, args: str) -> Action:
    return Action(("R1",), name, args)


def offline(html: str = SNAPSHOT) -> ToolContext:
    return ToolContext(domain="web_agent", extras={"html": html})


# -- arguments and element choice -----------------------------------------------------------------


def test_arguments_split_like_the_original_with_commas_inside_query_and_text() -> None:
    args = parse_web_arguments("TYPE", "Env, QUERY: the box for city, state, TEXT: Austin, TX")
    assert (args.env, args.query, args.text) == ("Env", "the box for city, state", "Austin, TX")
    click = parse_web_arguments("CLICK", "R3, QUERY: Search flights, now")
    assert (click.env, click.query, click.text) == ("R3", "Search flights, now", None)
    with pytest.raises(ToolError, match="TEXT"):
        parse_web_arguments("SELECT", "Env, QUERY: cabin")
    with pytest.raises(ToolError, match="QUERY"):
        parse_web_arguments("CLICK", "Env, search")


def test_snapshot_parsing_skips_scripts_and_hidden_inputs_and_reads_labels() -> None:
    elements = parse_html_elements(SNAPSHOT)
    assert [e.tag for e in elements] == ["input", "select", "button", "a", "div"]
    assert elements[0].label == "Departure city"
    assert elements[1].options == ["Economy", "Business class"]
    assert elements[2].text == "Search flights"
    assert elements[4].describe() == '[div role=button aria-label="Close the cookie banner"] X'


async def test_offline_click_returns_the_chosen_element_and_operation() -> None:
    (result,) = await WebClick().run(web("CLICK", "Env, QUERY: close cookie banner"), {}, offline())
    assert result == {
        "tag": '[div role=button aria-label="Close the cookie banner"] X',
        "operation": "CLICK",
        "text": "close cookie banner",
        "backend_node_id": "105",
    }


async def test_offline_type_prefers_text_inputs_and_reads_their_labels() -> None:
    (result,) = await WebType().run(
        web("TYPE", "Env, QUERY: departure city, TEXT: Boston"), {}, offline()
    )
    assert result["backend_node_id"] == "101"
    assert (result["operation"], result["text"]) == ("TYPE", "Boston")


async def test_offline_type_takes_the_only_input_even_without_a_matching_word() -> None:
    (result,) = await WebType().run(web("TYPE", "Env, QUERY: where to, TEXT: Oslo"), {}, offline())
    assert result["backend_node_id"] == "101"


async def test_offline_select_ranks_select_boxes_by_query_and_option_text() -> None:
    html = (
        '<select name="seats" backend_node_id="1"><option>1</option><option>2</option></select>'
        '<select name="cabin" backend_node_id="2"><option>Economy</option><option>Business</option></select>'
    )
    (result,) = await WebSelect().run(
        web("SELECT", "Env, QUERY: travel class, TEXT: business"), {}, offline(html)
    )
    assert (result["backend_node_id"], result["text"]) == ("2", "business")


async def test_offline_snapshot_may_come_from_a_variable() -> None:
    (result,) = await WebClick().run(
        web("CLICK", "R2, QUERY: deals"), {"R2": SNAPSHOT}, ToolContext(domain="web_agent")
    )
    assert result["backend_node_id"] == "104"


async def test_no_matching_element_lists_what_the_page_has() -> None:
    with pytest.raises(
        ToolError, match=r"no element on the page matches 'weather forecast'.*\[a\]"
    ):
        await WebClick().run(web("CLICK", "Env, QUERY: weather forecast"), {}, offline())


async def test_without_snapshot_or_browser_the_tool_says_what_is_missing() -> None:
    with pytest.raises(ToolError, match="no browser configured and no HTML snapshot"):
        await WebClick().run(web("CLICK", "Env, QUERY: x"), {}, ToolContext(domain="web_agent"))
    with pytest.raises(ToolError, match="unknown variable R4"):
        await WebClick().run(web("CLICK", "R4, QUERY: x"), {}, offline())


def test_best_option_prefers_exact_labels_then_word_overlap() -> None:
    assert best_option(["Dog", "Hot dog stand"], "dog") == "Dog"
    assert best_option(["Economy", "Business class"], "business") == "Business class"
    with pytest.raises(ToolError, match="no option like 'zebra'"):
        best_option(["Economy"], "zebra")


# -- live pages in Chromium -----------------------------------------------------------------------

SURVEY = """<!doctype html><html><head><title>Pet survey</title></head><body>
<h1 id="status">Tell us about your pet</h1>
<form onsubmit="return false">
  <label for="owner">Your name</label>
  <input id="owner" name="owner" type="text" placeholder="First name">
  <label for="species">Species</label>
  <select id="species" name="species"><option>Cat</option><option>Dog</option><option>Guinea pig</option></select>
  <button type="button" id="save" onclick="
    document.getElementById('status').textContent = 'Saved: ' +
      document.getElementById('owner').value + ' has a ' + document.getElementById('species').value;
    document.title = 'Saved';">Save answers</button>
</form>
<a href="second.html">Read the privacy policy</a>
<button style="display:none">Hidden danger</button>
</body></html>"""

SECOND = """<!doctype html><html><head><title>Privacy policy</title></head><body>
<h1>We keep nothing.</h1><a href="index.html">Back to the survey</a></body></html>"""

# Links away from the allowed site: "localhost" is the same server under another host name,
# so a request that got through would show up in the server's log.
LINKS = """<!doctype html><html><head><title>Links</title></head><body>
<a href="http://localhost:{port}/second.html?via=link">Elsewhere under another name</a>
<a href="http://127.0.0.1:{other_port}/second.html">Neighbour port</a>
<a href="/redirect?to=http://localhost:{port}/second.html?via=redirect">Redirect away</a>
<a href="/redirect?to=/second.html">Redirect home</a>
<a href="/redirect?to=https://localhost:{port}/second.html">Secure detour</a>
<a href="http://intranet.example:{port}/second.html?via=dns">Intranet</a>
<input name="note" placeholder="Note">
<button onclick="const ws = new WebSocket('ws://localhost:{port}/socket');
  ws.onclose = () => {{ document.title = 'Socket closed'; }};">Open a socket</button>
<img src="http://localhost:{port}/pixel.png?via=img" alt="pixel">
<script>fetch("http://localhost:{port}/data?via=fetch").catch(() => {{}});</script>
</body></html>"""

# Where the suite must prove the browser tools (CI sets LUMOS_REQUIRE_BROWSER), a missing
# browser fails these tests instead of skipping them.
needs_browser = pytest.mark.skipif(
    not os.path.exists(DEFAULT_BROWSER_PATH) and not os.environ.get("LUMOS_REQUIRE_BROWSER"),
    reason="needs Debian's chromium (apt-get install chromium)",
)


class _SiteServer(ThreadingHTTPServer):
    seen: list[tuple[str, str]]  # (Host header, path) of every request that arrived


class _QuietHandler(SimpleHTTPRequestHandler):
    """Serves the site's files, records each request, and redirects /redirect?to=URL."""

    server: _SiteServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.server.seen.append((self.headers.get("Host", ""), self.path))
        if self.path.startswith("/redirect?to="):
            self.send_response(302)
            self.send_header("Location", self.path.split("=", 1)[1])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        super().do_GET()


@pytest.fixture(scope="module")
def site_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_SiteServer]:
    root: Path = tmp_path_factory.mktemp("site")
    (root / "index.html").write_text(SURVEY, encoding="utf-8")
    (root / "second.html").write_text(SECOND, encoding="utf-8")
    server = _SiteServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root)))
    server.seen = []
    port = server.server_address[1]
    (root / "links.html").write_text(LINKS.format(port=port, other_port=port + 1), "utf-8")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def site(site_server: _SiteServer) -> str:
    return f"http://127.0.0.1:{site_server.server_address[1]}"


def authority(site: str) -> str:
    """``http://127.0.0.1:PORT`` -> ``127.0.0.1:PORT``: the allow-list entry of the site."""
    return site.split("://", 1)[1]


@pytest.fixture
async def sessions(site: str) -> AsyncIterator[BrowserSessions]:
    s = BrowserSessions(allowed_hosts=[authority(site)])
    yield s
    await s.aclose()


def live(site: str, run_id: str = "run-1") -> ToolContext:
    return ToolContext(domain="web_agent", run_id=run_id, extras={"url": f"{site}/index.html"})


@pytest.mark.browser
@needs_browser
async def test_type_select_and_click_change_the_page_and_the_state_shows_it(
    site: str, sessions: BrowserSessions
) -> None:
    ctx = live(site)
    (typed,) = await WebType(sessions).run(web("TYPE", "Env, QUERY: your name, TEXT: Ada"), {}, ctx)
    assert "Title: Pet survey" in typed
    assert f"URL: {site}/index.html" in typed
    assert (
        '[input type=text name=owner id=owner placeholder="First name"] Your name value="Ada"'
        in typed
    )

    (selected,) = await WebSelect(sessions).run(
        web("SELECT", "R1, QUERY: species of the pet, TEXT: dog"), {"R1": typed}, ctx
    )
    assert "selected 'Dog'" in selected
    assert '[select name=species id=species] Species value="Dog"' in selected

    (clicked,) = await WebClick(sessions).run(
        web("CLICK", "R2, QUERY: save answers"), {"R2": selected}, ctx
    )
    assert "Title: Saved" in clicked
    assert "Text: Saved: Ada has a Dog" in clicked
    assert "Hidden danger" not in clicked


@pytest.mark.browser
@needs_browser
async def test_clicking_a_link_navigates_and_reports_the_new_page(
    site: str, sessions: BrowserSessions
) -> None:
    (state,) = await WebClick(sessions).run(
        web("CLICK", "Env, QUERY: privacy policy"), {}, live(site)
    )
    assert f"URL: {site}/second.html" in state
    assert "Title: Privacy policy" in state
    assert "(0) [a] Back to the survey" in state


@pytest.mark.browser
@needs_browser
async def test_runs_have_separate_pages_and_sessions_close_explicitly(
    site: str, sessions: BrowserSessions
) -> None:
    await WebType(sessions).run(
        web("TYPE", "Env, QUERY: your name, TEXT: Ada"), {}, live(site, "a")
    )
    (other,) = await WebType(sessions).run(
        web("TYPE", "Env, QUERY: your name, TEXT: Grace"), {}, live(site, "b")
    )
    assert 'value="Grace"' in other and 'value="Ada"' not in other
    assert await sessions.close("a") is True
    assert "a" not in sessions and "b" in sessions
    assert await sessions.close("a") is False


@pytest.mark.browser
@needs_browser
async def test_concurrent_first_actions_of_a_run_share_one_session(
    site: str, sessions: BrowserSessions
) -> None:
    ctx = live(site, "raced")
    await asyncio.gather(
        WebType(sessions).run(web("TYPE", "Env, QUERY: your name, TEXT: Ada"), {}, ctx),
        WebSelect(sessions).run(web("SELECT", "Env, QUERY: species, TEXT: dog"), {}, ctx),
    )
    assert len(sessions) == 1
    (state,) = await WebClick(sessions).run(web("CLICK", "Env, QUERY: save answers"), {}, ctx)
    assert "Text: Saved: Ada has a Dog" in state


@pytest.mark.browser
@needs_browser
async def test_idle_sessions_are_closed_on_the_next_action(site: str) -> None:
    sessions = BrowserSessions(idle_timeout_s=0.0, allowed_hosts=[authority(site)])
    try:
        await WebClick(sessions).run(web("CLICK", "Env, QUERY: save"), {}, live(site, "old"))
        await WebClick(sessions).run(web("CLICK", "Env, QUERY: save"), {}, live(site, "new"))
        assert "old" not in sessions and "new" in sessions
    finally:
        await sessions.aclose()


@pytest.mark.browser
@needs_browser
async def test_a_run_without_a_page_or_start_url_is_a_tool_error(
    sessions: BrowserSessions,
) -> None:
    with pytest.raises(ToolError, match="no page open for this run and no start URL"):
        await WebClick(sessions).run(
            web("CLICK", "Env, QUERY: x"), {}, ToolContext(domain="web_agent", run_id="r")
        )


@pytest.mark.browser
@needs_browser
async def test_a_missing_browser_binary_is_a_tool_error(site: str) -> None:
    sessions = BrowserSessions("/nonexistent/chromium", allowed_hosts=[authority(site)])
    try:
        with pytest.raises(ToolError, match="cannot start the browser at /nonexistent/chromium"):
            await WebClick(sessions).run(web("CLICK", "Env, QUERY: x"), {}, live(site))
    finally:
        await sessions.aclose()


# -- the URL allow-list (LUMOS_EXECUTOR_WEB_ALLOWED_HOSTS) ------------------------------------------


def test_allow_list_entries_allow_hosts_ports_and_subdomains() -> None:
    allow = WebAllowList(["example.com", "wiki.test:8080", "*.docs.test", "127.0.0.1:9000"])
    allowed = [
        "http://example.com/a",
        "https://EXAMPLE.com.:8443/",  # any port, case and trailing dot do not matter
        "http://wiki.test:8080/",
        "https://en.docs.test/x",
        "http://127.0.0.1:9000/",
        "http://0x7f.1:9000/",  # the same address, as Chromium reads it
        "about:blank",
        "data:text/html,<p>hi</p>",
    ]
    assert [u for u in allowed if allow.url_refusal(u) is not None] == []
    refused = {
        "http://wiki.test/": "host wiki.test:80 is not in the web tools' allow-list "
        "(LUMOS_EXECUTOR_WEB_ALLOWED_HOSTS)",
        "https://docs.test/": "host docs.test:443 is not in",  # *.domain: subdomains only
        "http://example.com.evil.test/": "host example.com.evil.test:80 is not in",
        "http://127.0.0.1:9001/": "host 127.0.0.1:9001 is a loopback, private or link-local",
        "file:///etc/passwd": "file: URLs are never opened by the web tools",
        "chrome://settings": "chrome: URLs are never opened",
        "javascript:alert(1)": "javascript: URLs are never opened",
        "view-source:http://example.com/": "view-source: URLs are never opened",
    }
    for url, reason in refused.items():
        assert (allow.url_refusal(url) or "").startswith(reason), url


def test_a_star_allows_public_hosts_but_never_private_addresses_without_an_exact_entry() -> None:
    allow = WebAllowList(["*"])
    assert allow.url_refusal("https://en.wikipedia.org/wiki/Lumos") is None
    for url in (
        "http://127.0.0.1/",
        "http://localhost:8003/",
        "http://api.localhost/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.7/",
        "http://192.168.1.1/",
        "http://0.0.0.0/",
        "http://2130706433/",  # 127.0.0.1 as one number
    ):
        assert "only an exact entry in LUMOS_EXECUTOR_WEB_ALLOWED_HOSTS" in (
            allow.url_refusal(url) or ""
        ), url
    # names are checked by the addresses they resolve to, unless listed exactly
    assert "resolves to 10.0.0.7" in (allow.address_refusal("intra.test", 80, ["10.0.0.7"]) or "")
    assert allow.address_refusal("en.wikipedia.org", 443, ["208.80.154.224"]) is None
    exact = WebAllowList(["*", "intra.test"])
    assert exact.address_refusal("intra.test", 80, ["10.0.0.7"]) is None


def test_an_empty_allow_list_opens_only_local_pages() -> None:
    allow = WebAllowList([])
    assert allow.url_refusal("about:blank") is None
    assert allow.url_refusal("data:text/html,hi") is None
    assert "not in the web tools' allow-list" in (allow.url_refusal("https://example.com/") or "")


@pytest.mark.parametrize(
    "entry", ["http://example.com/", "example.com/path", "*.127.0.0.1", "host:99999", "bad host"]
)
def test_allow_list_entries_that_are_not_hosts_are_rejected(entry: str) -> None:
    with pytest.raises(ValueError, match="web allow-list entry"):
        WebAllowList([entry])


def test_the_setting_defaults_to_empty_and_reads_a_comma_separated_list(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("LUMOS_EXECUTOR_WEB_ALLOWED_HOSTS", raising=False)
    assert ExecutorSettings().web_allowed_hosts == []
    monkeypatch.setenv(
        "LUMOS_EXECUTOR_WEB_ALLOWED_HOSTS", " example.com, 127.0.0.1:8080 ,*.wiki.test"
    )
    settings = ExecutorSettings()
    assert settings.web_allowed_hosts == ["example.com", "127.0.0.1:8080", "*.wiki.test"]
    monkeypatch.setenv("LUMOS_EXECUTOR_WEB_ALLOWED_HOSTS", "https://example.com/")
    with pytest.raises(ValidationError, match="not a URL"):
        ExecutorSettings()


def test_the_settings_load_the_allow_list_and_nothing_else_of_the_web_tools() -> None:
    code = (
        "import sys; import services.executor.settings; "
        "print(sorted(m for m in sys.modules if m.startswith('services.executor.tools')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    ).stdout
    assert out.strip() == str(
        [
            "services.executor.tools",
            "services.executor.tools.web",
            "services.executor.tools.web.allow_list",
        ]
    )


def test_the_tools_are_built_with_the_configured_allow_list(tmp_path: Path) -> None:
    fake_browser = tmp_path / "chromium"
    fake_browser.touch()
    settings = ExecutorSettings(browser_path=str(fake_browser), web_allowed_hosts=["example.com"])
    tools = build_tools(settings)
    assert [t.name for t in tools] == ["CLICK", "TYPE", "SELECT"]
    assert all(isinstance(t, WebClick | WebType | WebSelect) for t in tools)
    sessions = {t.sessions for t in tools if isinstance(t, WebClick | WebType | WebSelect)}
    assert len(sessions) == 1
    (shared,) = sessions
    assert isinstance(shared, BrowserSessions)
    assert shared.allow.entries == ("example.com",)
    missing = ExecutorSettings(browser_path=str(tmp_path / "none"))
    assert [getattr(t, "sessions", "?") for t in build_tools(missing)] == [None, None, None]


class _FakeRequest:
    def __init__(self, url: str, navigation: bool) -> None:
        self.url = url
        self.navigation = navigation
        self.frame = type("Frame", (), {"parent_frame": None})()

    def is_navigation_request(self) -> bool:
        return self.navigation


class _FakeRoute:
    def __init__(self, url: str, navigation: bool = True) -> None:
        self.request = _FakeRequest(url, navigation)
        self.outcome = ""

    async def continue_(self) -> None:
        self.outcome = "continued"

    async def abort(self, error_code: str) -> None:
        self.outcome = f"aborted ({error_code})"


async def test_the_route_handler_aborts_refused_requests_before_they_are_sent() -> None:
    guard = NetworkGuard(WebAllowList(["example.com"]), timeout_s=1.0)
    allowed, away, image = (
        _FakeRoute("https://example.com/a"),
        _FakeRoute("https://evil.test/"),
        _FakeRoute("http://evil.test/pixel.png", navigation=False),
    )
    for route in (allowed, away, image):
        await guard.route(route)
    assert (allowed.outcome, away.outcome, image.outcome) == (
        "continued",
        "aborted (aborted)",  # "aborted": Chromium shows no error page, the page stays
        "aborted (aborted)",
    )
    refusals = guard.take()
    assert [(r.url, r.navigation) for r in refusals] == [
        ("https://evil.test/", True),
        ("http://evil.test/pixel.png", False),
    ]
    assert "host evil.test:443 is not in the web tools' allow-list" in refusals[0].reason
    assert guard.take() == []


def requests_for(server: _SiteServer, host: str) -> list[str]:
    return [path for h, path in server.seen if h.split(":")[0] == host]


@pytest.mark.browser
@needs_browser
async def test_by_default_no_host_is_opened_but_local_pages_and_snapshots_work(
    site: str, site_server: _SiteServer
) -> None:
    sessions = BrowserSessions()  # the setting's default: no entries
    try:
        before = len(site_server.seen)
        with pytest.raises(ToolError) as refused:
            await WebClick(sessions).run(web("CLICK", "Env, QUERY: save"), {}, live(site))
        assert str(refused.value).startswith(f"cannot open {site}/index.html: host ")
        assert authority(site) in str(refused.value)
        assert "LUMOS_EXECUTOR_WEB_ALLOWED_HOSTS" in str(refused.value)
        assert len(site_server.seen) == before  # the browser never asked for it

        page = 'data:text/html,<title>Local</title><input name="q" placeholder="Search">'
        ctx = ToolContext(domain="web_agent", run_id="local", extras={"url": page})
        (state,) = await WebType(sessions).run(web("TYPE", "Env, QUERY: search, TEXT: hi"), {}, ctx)
        assert "Title: Local" in state and 'value="hi"' in state
        (offline_result,) = await WebClick(sessions).run(
            web("CLICK", "Env, QUERY: deals"), {}, offline()
        )
        assert offline_result["backend_node_id"] == "104"
    finally:
        await sessions.aclose()


@pytest.mark.browser
@needs_browser
async def test_allowed_pages_load_and_redirects_within_the_allowed_host_work(
    site: str, sessions: BrowserSessions
) -> None:
    ctx = ToolContext(domain="web_agent", run_id="ok", extras={"url": f"{site}/links.html"})
    (state,) = await WebClick(sessions).run(web("CLICK", "Env, QUERY: redirect home"), {}, ctx)
    assert f"URL: {site}/second.html" in state
    assert "Title: Privacy policy" in state


@pytest.mark.browser
@needs_browser
@pytest.mark.parametrize(
    "url, reason",
    [
        ("http://elsewhere.test/", "host elsewhere.test:80 is not in the web tools' allow-list"),
        ("http://localhost:{port}/index.html", "host localhost:{port} is a loopback"),
        ("http://127.0.0.1:{other_port}/", "host 127.0.0.1:{other_port} is a loopback"),
        ("file:///etc/passwd", "file: URLs are never opened by the web tools"),
        ("chrome://version", "chrome: URLs are never opened"),
        ("javascript:alert(1)", "javascript: URLs are never opened"),
    ],
)
async def test_a_start_page_outside_the_allow_list_is_refused(
    site: str, site_server: _SiteServer, sessions: BrowserSessions, url: str, reason: str
) -> None:
    port = site_server.server_address[1]
    url = url.format(port=port, other_port=port + 1)
    ctx = ToolContext(domain="web_agent", run_id="away", extras={"url": url})
    with pytest.raises(ToolError) as refused:
        await WebClick(sessions).run(web("CLICK", "Env, QUERY: x"), {}, ctx)
    message = str(refused.value)
    assert message.startswith(f"cannot open {url}: ")
    assert reason.format(port=port, other_port=port + 1) in message
    if url.startswith("http"):  # a host refusal names the setting that would allow it
        assert message.endswith("LUMOS_EXECUTOR_WEB_ALLOWED_HOSTS)") or message.endswith(
            "exact entry in LUMOS_EXECUTOR_WEB_ALLOWED_HOSTS allows"
        )
    assert requests_for(site_server, "localhost") == []
    assert "away" not in sessions


@pytest.mark.browser
@needs_browser
async def test_file_urls_are_refused_even_when_every_host_is_allowed(site: str) -> None:
    sessions = BrowserSessions(allowed_hosts=["*", authority(site)])
    try:
        ctx = ToolContext(domain="web_agent", run_id="f", extras={"url": "file:///etc/passwd"})
        with pytest.raises(ToolError, match="cannot open file:///etc/passwd: file: URLs are never"):
            await WebClick(sessions).run(web("CLICK", "Env, QUERY: x"), {}, ctx)
        # a page's own link to a file: URL loads nothing either
        ctx = ToolContext(
            domain="web_agent",
            run_id="g",
            extras={"url": f"{site}/index.html"},
        )
        await WebClick(sessions).run(web("CLICK", "Env, QUERY: save"), {}, ctx)
        page = sessions._sessions["g"].page
        await page.evaluate(
            "() => { const a = document.createElement('a'); a.href = 'file:///etc/passwd';"
            " a.textContent = 'Local file'; document.body.append(a); }"
        )
        (state,) = await WebClick(sessions).run(web("CLICK", "Env, QUERY: local file"), {}, ctx)
        assert f"URL: {site}/index.html" in state
    finally:
        await sessions.aclose()


@pytest.mark.browser
@needs_browser
async def test_a_star_does_not_open_loopback_addresses(site: str) -> None:
    sessions = BrowserSessions(allowed_hosts=["*"])
    try:
        with pytest.raises(ToolError, match=r"is a loopback, private or link-local address"):
            await WebClick(sessions).run(web("CLICK", "Env, QUERY: save"), {}, live(site))
    finally:
        await sessions.aclose()


def links(site: str, run_id: str) -> ToolContext:
    return ToolContext(domain="web_agent", run_id=run_id, extras={"url": f"{site}/links.html"})


@pytest.mark.browser
@needs_browser
async def test_clicking_a_link_to_a_disallowed_host_is_refused_and_the_page_stays(
    site: str, site_server: _SiteServer, sessions: BrowserSessions
) -> None:
    port = site_server.server_address[1]
    ctx = links(site, "click-away")
    await WebType(sessions).run(web("TYPE", "Env, QUERY: note, TEXT: kept"), {}, ctx)
    with pytest.raises(ToolError) as refused:
        await WebClick(sessions).run(
            web("CLICK", "Env, QUERY: elsewhere under another name"), {}, ctx
        )
    assert str(refused.value) == (
        "CLICK on [a] Elsewhere under another name was refused: it leads to "
        f"http://localhost:{port}/second.html?via=link, which is refused: host localhost:{port} "
        "is a loopback, private or link-local address, which only an exact entry in "
        f"LUMOS_EXECUTOR_WEB_ALLOWED_HOSTS allows; the page is still {site}/links.html"
    )
    with pytest.raises(ToolError, match=rf"host 127.0.0.1:{port + 1} is a loopback"):
        await WebClick(sessions).run(web("CLICK", "Env, QUERY: neighbour port"), {}, ctx)
    # the session goes on, on the same page: the refused navigation never left it
    (state,) = await WebClick(sessions).run(web("CLICK", "Env, QUERY: note"), {}, ctx)
    assert f"URL: {site}/links.html" in state
    assert 'placeholder="Note"] value="kept"' in state
    (state,) = await WebClick(sessions).run(web("CLICK", "Env, QUERY: redirect home"), {}, ctx)
    assert f"URL: {site}/second.html" in state
    # nor does a WebSocket (which no route handler sees; the proxy does)
    ctx = links(site, "socket")
    await WebClick(sessions).run(web("CLICK", "Env, QUERY: open a socket"), {}, ctx)
    await sessions._sessions["socket"].page.wait_for_function("document.title == 'Socket closed'")
    # neither the link nor the page's image, fetch() and socket reached the other host name
    assert requests_for(site_server, "localhost") == []


@pytest.mark.browser
@needs_browser
async def test_a_redirect_to_a_disallowed_host_is_refused(
    site: str, site_server: _SiteServer, sessions: BrowserSessions
) -> None:
    port = site_server.server_address[1]
    away = f"http://localhost:{port}/second.html?via=redirect"
    ctx = links(site, "redirected")
    with pytest.raises(ToolError) as refused:
        await WebClick(sessions).run(web("CLICK", "Env, QUERY: redirect away"), {}, ctx)
    message = str(refused.value)
    assert message.startswith(f"CLICK on [a] Redirect away was refused: it leads to {away}, ")
    assert f"host localhost:{port} is a loopback" in message
    assert message.endswith(f"the page is still {site}/links.html")
    # to https, the proxy refuses the tunnel and the page comes back from the error page
    with pytest.raises(ToolError) as refused:
        await WebClick(sessions).run(web("CLICK", "Env, QUERY: secure detour"), {}, ctx)
    assert str(refused.value).startswith(
        f"CLICK on [a] Secure detour was refused: it leads to https://localhost:{port}, "
        f"which is refused: host localhost:{port} is a loopback"
    )
    assert str(refused.value).endswith(f"the page is still {site}/links.html")
    (state,) = await WebClick(sessions).run(web("CLICK", "Env, QUERY: redirect home"), {}, ctx)
    assert f"URL: {site}/second.html" in state

    start = f"{site}/redirect?to={away}"
    ctx = ToolContext(domain="web_agent", run_id="redirected-start", extras={"url": start})
    with pytest.raises(
        ToolError, match=rf"^cannot open {re.escape(start)}: it leads to {re.escape(away)}"
    ):
        await WebClick(sessions).run(web("CLICK", "Env, QUERY: x"), {}, ctx)
    assert (f"127.0.0.1:{port}", f"/redirect?to={away}") in site_server.seen
    assert requests_for(site_server, "localhost") == []


@pytest.mark.browser
@needs_browser
async def test_a_name_a_wildcard_allows_is_refused_when_it_resolves_to_a_private_address(
    site: str, site_server: _SiteServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = site_server.server_address[1]

    async def resolve(host: str, port: int) -> list[str]:
        assert host == "intranet.example"
        return ["127.0.0.1"]

    monkeypatch.setattr(guard_module, "resolve_host", resolve)
    sessions = BrowserSessions(allowed_hosts=["*", authority(site)])
    try:
        with pytest.raises(ToolError, match=r"host intranet\.example:\d+ resolves to 127\.0\.0\.1"):
            await WebClick(sessions).run(web("CLICK", "Env, QUERY: intranet"), {}, links(site, "a"))
        assert requests_for(site_server, "intranet.example") == []
    finally:
        await sessions.aclose()
    # listed exactly, the name is allowed wherever it points
    sessions = BrowserSessions(allowed_hosts=[authority(site), f"intranet.example:{port}"])
    try:
        (state,) = await WebClick(sessions).run(
            web("CLICK", "Env, QUERY: intranet"), {}, links(site, "b")
        )
        assert f"URL: http://intranet.example:{port}/second.html?via=dns" in state
        assert "Title: Privacy policy" in state
        assert requests_for(site_server, "intranet.example") == ["/second.html?via=dns"]
    finally:
        await sessions.aclose()
