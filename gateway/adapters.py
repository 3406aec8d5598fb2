"""LoRA adapters loaded into running vLLM servers, with the checks that make it safe.

vLLM loads an adapter at run time through `POST /v1/load_lora_adapter` when it was started
with `--enable-lora` and `VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`. Before asking it, we check
what vLLM would only find out later or never: the name is free on every replica of the
pool, the adapter was trained on the model the servers serve, and its rank fits their
`--max-lora-rank`. A load that fails on one replica is undone on the others.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import httpx

from gateway.route_table import LiveRoutes, Pool

log = logging.getLogger("gateway.adapters")
TIMEOUT_S = 120.0  # vLLM reads the weights before it answers


class AdapterError(Exception):
    """An adapter that cannot be loaded or unloaded; `status_code` for the HTTP answer."""

    def __init__(self, message: str, code: str, status_code: int = 422) -> None:
        super().__init__(message)
        self.code = code
        self.status_code = status_code


@dataclass(frozen=True)
class AdapterConfig:
    """What `adapter_config.json` says about an adapter."""

    path: str
    base_model: str
    rank: int

    @classmethod
    def read(cls, path: str) -> AdapterConfig:
        config_path = Path(path) / "adapter_config.json"
        try:
            config = json.loads(config_path.read_text())
            return cls(path, str(config["base_model_name_or_path"] or ""), int(config["r"]))
        except FileNotFoundError:
            raise AdapterError(
                f"no adapter at {path}: {config_path} does not exist; give the folder a PEFT "
                "save_pretrained wrote (adapter_config.json, adapter_model.safetensors), as the "
                "model servers and the gateway see it",
                "adapter_not_found",
            ) from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise AdapterError(
                f"{config_path} is not a LoRA adapter config (it needs r and "
                f"base_model_name_or_path): {type(exc).__name__}: {exc}",
                "adapter_invalid",
            ) from None


def _model_name(name_or_path: str) -> str:
    """`/models/gemma-3-270m/` and `google/gemma-3-270m` -> `gemma-3-270m`."""
    return PurePosixPath(name_or_path.rstrip("/")).name.lower()


@dataclass(frozen=True)
class ServedModels:
    """One server's `/v1/models`: its base model(s) and the adapters loaded on it."""

    url: str
    base: dict[str, str]  # served name -> root (the checkpoint it loaded)
    adapters: dict[str, str]  # adapter name -> root (its folder)


class AdapterLoader:
    """Loads and unloads an adapter on every replica of a pool."""

    def __init__(self, client: httpx.AsyncClient, api_key: str | None = None) -> None:
        self.client = client
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    async def served(self, url: str) -> ServedModels:
        try:
            response = await self.client.get(f"{url}/v1/models", headers=self.headers, timeout=10.0)
            response.raise_for_status()
            data = response.json()["data"]
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            raise AdapterError(
                f"cannot list the models of {url} (GET /v1/models: {type(exc).__name__}: {exc}); "
                "is the model server up? (GET /readyz says)",
                "model_server_unavailable",
                503,
            ) from None
        base: dict[str, str] = {}
        adapters: dict[str, str] = {}
        for model in data:
            (adapters if model.get("parent") else base)[str(model["id"])] = str(model.get("root"))
        return ServedModels(url, base, adapters)

    def check(self, adapter: AdapterConfig, name: str, pool: Pool, servers: list[ServedModels],
              replace: bool) -> None:  # fmt: skip
        for server in servers:
            if name in server.base:
                raise AdapterError(
                    f"{name!r} is the name of {server.url}'s base model; choose another name",
                    "adapter_name_taken",
                    409,
                )
            if name in server.adapters and not replace:
                raise AdapterError(
                    f"{server.url} already serves an adapter {name!r} (from "
                    f"{server.adapters[name]}); choose another name, or replace it (replace: "
                    "true, `--replace`) to load new weights under that name",
                    "adapter_name_taken",
                    409,
                )
            bases = {_model_name(root) for root in server.base.values()}
            if _model_name(adapter.base_model) not in bases:
                raise AdapterError(
                    f"{adapter.path} was trained on {adapter.base_model!r}, but {server.url} "
                    f"serves {', '.join(sorted(server.base.values()))}; load it into a pool of "
                    "its base model",
                    "adapter_base_mismatch",
                )
        if pool.max_lora_rank is not None and adapter.rank > pool.max_lora_rank:
            raise AdapterError(
                f"{adapter.path} has rank {adapter.rank}, above the pool's --max-lora-rank "
                f"{pool.max_lora_rank}; restart its servers with --max-lora-rank "
                f"{adapter.rank} or more (and max_lora_rank in the route file)",
                "adapter_rank_too_large",
            )

    async def _post(self, url: str, path: str, body: dict[str, Any]) -> httpx.Response:
        try:
            return await self.client.post(
                f"{url}{path}", json=body, headers=self.headers, timeout=TIMEOUT_S
            )
        except httpx.HTTPError as exc:
            raise AdapterError(
                f"POST {url}{path} failed: {type(exc).__name__}: {exc}",
                "model_server_unavailable",
                503,
            ) from None

    async def load(self, name: str, path: str, pool: Pool, *, replace: bool = False) -> list[str]:
        """Load `path` as `name` into every replica of `pool`; the URLs it was loaded into."""
        adapter = AdapterConfig.read(path)
        servers = [await self.served(url) for url in pool.urls]
        self.check(adapter, name, pool, servers, replace)
        done: list[str] = []
        for url in pool.urls:
            body = {"lora_name": name, "lora_path": path, "load_inplace": replace}
            response = await self._post(url, "/v1/load_lora_adapter", body)
            if response.status_code == 200:
                done.append(url)
                continue
            if not replace:  # all replicas or none
                for loaded in done:
                    await self._post(loaded, "/v1/unload_lora_adapter", {"lora_name": name})
            raise AdapterError(self._refusal(url, "load", response), "adapter_load_failed")
        return done

    async def unload(self, name: str, pool: Pool) -> list[str]:
        """Unload `name` from every replica of `pool` that serves it; those URLs."""
        servers = [await self.served(url) for url in pool.urls]
        holding = [s.url for s in servers if name in s.adapters]
        if not holding:
            raise AdapterError(
                f"no replica of the pool ({', '.join(pool.urls)}) serves an adapter {name!r}",
                "adapter_not_loaded",
                404,
            )
        for url in holding:
            response = await self._post(url, "/v1/unload_lora_adapter", {"lora_name": name})
            if response.status_code != 200:
                raise AdapterError(self._refusal(url, "unload", response), "adapter_unload_failed")
        return holding

    @staticmethod
    def _refusal(url: str, what: str, response: httpx.Response) -> str:
        if response.status_code in (404, 405):
            return (
                f"{url} has no /v1/{what}_lora_adapter ({response.status_code}): start its vLLM "
                "with --enable-lora and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True"
            )
        try:
            error = response.json().get("error", {})
            said = error.get("message") if isinstance(error, dict) else str(error)
        except (ValueError, AttributeError):
            said = None
        return f"{url} refused to {what} the adapter ({response.status_code}): " + (
            said or response.text[:500]
        )


async def restore(loader: AdapterLoader, live: LiveRoutes) -> list[tuple[str, str]]:
    """Load again the run-time routes' adapters a replica lost (a model-server restart
    forgets what was loaded at run time); the (url, adapter) pairs loaded."""
    table = live.table
    wanted: set[tuple[str, str, str]] = {
        (route.pool, route.model, route.adapter)
        for route in table.runtime_routes
        if route.adapter is not None
    }
    restored = []
    for pool_name, model, path in sorted(wanted):
        for url in table.pools[pool_name].urls:
            try:
                served = await loader.served(url)
            except AdapterError:
                continue  # down: /readyz says so; try again next time
            if model in served.adapters or model in served.base:
                continue
            if not await live.runtime_routes_to(model, pool_name):
                break  # unloaded meanwhile (by another gateway replica perhaps)
            body = {"lora_name": model, "lora_path": path, "load_inplace": False}
            try:
                response = await loader._post(url, "/v1/load_lora_adapter", body)
            except AdapterError:
                continue
            if response.status_code == 200:
                log.warning("%s had lost adapter %s (restarted?): loaded it again", url, model)
                restored.append((url, model))
            else:
                log.error("%s", AdapterLoader._refusal(url, "load", response))
    return restored
