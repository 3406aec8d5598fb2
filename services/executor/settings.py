"""The executor process's configuration, read from ``LUMOS_EXECUTOR_*`` environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from .tools.web.allow_list import WebAllowList

SHIPPED_CORPUS = Path(__file__).resolve().parents[2] / "data" / "corpus" / "wiki_mini.jsonl"


class ExecutorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LUMOS_EXECUTOR_", extra="ignore")

    host: str = "0.0.0.0"
    port: int = 8003
    log_level: str = "info"

    # every tool runs under a timeout; a tool's own default applies unless overridden here
    tool_timeout_s: float | None = Field(
        default=None, gt=0, description="overrides every tool's default timeout when set"
    )
    tool_timeouts: dict[str, float] = Field(
        default_factory=dict, description='per-tool timeouts, JSON: {"SolveEquation": 20}'
    )
    # maths: sympy work runs in worker processes that are killed when a call times out
    math_workers: int = Field(default=2, ge=0, description="0: run sympy in threads instead")
    math_worker_memory_mb: int = Field(default=1024, ge=64)

    # Code: model-written Python in a sandbox
    code_backend: Literal["process", "docker"] = "process"
    code_timeout_s: float = Field(default=10.0, gt=0)
    code_cpu_s: int = Field(default=5, ge=1)
    code_memory_mb: int = Field(default=256, ge=32)
    code_file_size_mb: int = Field(default=8, ge=1)
    code_max_processes: int = Field(default=64, ge=1)
    code_max_open_files: int = Field(default=64, ge=16)
    code_output_bytes: int = Field(default=64 * 1024, ge=1024)
    code_max_source_chars: int = Field(default=20_000, ge=100)
    code_concurrency: int = Field(default=4, ge=1)
    code_run_as_uid: int | None = Field(
        default=65534, description="drop to this uid in the sandbox when started as root"
    )
    code_docker_image: str = "python:3.11-slim"
    code_docker_cpus: float = 1.0

    # result cache for deterministic tools (optional)
    redis_url: str | None = None
    cache_ttl_s: int = Field(default=86_400, ge=1)

    # complex QA / web / webshop tools (read by those tools' builders)
    knowledge_backend: Literal["offline", "wikipedia"] = "offline"
    corpus_path: Path | None = Field(
        default_factory=lambda: SHIPPED_CORPUS if SHIPPED_CORPUS.exists() else None,
        description="JSONL of {title, text} for the offline KnowledgeQuery backend; "
        "defaults to the small corpus shipped in data/corpus/",
    )
    wikipedia_api_url: str = "https://en.wikipedia.org/w/api.php"
    qa_base_url: str | None = None
    qa_model: str = "lumos-qa"
    dense_model_path: Path | None = None
    webshop_url: str | None = None
    browser_path: str = "/usr/bin/chromium"
    web_allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="hosts the web tools' live browser may load, comma-separated: host, "
        "host:port, *.domain (its subdomains) or * (any public host); loopback and private "
        "addresses only by an exact entry; empty: none (offline snapshots, about:blank, data:)",
    )

    @field_validator("web_allowed_hosts", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("web_allowed_hosts")
    @classmethod
    def _valid_hosts(cls, value: list[str]) -> list[str]:
        if not value:
            return value
        return list(WebAllowList(value).entries)
