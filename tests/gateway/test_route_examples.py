"""The example route files (routes/) against the deployments they are written for: each
route names a server that the compose file, the StatefulSet naming or `make run` really
starts, serving the released checkpoint (or adapter) of that domain, module and formulation."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.route_table import NoRouteError, RouteTable
from lumos.domains import DOMAINS
from services.modelserver.adapters import (
    ADAPTERS,
    BASE_SERVED_NAME,
    adapter_folders,
    max_rank,
    served_name,
    server_env,
)
from services.modelserver.registry import RELEASED, checkpoint
from tests.deploy.tools import require_binary

REPO = Path(__file__).resolve().parents[2]
ROUTES = REPO / "routes"
FORMULATIONS = ("iterative", "onetime")
MODULES = {"planner": "plan", "grounder": "ground"}
# WebShop has no checkpoint of its own; it runs on the web agent's, as an unseen task.
FAMILY = {"complex_qa": "complex_qa", "maths": "maths", "web_agent": "web_agent", "webshop": "web_agent"}  # fmt: skip


def run_local() -> Any:
    spec = importlib.util.spec_from_file_location("run_local", REPO / "scripts" / "run_local.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def every_run() -> list[tuple[str, str, str]]:
    return [(d, f, m) for d in sorted(DOMAINS) for f in FORMULATIONS for m in MODULES]


@pytest.mark.parametrize("path", sorted(ROUTES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_is_a_route_table(path: Path) -> None:
    table = RouteTable.from_file(path)
    assert table.routes and not table.ignored


def _compose_servers(domain: str) -> dict[int, dict[str, Any]]:
    """Host port -> {checkpoint, served, profiles} of docker-compose.domain-host.yml for a domain."""
    compose = yaml.safe_load((REPO / "docker-compose.domain-host.yml").read_text())
    out = {}
    for spec in compose["services"].values():
        command = [str(a) for a in spec["command"]]
        model = re.sub(r"\$\{LUMOS_DOMAIN:\?[^}]*\}", domain, command[0])
        served = command[command.index("--served-model-name") + 1]
        (port,) = (int(p.split(":")[0]) for p in spec["ports"])
        out[port] = {"checkpoint": model, "served": served, "profiles": spec.get("profiles", [])}
    return out


def test_per_domain_compose_routes_reach_each_domains_released_checkpoints(monkeypatch):
    for variable in ("LUMOS_COMPLEX_QA_HOST", "LUMOS_MATHS_HOST", "LUMOS_WEB_AGENT_HOST"):
        monkeypatch.delenv(variable, raising=False)
    table = RouteTable.from_file(ROUTES / "released-per-domain.compose.yaml")
    hosts = {"complex_qa": "complex-qa-gpu", "maths": "maths-gpu", "web_agent": "web-agent-gpu"}
    routed = 0
    for domain, formulation, module in every_run():
        family = FAMILY[domain]
        if (family, formulation) not in RELEASED:  # web agent onetime: refused, not guessed
            with pytest.raises(NoRouteError):
                table.resolve(domain, formulation, module)
            continue
        route = table.resolve(domain, formulation, module)
        (url,) = route.urls
        host, port = re.fullmatch(r"http://([\w.-]+):(\d+)", url).groups()  # type: ignore[union-attr]
        assert host == hosts[family], (domain, formulation, module, url)
        server = _compose_servers(family)[int(port)]
        assert server["checkpoint"] == checkpoint(family, MODULES[module], formulation)
        assert server["served"] == route.model
        assert (formulation == "onetime") == (server["profiles"] == ["onetime"])
        assert route.trained == (domain == family)
        routed += 1
    assert routed == 12  # 2 modules x (complex_qa 2 + maths 2 + web_agent 1 + webshop 1)
    monkeypatch.setenv("LUMOS_MATHS_HOST", "10.0.0.7")
    moved = RouteTable.from_file(ROUTES / "released-per-domain.compose.yaml")
    assert moved.resolve("gsm8k", "onetime", "planner").urls == ("http://10.0.0.7:8003",)


def test_per_domain_kubernetes_routes_are_the_compose_routes_on_statefulset_names():
    compose = RouteTable.from_file(ROUTES / "released-per-domain.compose.yaml")
    k8s = RouteTable.from_file(ROUTES / "released-per-domain.k8s.yaml")
    for domain, formulation, module in every_run():
        try:
            want = compose.resolve(domain, formulation, module)
        except NoRouteError:
            with pytest.raises(NoRouteError):
                k8s.resolve(domain, formulation, module)
            continue
        got = k8s.resolve(domain, formulation, module)
        assert (got.pool, got.model, got.trained) == (want.pool, want.model, want.trained)
        family = FAMILY[domain]
        assert got.pool == f"{family}-{MODULES[module]}-{formulation}"
        # StatefulSet <name> behind the headless Service <name>: replica 0 at <name>-0.<name>
        name = "lumos-" + got.pool.replace("_", "-")
        assert got.urls == (f"http://{name}-0.{name}:8000",)
        assert len(name) <= 52 and re.fullmatch(r"[a-z0-9-]+", name)  # a StatefulSet name


def test_unified_routes_are_docker_composes_planner_and_grounder():
    table = RouteTable.from_file(ROUTES / "unified.yaml")
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
    for domain, formulation, module in every_run():
        if formulation == "onetime":  # no unified onetime checkpoint was released
            assert ("unified", "onetime") not in RELEASED
            with pytest.raises(NoRouteError):
                table.resolve(domain, formulation, module)
            continue
        route = table.resolve(domain, formulation, module)
        service = compose["planner" if module == "planner" else "grounder"]
        command = [str(a) for a in service["command"]]
        assert route.urls == (f"http://{'planner' if module == 'planner' else 'grounder'}:8000",)
        assert command[command.index("--port") + 1] == "8000"
        assert command[command.index("--served-model-name") + 1] == route.model
        default = re.fullmatch(r"\$\{\w+:-(.+)\}", command[0]).group(1)  # type: ignore[union-attr]
        assert default == checkpoint("unified", MODULES[module], "iterative")


def test_make_run_routes_maths_to_lumos_mini_and_the_rest_to_the_base_model():
    local = run_local()
    assert local.MINI_ROUTES == ROUTES / "lumos-mini.yaml"
    table = local.routes_table(str(local.MINI_ROUTES), "http://127.0.0.1:8555")
    folders = adapter_folders(REPO / "models" / "lumos-mini")
    served = {BASE_SERVED_NAME, *folders}
    for domain in ("maths", "gsm8k", "svamp", "complex_qa", "strategyqa", "web_agent", "webshop"):
        for formulation in FORMULATIONS:
            for module, short in MODULES.items():
                route = table.resolve(domain, formulation, module)
                assert route.urls == ("http://127.0.0.1:8555",)
                assert route.model in served  # what make run's server serves
                if domain in ("maths", "gsm8k", "svamp"):
                    assert route.model == served_name(f"{short}_{formulation}")
                    assert route.trained
                else:
                    assert (route.model, route.trained) == (BASE_SERVED_NAME, False)
    assert {served_name(a) for a in ADAPTERS} == set(folders)
    assert table.pools["local"].max_lora_rank == int(
        server_env(folders)["LUMOS_MODELSERVER_MAX_LORA_RANK"]
    )
    assert max_rank(folders) <= (table.pools["local"].max_lora_rank or 0)
    assert local.domains_line(table) == (
        "trained modules: maths; complex_qa, web_agent, webshop run on lumos-base with their "
        "domain's prompts"
    )
    assert local.domains_line(None).startswith("no trained modules")


def test_docker_compose_reads_the_domain_host_file_and_needs_its_domain():
    binary = require_binary("docker-compose", "docker-compose")
    host_file = ["-f", str(REPO / "docker-compose.domain-host.yml")]

    def config(*args: str, domain: str | None) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k != "LUMOS_DOMAIN"}
        if domain is not None:
            env["LUMOS_DOMAIN"] = domain
        return subprocess.run(
            [binary, *host_file, *args, "config"], cwd=REPO, env=env, capture_output=True,
            text=True, timeout=60, check=False,
        )  # fmt: skip

    full = config("--profile", "onetime", domain="maths")
    assert full.returncode == 0, full.stderr
    services = yaml.safe_load(full.stdout)["services"]
    assert services["plan-onetime"]["command"][0] == checkpoint("maths", "plan", "onetime")
    web = config(domain="web_agent")  # no onetime checkpoints: their profile stays off
    assert web.returncode == 0, web.stderr
    started = [
        n for n, s in yaml.safe_load(web.stdout)["services"].items() if not s.get("profiles")
    ]
    assert sorted(started) == ["ground-iterative", "plan-iterative"]
    missing = config(domain=None)
    assert missing.returncode != 0 and "set LUMOS_DOMAIN" in missing.stderr
