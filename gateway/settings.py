"""The gateway's one settings class, read from `LUMOS_*` environment variables.

Each field's description is the documentation of its variable (the README table of
settings is built from them).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from lumos.agent import DEFAULT_MAX_STEPS
from lumos.domains import DOMAINS, UnknownDomainError, resolve_domain
from lumos.trace import Formulation

UrlList = Annotated[list[str], NoDecode]


def _split_commas(value: object) -> object:
    if isinstance(value, str):
        return [part.strip().rstrip("/") for part in value.split(",") if part.strip()]
    return value


class GatewaySettings(BaseSettings):
    """Configuration of one gateway process (API and background workers)."""

    model_config = SettingsConfigDict(env_prefix="LUMOS_", extra="ignore")

    host: str = Field(default="0.0.0.0", description="Address `python -m gateway` listens on.")
    port: int = Field(
        default=8000, ge=1, le=65535, description="Port `python -m gateway` listens on."
    )
    log_level: str = Field(
        default="info", description="uvicorn log level (debug, info, warning, error)."
    )

    redis_url: str = Field(
        default="redis://localhost:6379/0",
        description="Redis holding every run (hash + event stream), the run queue and the "
        "idempotency and concurrency keys; the only state of the gateway.",
    )
    planner_urls: UrlList = Field(
        default=["http://localhost:8001"],
        description="Base URL(s) of the planning model server(s) (OpenAI-compatible, e.g. vLLM), "
        "comma-separated. With several, every call of one run goes to the same replica "
        "(hash of the run id) so its prompt prefix stays in that replica's cache.",
    )
    grounder_urls: UrlList = Field(
        default=["http://localhost:8001"],
        description="Base URL(s) of the grounding model server(s), comma-separated; same "
        "per-run affinity as the planner.",
    )
    planner_model: str = Field(
        default="lumos-plan", description="Served model name of the planner."
    )
    grounder_model: str = Field(
        default="lumos-ground", description="Served model name of the grounder."
    )
    planner_model_onetime: str | None = Field(
        default=None,
        description="Served model name of the planner for onetime runs (Lumos-O: the paper "
        "trains a separate checkpoint per formulation); unset: LUMOS_PLANNER_MODEL.",
    )
    grounder_model_onetime: str | None = Field(
        default=None,
        description="Served model name of the grounder for onetime runs; unset: "
        "LUMOS_GROUNDER_MODEL.",
    )

    trained_domains: UrlList = Field(
        default=[],
        description="Domains the planner and grounder models above were trained for, "
        "comma-separated (complex_qa, maths, web_agent, webshop; a dataset such as gsm8k "
        "names its domain); runs of other domains use LUMOS_UNTRAINED_MODEL. Empty: all "
        "domains (the released checkpoints). `/readyz` lists them under `domains`.",
    )
    untrained_model: str | None = Field(
        default=None,
        description="Served model name used as both planner and grounder (with the domain's "
        "prompts) for runs of domains not in LUMOS_TRAINED_DOMAINS, e.g. the base model "
        "`lumos-base`; unset: the models above serve every domain.",
    )

    routes_file: str | None = Field(
        default=None,
        description="A route table (YAML or TOML): which model-server pool and served model "
        "plan and ground each domain (or dataset), formulation and module (README: routes). "
        "Reloaded when it changes and on SIGHUP. Unset: one route per module from "
        "LUMOS_PLANNER_URLS / LUMOS_PLANNER_MODEL and the settings above.",
    )
    routes_poll_s: float = Field(
        default=2.0,
        gt=0,
        description="How often the route file (and the routes of adapters loaded at run time, "
        "in Redis) is checked for changes (seconds).",
    )

    def is_trained(self, domain: str) -> bool:
        """Whether the configured planner and grounder were trained for `domain`."""
        return not self.trained_domains or resolve_domain(domain).name in self.trained_domains

    def module_models(self, formulation: str, domain: str | None = None) -> tuple[str, str]:
        """(planner, grounder) served model names for runs of `formulation` in `domain`.

        `domain` None: the trained models (what runs of a trained domain get).
        """
        if domain is not None and self.untrained_model and not self.is_trained(domain):
            return self.untrained_model, self.untrained_model
        if formulation == "onetime":
            return (
                self.planner_model_onetime or self.planner_model,
                self.grounder_model_onetime or self.grounder_model,
            )
        return self.planner_model, self.grounder_model

    def models_in_use(self) -> tuple[list[str], list[str]]:
        """Every (planner, grounder) served model name some run may use, sorted."""
        pairs = [self.module_models(f, d) for f in Formulation for d in DOMAINS]
        return sorted({p for p, _ in pairs}), sorted({g for _, g in pairs})

    def domain_report(self) -> dict[str, Any]:
        """Which domains run on trained modules and which on the untrained fallback."""
        trained = [d for d in sorted(DOMAINS) if self.is_trained(d)]
        untrained = [d for d in sorted(DOMAINS) if not self.is_trained(d)]
        return {
            "trained": trained,
            "untrained": untrained,
            "untrained_model": self.untrained_model if untrained else None,
        }

    executor_url: str = Field(
        default="http://localhost:8003",
        description="Base URL of the executor service (POST /v1/execute).",
    )
    model_api_key: str | None = Field(
        default=None,
        description="Bearer token sent to the model servers (vLLM --api-key); unset: none.",
    )
    regex_field: Literal["structured_outputs", "guided_regex"] = Field(
        default="structured_outputs",
        description="How the grounder's action grammar is sent to vLLM: structured_outputs "
        "(vLLM >= 0.11) or guided_regex (older vLLM).",
    )
    constrain_grounding: bool = Field(
        default=True,
        description="Constrain the grounder's output to its domain's action grammar.",
    )
    module_timeout_s: float = Field(
        default=60.0, gt=0, description="Timeout of one request to a model server or the executor."
    )
    module_max_retries: int = Field(
        default=3, ge=0, description="Retries of a model request on connection errors, 429 and 5xx."
    )
    modules: str = Field(
        default="remote",
        description="Where the planner, grounder and executor are: `remote` (the URLs above), "
        "or `scripted:<path to a replay JSON>` - a test and benchmark harness only: the "
        "recorded `planner_outputs`, `grounder_outputs` and `tool_results` answer every run "
        "(a resumed run skips the outputs of its completed steps), each module call "
        "sleeping the file's optional `delay_s` seconds.",
    )

    api_keys_sha256: UrlList = Field(
        default=[],
        description="Hex SHA-256 digests of the accepted API keys, comma-separated; empty: no "
        "authentication. Clients send `Authorization: Bearer <key>` or `X-API-Key: <key>`.",
    )
    operator_keys_sha256: UrlList = Field(
        default=[],
        description="Hex SHA-256 digests of the keys that may load and unload adapters "
        "(POST /agent/adapters), comma-separated; empty: any key of LUMOS_API_KEYS_SHA256.",
    )
    max_task_chars: int = Field(
        default=4000, ge=1, description="Longest task accepted (characters)."
    )
    max_request_bytes: int = Field(
        default=262_144, ge=1024, description="Largest request body accepted (bytes; 413 above)."
    )
    max_steps: int = Field(
        default=DEFAULT_MAX_STEPS,
        ge=1,
        description="Default and cap of a run's plan/ground/execute iterations; a request may "
        "ask for fewer.",
    )
    run_deadline_s: float = Field(
        default=300.0,
        gt=0,
        description="Default and cap of a run's deadline (seconds from its first start); past "
        "it the run fails with reason deadline_exceeded.",
    )
    max_concurrent_runs_per_key: int = Field(
        default=32,
        ge=0,
        description="Unfinished runs one API key may have at once (429 above); without "
        "authentication all callers share one budget; 0: no cap.",
    )
    max_queued_runs: int = Field(
        default=256,
        ge=0,
        description="Runs that may wait for a worker in the whole deployment (the shared "
        "queue, every replica counted); a run submitted beyond it is refused with 429 "
        "queue_full and Retry-After instead of waiting longer than any client would; 0: no cap.",
    )
    idempotency_ttl_s: int = Field(
        default=86_400, ge=1, description="How long an Idempotency-Key maps to its run (seconds)."
    )
    run_ttl_s: int = Field(
        default=7 * 86_400,
        ge=0,
        description="How long a finished run's hash and events stay in Redis (seconds); 0: forever.",
    )

    worker_concurrency: int = Field(
        default=16,
        ge=0,
        description="Runs this process executes at once from the shared queue; 0: API only. "
        "Every run (sync, stream, background) is executed by some replica's worker.",
    )
    claim_idle_ms: int = Field(
        default=30_000,
        ge=100,
        description="A queued run whose worker has not renewed its lease for this long is "
        "claimed by another worker and resumed from its last completed step. A worker renews "
        "its leases every third of it from a thread, so a slow (CPU-starved) worker keeps "
        "its runs; one whose event loop is stuck for 10 times this (at least 30 s) loses them.",
    )
    max_attempts: int = Field(
        default=3,
        ge=1,
        description="Workers that may start a run before it fails with reason "
        "too_many_attempts (guards against a run that kills every worker).",
    )

    @field_validator(
        "planner_urls",
        "grounder_urls",
        "api_keys_sha256",
        "operator_keys_sha256",
        "trained_domains",
        mode="before",
    )
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        return _split_commas(value)

    @field_validator("planner_urls", "grounder_urls")
    @classmethod
    def _at_least_one_url(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("give at least one base URL, e.g. http://localhost:8001")
        return value

    @field_validator("untrained_model")
    @classmethod
    def _empty_is_unset(cls, value: str | None) -> str | None:
        return value or None

    @field_validator("trained_domains")
    @classmethod
    def _known_domains(cls, value: list[str]) -> list[str]:
        try:
            return sorted({resolve_domain(name.strip()).name for name in value})
        except UnknownDomainError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("routes_file")
    @classmethod
    def _empty_file_is_unset(cls, value: str | None) -> str | None:
        return value or None

    @field_validator("api_keys_sha256", "operator_keys_sha256")
    @classmethod
    def _hex_digests(cls, value: list[str]) -> list[str]:
        out = []
        for digest in value:
            d = digest.lower()
            if len(d) != 64 or any(c not in "0123456789abcdef" for c in d):
                raise ValueError(
                    f"{digest[:12]!r}... is not a hex SHA-256 digest; store "
                    "`printf %s KEY | sha256sum`, not the key itself"
                )
            out.append(d)
        return out

    @field_validator("modules")
    @classmethod
    def _modules_spec(cls, value: str) -> str:
        if value != "remote" and not value.startswith("scripted:"):
            raise ValueError(f"unknown modules {value!r}; expected remote or scripted:<path>")
        return value

    @property
    def heartbeat_s(self) -> float:
        return self.claim_idle_ms / 3000
