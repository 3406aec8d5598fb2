"""The route table: what a file may say, which route a run gets, reloads, adapter checks."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from gateway.adapters import AdapterConfig, AdapterError, AdapterLoader, ServedModels
from gateway.modules import RemoteModules, replica_index
from gateway.route_table import (
    LiveRoutes,
    NoRouteError,
    Pool,
    RouteFileError,
    RouteTable,
)
from gateway.settings import GatewaySettings
from lumos.domains import DATASET_DOMAINS, DOMAINS

YAML = """
pools:
  maths: {urls: ["http://maths-0:8000", "http://maths-1:8000/"], max_lora_rank: 16}
  base: {urls: ["http://base:8000"]}
routes:
  - {domain: maths, module: planner, pool: maths, model: plan-maths}
  - {domain: maths, module: grounder, pool: maths, model: ground-maths}
  - {domain: maths, formulation: onetime, module: planner, pool: maths, model: plan-maths-o}
  - {domain: gsm8k, module: planner, pool: maths, model: plan-gsm8k,
     sampling: {max_tokens: 64, top_p: 0.9}}
  - {module: "*", pool: base, model: base, trained: false}
"""


def write(tmp_path: Path, text: str, name: str = "routes.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_settings_without_a_file_route_as_the_single_pool_settings_did():
    s = GatewaySettings(
        planner_urls="http://p0:8001,http://p1:8001",
        grounder_urls="http://g:8002",
        planner_model_onetime="plan-o",
        trained_domains="maths",
        untrained_model="base",
    )
    table = RouteTable.from_settings(s)
    for domain in [*DOMAINS, *DATASET_DOMAINS]:
        for formulation in ("iterative", "onetime"):
            planner, grounder = s.module_models(formulation, domain)
            route = table.resolve(domain, formulation, "planner")
            assert (route.model, route.urls) == (planner, ("http://p0:8001", "http://p1:8001"))
            route = table.resolve(domain, formulation, "grounder")
            assert (route.model, route.urls) == (grounder, ("http://g:8002",))
    assert table.domain_report() == s.domain_report()
    assert RouteTable.from_settings(GatewaySettings()).domain_report() == {
        "trained": sorted(DOMAINS),
        "untrained": [],
        "untrained_model": None,
    }


def test_the_most_specific_route_wins(tmp_path):
    table = RouteTable.from_file(write(tmp_path, YAML))
    got = {
        (d, f, m): table.resolve(d, f, m).model
        for d in ("gsm8k", "svamp", "maths", "hotpotqa")
        for f in ("iterative", "onetime")
        for m in ("planner", "grounder")
    }
    assert got == {
        # a dataset's own route before its domain's, whatever the formulation
        ("gsm8k", "iterative", "planner"): "plan-gsm8k",
        ("gsm8k", "onetime", "planner"): "plan-gsm8k",
        ("gsm8k", "iterative", "grounder"): "ground-maths",
        ("gsm8k", "onetime", "grounder"): "ground-maths",
        # the domain's formulation-specific route before its any-formulation one
        ("svamp", "iterative", "planner"): "plan-maths",
        ("svamp", "onetime", "planner"): "plan-maths-o",
        ("svamp", "iterative", "grounder"): "ground-maths",
        ("svamp", "onetime", "grounder"): "ground-maths",
        ("maths", "iterative", "planner"): "plan-maths",
        ("maths", "onetime", "planner"): "plan-maths-o",
        ("maths", "iterative", "grounder"): "ground-maths",
        ("maths", "onetime", "grounder"): "ground-maths",
        # no route of its domain: the catch-all
        ("hotpotqa", "iterative", "planner"): "base",
        ("hotpotqa", "onetime", "planner"): "base",
        ("hotpotqa", "iterative", "grounder"): "base",
        ("hotpotqa", "onetime", "grounder"): "base",
    }
    route = table.resolve("gsm8k", "iterative", "planner")
    assert route.urls == ("http://maths-0:8000", "http://maths-1:8000")
    assert route.sampling == {"max_tokens": 64, "top_p": 0.9}
    assert route.key == "gsm8k/*/planner"
    assert table.domain_report() == {
        "trained": ["maths"],
        "untrained": ["complex_qa", "web_agent", "webshop"],
        "untrained_model": "base",
    }


def test_a_run_without_a_route_is_refused_naming_the_missing_route(tmp_path):
    text = YAML.split('  - {module: "*"')[0]  # no catch-all
    table = RouteTable.from_file(write(tmp_path, text))
    with pytest.raises(NoRouteError) as info:
        table.resolve("strategyqa", "onetime", "grounder")
    assert info.value.key == "strategyqa/onetime/grounder"
    assert "no route for strategyqa/onetime/grounder" in str(info.value)
    assert "complex_qa" in str(info.value)  # the domain a route could name


def test_toml_and_yaml_files_make_the_same_table(tmp_path):
    toml = """
[pools.maths]
urls = ["http://maths-0:8000", "http://maths-1:8000/"]
max_lora_rank = 16
[pools.base]
urls = ["http://base:8000"]

[[routes]]
domain = "maths"
module = "planner"
pool = "maths"
model = "plan-maths"
[[routes]]
domain = "maths"
module = "grounder"
pool = "maths"
model = "ground-maths"
[[routes]]
domain = "maths"
formulation = "onetime"
module = "planner"
pool = "maths"
model = "plan-maths-o"
[[routes]]
domain = "gsm8k"
module = "planner"
pool = "maths"
model = "plan-gsm8k"
sampling = {max_tokens = 64, top_p = 0.9}
[[routes]]
module = "*"
pool = "base"
model = "base"
trained = false
"""
    a = RouteTable.from_file(write(tmp_path, YAML)).as_json()
    b = RouteTable.from_file(write(tmp_path, toml, "routes.toml")).as_json()
    assert {k: v for k, v in a.items() if k != "source"} == {
        k: v for k, v in b.items() if k != "source"
    }


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (YAML.replace("pool: base,", "pool: bsae,"), "names pool 'bsae'; the pools are base, maths"),
        (YAML.replace("model: plan-gsm8k", "model: x}\n  - {domain: gsm8k, module: planner, pool: maths, model: y"), "both match gsm8k/*/planner"),
        (YAML.replace("domain: gsm8k", "domain: gsm8"), "unknown domain 'gsm8'"),
        (YAML.replace("formulation: onetime", "formulation: once"), "unknown formulation 'once'"),
        (YAML.replace("module: grounder", "module: ground"), "unknown module 'ground'"),
        (YAML.replace('"http://base:8000"', '"base:8000"'), "'base:8000' is not a base URL"),
        (YAML.replace("max_lora_rank: 16", "max_lora_rank: 16, gpu: 1"), "pools.maths.gpu"),
        (YAML.replace("top_p: 0.9", "stop: x"), "sampling.stop"),
        ("pools: {}\nroutes: []\n", "pools"),
        ("pools: [\n", "cannot be read"),
    ],
)  # fmt: skip
def test_a_bad_route_file_is_refused_saying_what_is_wrong(tmp_path, text, says):
    path = write(tmp_path, text)
    with pytest.raises(RouteFileError) as info:
        RouteTable.from_file(path)
    assert str(path) in str(info.value)
    assert says in str(info.value)


def test_a_missing_file_or_another_format_is_refused(tmp_path):
    with pytest.raises(RouteFileError, match="no route file at .*unset LUMOS_ROUTES_FILE"):
        RouteTable.from_file(tmp_path / "nope.yaml")
    with pytest.raises(RouteFileError, match=r"ends in \.yaml, \.yml or \.toml"):
        RouteTable.from_file(write(tmp_path, "{}", "routes.json"))


def test_the_file_is_reloaded_when_it_changes_and_a_broken_one_keeps_the_last_table(tmp_path):
    path = write(tmp_path, YAML)
    live = LiveRoutes(GatewaySettings(routes_file=str(path)))
    assert live.table.resolve("maths", "iterative", "planner").model == "plan-maths"
    assert not live.reload_file()  # unchanged
    path.write_text(YAML.replace("model: plan-maths}", "model: plan-maths-v2}"))
    assert live.reload_file()
    assert live.table.resolve("maths", "iterative", "planner").model == "plan-maths-v2"
    path.write_text(YAML.replace("pool: base,", "pool: nowhere,"))
    assert not live.reload_file()
    assert "nowhere" in (live.last_error or "")
    assert live.table.resolve("maths", "iterative", "planner").model == "plan-maths-v2"
    path.write_text(YAML)
    assert live.reload_file() and live.last_error is None


def test_a_gateway_does_not_start_on_a_bad_route_file(tmp_path):
    path = write(tmp_path, YAML.replace("pool: base,", "pool: nowhere,"))
    with pytest.raises(RouteFileError, match="nowhere"):
        LiveRoutes(GatewaySettings(routes_file=str(path)))


# --- adapter checks -------------------------------------------------------------------


def adapter(tmp_path: Path, base: str, rank: int) -> AdapterConfig:
    folder = tmp_path / "adapter"
    folder.mkdir(exist_ok=True)
    (folder / "adapter_config.json").write_text(
        json.dumps({"base_model_name_or_path": base, "r": rank})
    )
    return AdapterConfig.read(str(folder))


SERVER = ServedModels(
    "http://a:8000",
    base={"lumos-base": "/models/gemma-3-270m"},
    adapters={"lumos-plan": "/models/lumos-mini/plan_iterative"},
)
POOL = Pool(urls=["http://a:8000"], max_lora_rank=16)


def check(cfg: AdapterConfig, name: str, replace: bool = False) -> None:
    AdapterLoader(client=None).check(cfg, name, POOL, [SERVER], replace)  # type: ignore[arg-type]


def test_an_adapter_of_the_served_base_model_with_a_free_name_passes(tmp_path):
    check(adapter(tmp_path, "google/gemma-3-270m", 8), "lumos-plan-v2")
    check(adapter(tmp_path, "/somewhere/else/gemma-3-270m/", 16), "lumos-plan", replace=True)


@pytest.mark.parametrize(
    ("base", "rank", "name", "code", "says"),
    [
        ("gemma-3-270m", 8, "lumos-plan", "adapter_name_taken", "already serves an adapter 'lumos-plan'"),
        ("gemma-3-270m", 8, "lumos-base", "adapter_name_taken", "name of http://a:8000's base model"),
        ("meta-llama/Llama-2-7b-hf", 8, "x", "adapter_base_mismatch", "trained on 'meta-llama/Llama-2-7b-hf'"),
        ("gemma-3-270m", 32, "x", "adapter_rank_too_large", "rank 32, above the pool's --max-lora-rank 16"),
    ],
)  # fmt: skip
def test_an_unsafe_adapter_is_refused_before_the_servers_see_it(tmp_path, base, rank, name, code, says):  # fmt: skip
    with pytest.raises(AdapterError) as info:
        check(adapter(tmp_path, base, rank), name)
    assert info.value.code == code
    assert says in str(info.value)


def test_an_adapter_folder_without_a_config_is_refused(tmp_path):
    with pytest.raises(AdapterError, match="adapter_config.json does not exist"):
        AdapterConfig.read(str(tmp_path))
    (tmp_path / "adapter_config.json").write_text('{"r": 8}')
    with pytest.raises(AdapterError, match="base_model_name_or_path"):
        AdapterConfig.read(str(tmp_path))


def test_environment_references_are_expanded_and_an_unset_one_is_named(tmp_path, monkeypatch):
    text = YAML.replace('"http://base:8000"', '"${BASE_URL:-http://base:8000}"').replace(
        '"http://maths-0:8000"', '"http://${MATHS_HOST}:8000"'
    )
    path = write(tmp_path, text)
    monkeypatch.delenv("BASE_URL", raising=False)
    monkeypatch.delenv("MATHS_HOST", raising=False)
    with pytest.raises(RouteFileError, match=r"\$\{MATHS_HOST\} is not set"):
        RouteTable.from_file(path)
    monkeypatch.setenv("MATHS_HOST", "10.1.2.3")
    table = RouteTable.from_file(path)
    assert table.pools["maths"].urls[0] == "http://10.1.2.3:8000"
    assert table.pools["base"].urls == ["http://base:8000"]
    monkeypatch.setenv("BASE_URL", "http://elsewhere:9000")
    assert RouteTable.from_file(path).pools["base"].urls == ["http://elsewhere:9000"]


async def test_a_run_keeps_its_recorded_routes_whatever_the_table_says_now(tmp_path):
    path = write(tmp_path, YAML)
    live = LiveRoutes(GatewaySettings(routes_file=str(path)))
    async with httpx.AsyncClient() as http:
        modules = RemoteModules(GatewaySettings(routes_file=str(path)), http, live)
        recorded = modules.route_run("maths", "onetime")
        path.write_text(YAML.replace("model: plan-maths-o}", "model: plan-maths-o2}"))
        assert live.reload_file()
        resumed = modules.for_run("run-1", 2, "onetime", "maths", recorded)
        fresh = modules.for_run("run-2", 0, "onetime", "maths")
    assert resumed.models == {"planner": "plan-maths-o", "grounder": "ground-maths"}
    assert fresh.models == {"planner": "plan-maths-o2", "grounder": "ground-maths"}
    # affinity within the pool: the replica is a function of the run id
    replica = recorded["planner"]["urls"][replica_index("run-1", 2)]
    assert resumed.planner.client.base_url == replica  # type: ignore[attr-defined]


async def test_a_stored_run_whose_route_is_gone_fails_saying_which_route(tmp_path):
    path = write(tmp_path, YAML.split('  - {module: "*"')[0])  # no catch-all
    async with httpx.AsyncClient() as http:
        modules = RemoteModules(GatewaySettings(routes_file=str(path)), http)
        run = modules.for_run("old-run", 0, "iterative", "complex_qa")  # no recorded routes
        with pytest.raises(NoRouteError, match="no route for complex_qa/iterative/planner"):
            await run.planner.generate("Task: ...")
