"""KnowledgeQuery: fetch the encyclopedia article(s) for a query as "title *** sentence" entries.

Result shape follows the original Lumos executor: when the query names an article, its first
40 sentences, each prefixed by the query; otherwise the top 5 search hits, 15 sentences each,
prefixed by the hit's title. Two backends: a local JSONL corpus ranked with BM25 (offline,
the default) and the MediaWiki HTTP API.
"""

from __future__ import annotations

import asyncio
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import bm25s
import httpx

from lumos.actions import Action, substitute_variables
from lumos.http import LazyAsyncClient
from lumos.jsonl import JsonlError, read_jsonl

from .base import Tool, ToolContext, ToolError
from .retrieve import TITLE_TEXT_SEP

DIRECT_HIT_SENTENCES = 40  # the original's get_page_obs(page, 40) for a page found directly
SEARCH_HIT_SENTENCES = 15  # ... and get_page_obs(page, 15) per search result
SEARCH_HITS = 5  # the original kept the first 5 search results

# A sentence ends at . ! or ? before a capital, digit or quote, except after an initial
# ("Roger O. Egeberg") or a common title abbreviation.
_SENTENCE_END_RE = re.compile(
    r"(?<=[.!?])(?<!\b[A-Z]\.)(?<!\bJr\.)(?<!\bDr\.)(?<!\bSt\.)(?<!\bMr\.)(?<!\bMs\.)"
    r"\s+(?=[A-Z0-9\"'(])"
)
_QUERY_PREFIX_RE = re.compile(r"^\s*query\s*:\s*", re.IGNORECASE)
_NORMALIZE_RE = re.compile(r"[^a-z0-9]+")


def split_sentences(text: str) -> list[str]:
    """Sentences of `text`, paragraph breaks respected."""
    sentences: list[str] = []
    for paragraph in text.splitlines():
        paragraph = paragraph.strip()
        if paragraph:
            sentences += [s.strip() for s in _SENTENCE_END_RE.split(paragraph) if s.strip()]
    return sentences


def article_entries(title: str, text: str, limit: int) -> list[str]:
    """The first `limit` sentences of an article as ``"title *** sentence"`` entries."""
    return [f"{title} {TITLE_TEXT_SEP} {s}" for s in split_sentences(text)[:limit]]


def normalize_title(title: str) -> str:
    return _NORMALIZE_RE.sub(" ", title.lower()).strip()


class KnowledgeBackend(Protocol):
    deterministic: bool

    async def query(self, query: str) -> list[str]:
        """Entries ``"title *** sentence"`` for `query`; raise ToolError when nothing matches."""
        ...


@dataclass(frozen=True)
class Article:
    title: str
    text: str


def _article(record: Any) -> Article:
    """A corpus line's article; a line without a title and a text is refused."""
    try:
        return Article(str(record["title"]), str(record["text"]))
    except (KeyError, TypeError) as exc:
        raise ValueError(str(exc)) from exc


class OfflineCorpus:
    """A JSONL corpus of ``{"title", "text"}`` articles, searched with BM25.

    The index is built once, on the first query, under a lock (several requests may arrive
    together), in a worker thread so the event loop keeps serving.
    """

    deterministic = True

    def __init__(self, corpus_path: str | Path) -> None:
        self.corpus_path = Path(corpus_path)
        self._lock = threading.Lock()
        self._articles: list[Article] | None = None
        self._by_title: dict[str, int] = {}
        self._retriever: bm25s.BM25 | None = None
        self._vocab: dict[str, int] = {}

    def _load(self) -> None:
        with self._lock:
            if self._retriever is not None:
                return
            try:
                articles = [a for _, a in read_jsonl(self.corpus_path, _article)]
            except OSError as exc:
                raise ToolError(
                    f"knowledge corpus {self.corpus_path} cannot be read ({exc}); "
                    "set the corpus path to a JSONL file of {title, text} articles"
                ) from exc
            except JsonlError as exc:
                raise ToolError(
                    f"knowledge corpus {self.corpus_path} line {exc.line} is not a "
                    f'{{"title", "text"}} JSON object: {exc.reason}'
                ) from exc
            if not articles:
                raise ToolError(f"knowledge corpus {self.corpus_path} holds no articles")
            # The title counts twice: a query naming an entity should find its own article
            # before articles that merely mention it.
            corpus = bm25s.tokenize(
                [f"{a.title} {a.title} {a.text}" for a in articles],
                stopwords="en",
                show_progress=False,
            )
            retriever = bm25s.BM25()
            retriever.index(corpus, show_progress=False)
            self._vocab = corpus.vocab
            self._articles = articles
            self._by_title = {normalize_title(a.title): i for i, a in enumerate(articles)}
            self._retriever = retriever

    def search(self, query: str, k: int = SEARCH_HITS) -> list[Article]:
        """Up to `k` articles matching `query`, best first (blocking)."""
        self._load()
        assert self._retriever is not None and self._articles is not None
        tokens = bm25s.tokenize([query], stopwords="en", show_progress=False, return_ids=False)[0]
        tokens = [t for t in tokens if t in self._vocab]
        if not tokens:
            return []
        scores = self._retriever.get_scores(tokens)
        order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
        return [self._articles[i] for i in order[:k] if scores[i] > 0]

    def lookup(self, query: str) -> list[str]:
        """The blocking body of `query`."""
        self._load()
        assert self._articles is not None
        exact = self._by_title.get(normalize_title(query))
        if exact is not None:
            return article_entries(query, self._articles[exact].text, DIRECT_HIT_SENTENCES)
        hits = self.search(query)
        if not hits:
            raise ToolError(f"no article in the knowledge corpus matches {query!r}")
        entries: list[str] = []
        for article in hits:
            entries += article_entries(article.title, article.text, SEARCH_HIT_SENTENCES)
        return entries

    async def query(self, query: str) -> list[str]:
        if self._retriever is None:
            return await asyncio.to_thread(self.lookup, query)
        return self.lookup(query)


class WikipediaBackend:
    """Wikipedia through the MediaWiki Action API (``/w/api.php``): page extracts and search.

    Asks for the page titled like the query first (redirects followed); a missing or
    disambiguation page falls back to full-text search, as Wikipedia's own search page
    did for the original.
    """

    deterministic = False  # Wikipedia changes; do not cache across runs

    def __init__(
        self,
        api_url: str = "https://en.wikipedia.org/w/api.php",
        *,
        client: httpx.AsyncClient | None = None,
        timeout_s: float = 10.0,
        user_agent: str = "lumos-serve-executor/0.1 (KnowledgeQuery tool)",
    ) -> None:
        self.api_url = api_url
        self.timeout_s = timeout_s
        self._headers = {"User-Agent": user_agent}
        self._client = LazyAsyncClient(client)

    def _http(self) -> httpx.AsyncClient:
        return self._client.get()

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _get(self, params: dict[str, Any]) -> dict[str, Any]:
        params = {**params, "format": "json", "formatversion": "2"}
        try:
            response = await self._http().get(
                self.api_url, params=params, headers=self._headers, timeout=self.timeout_s
            )
        except httpx.TimeoutException as exc:
            raise ToolError(
                f"Wikipedia API at {self.api_url} did not answer within {self.timeout_s}s; "
                "retry later or use the offline knowledge backend"
            ) from exc
        except httpx.HTTPError as exc:
            raise ToolError(f"Wikipedia API at {self.api_url} is unreachable: {exc}") from exc
        if response.status_code != 200:
            raise ToolError(
                f"Wikipedia API at {self.api_url} answered HTTP {response.status_code}; "
                "expected 200"
            )
        try:
            body = response.json()
        except ValueError as exc:
            raise ToolError(f"Wikipedia API at {self.api_url} answered non-JSON") from exc
        if not isinstance(body, dict):
            raise ToolError(f"Wikipedia API at {self.api_url} answered an unexpected document")
        if "error" in body:
            error = body["error"]
            info = error.get("info", error) if isinstance(error, dict) else error
            raise ToolError(f"Wikipedia API error: {info}")
        return body

    async def _page(self, title: str) -> tuple[str, str] | None:
        """(title, plain text) of the article `title`, or None if missing or a disambiguation."""
        body = await self._get(
            {
                "action": "query",
                "prop": "extracts|pageprops",
                "explaintext": "1",
                "redirects": "1",
                "titles": title,
            }
        )
        pages = body.get("query", {}).get("pages", [])
        if not pages:
            return None
        page = pages[0]
        if page.get("missing") or page.get("invalid"):
            return None
        if "disambiguation" in page.get("pageprops", {}):
            return None
        text = page.get("extract") or ""
        if not text.strip() or "may refer to:" in text:
            return None
        return page.get("title", title), _clean_extract(text)

    async def _search(self, query: str) -> list[str]:
        body = await self._get(
            {"action": "query", "list": "search", "srsearch": query, "srlimit": str(SEARCH_HITS)}
        )
        return [hit["title"] for hit in body.get("query", {}).get("search", []) if "title" in hit]

    async def query(self, query: str) -> list[str]:
        direct = await self._page(query)
        if direct is not None:
            return article_entries(query, direct[1], DIRECT_HIT_SENTENCES)
        titles = await self._search(query)
        pages = await asyncio.gather(*(self._page(t) for t in titles))
        entries: list[str] = []
        for page in pages:
            if page is not None:
                entries += article_entries(page[0], page[1], SEARCH_HIT_SENTENCES)
        if not entries:
            raise ToolError(f"Wikipedia has no article matching {query!r}")
        return entries


def _clean_extract(text: str) -> str:
    """Drop section headings and short lines (captions, list stubs), as the original kept only
    paragraphs of more than 10 words."""
    lines = [ln.strip() for ln in text.splitlines()]
    return "\n".join(ln for ln in lines if not ln.startswith("==") and len(ln.split()) > 10)


class KnowledgeQuery(Tool):
    name = "KnowledgeQuery"
    signature = "KnowledgeQuery(query)"
    description = "Capture the relevant webpages according to the query"
    timeout_s = 30.0

    def __init__(self, backend: KnowledgeBackend) -> None:
        self.backend = backend
        self.deterministic = backend.deterministic

    async def run(
        self, action: Action, variables: dict[str, Any], ctx: ToolContext
    ) -> tuple[Any, ...]:
        try:
            query = substitute_variables(action.args, variables)
        except KeyError as exc:
            raise ToolError(
                f"KnowledgeQuery: unknown variable {exc.args[0]}; bind it first"
            ) from exc
        query = _QUERY_PREFIX_RE.sub("", query).strip()
        if not query:
            raise ToolError("KnowledgeQuery: the query is empty; expected KnowledgeQuery(entity)")
        return (await self.backend.query(query),)
