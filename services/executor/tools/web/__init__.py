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
  `WebAllowList`) allows, checked on every request and redirect hop (`NetworkGuard`):
  model-written actions are hostile input, and a page they reach may lead anywhere.
- **offline** (Mind2Web style): when ``ctx.extras["html"]`` holds a page snapshot, or the
  first argument is a variable bound to HTML, the element is chosen the same way from the
  parsed snapshot and the result is ``{"tag", "operation", "text", "backend_node_id"}``
  without any browser, like the original's ``{"tag", "text"}`` step prediction.

The original Lumos evaluation ranked Mind2Web's candidate elements with a cross-encoder
(MindAct's candidate generator); the lexical ranking here needs no model.

The package, one module a seam (each imports only those above it in this list):

- `allow_list`: which URLs the browser may load (`WebAllowList`); standard library only
- `elements`: the page-element model, the actions' arguments, choosing an element
- `guard`: a browser context's route handler and checking proxy (`NetworkGuard`)
- `sessions`: the browser and its per-run contexts (`BrowserSessions`)
- `tools`: the tools themselves and `build_tools(settings)`

This file imports none of them, so importing the allow-list loads nothing else.
"""
