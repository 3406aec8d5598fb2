"""The Kubernetes manifests in k8s/: valid against the API schemas, and wired together."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from services.grounder import profile as grounder_profile
from services.modelserver.profile import command as launch_command
from services.planner import profile as planner_profile
from tests.deploy.repository import COMPOSE, K8S, REPO, load_yaml, load_yaml_documents
from tests.deploy.tools import require_module

KUBERNETES_VERSION = "1.37.0"  # the newest schemas kubernetes-validate ships offline
WORKLOAD_KINDS = {"Deployment", "StatefulSet"}
MODEL_SERVERS = ("planner", "grounder")
PROFILES = {"planner": planner_profile.PROFILE, "grounder": grounder_profile.PROFILE}
MANIFEST_FILES = sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
DOCUMENTS = [(path, doc) for path in MANIFEST_FILES for doc in load_yaml_documents(path)]


def _id(item: tuple[Path, dict[str, Any]]) -> str:
    path, doc = item
    return f"{path.name}:{doc['kind']}/{doc['metadata']['name']}"


def _of_kind(*kinds: str) -> list[dict[str, Any]]:
    return [doc for _, doc in DOCUMENTS if doc["kind"] in kinds]


def _named(kind: str, name: str) -> dict[str, Any]:
    matches = [doc for doc in _of_kind(kind) if doc["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} {name}, found {len(matches)}"
    return matches[0]


def _containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    return workload["spec"]["template"]["spec"]["containers"]


def test_the_manifests_are_found() -> None:
    kinds = {doc["kind"] for _, doc in DOCUMENTS}
    assert {
        "Namespace",
        "ConfigMap",
        "Secret",
        "Service",
        "Deployment",
        "StatefulSet",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
    } <= kinds


@pytest.mark.parametrize("item", DOCUMENTS, ids=[_id(item) for item in DOCUMENTS])
def test_manifest_is_valid_against_the_kubernetes_schema(item) -> None:
    kubernetes_validate = require_module("kubernetes_validate", "kubernetes-validate")
    _, doc = item
    try:
        # strict: an unknown field (a typo, a field at the wrong level) is an error too
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        pytest.fail(f"{_id(item)}: {error.message} at {'.'.join(map(str, error.path))}")


def test_kustomization_applies_every_manifest_but_the_secret_placeholder() -> None:
    kustomization = load_yaml(K8S / "kustomization.yaml")
    expected = {p.name for p in MANIFEST_FILES} - {"secret.yaml"}
    assert set(kustomization["resources"]) == expected
    assert kustomization["namespace"] == "lumos"
    for _, doc in DOCUMENTS:
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == "lumos", _id((Path("?"), doc))


def test_secret_is_a_placeholder_without_values() -> None:
    secret = _named("Secret", "lumos-secrets")
    assert set(secret["stringData"]) == {"LUMOS_API_KEYS_SHA256", "HF_TOKEN"}
    assert all(value == "" for value in secret["stringData"].values())


@pytest.mark.parametrize("workload", _of_kind(*WORKLOAD_KINDS), ids=lambda w: w["metadata"]["name"])
def test_every_container_has_probes_and_resources(workload) -> None:
    for container in _containers(workload):
        name = f"{workload['metadata']['name']}/{container['name']}"
        assert "livenessProbe" in container and "readinessProbe" in container, name
        resources = container.get("resources", {})
        assert {"cpu", "memory"} <= set(resources.get("requests", {})), name
        assert "memory" in resources.get("limits", {}), name
        ports = {p["name"] for p in container.get("ports", [])}
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            port = container.get(probe, {}).get("httpGet", {}).get("port")
            assert port is None or port in ports, f"{name}: {probe} probes undeclared port {port}"


@pytest.mark.parametrize("workload", _of_kind(*WORKLOAD_KINDS), ids=lambda w: w["metadata"]["name"])
def test_selector_matches_the_pod_labels(workload) -> None:
    selector = workload["spec"]["selector"]["matchLabels"]
    labels = workload["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= labels.items()


def _pod_labels() -> list[dict[str, str]]:
    return [w["spec"]["template"]["metadata"]["labels"] for w in _of_kind(*WORKLOAD_KINDS)]


def test_every_service_and_disruption_budget_selects_pods() -> None:
    for doc in _of_kind("Service", "PodDisruptionBudget"):
        selector = doc["spec"]["selector"]
        selector = selector.get("matchLabels", selector) if doc["kind"] != "Service" else selector
        assert any(selector.items() <= labels.items() for labels in _pod_labels()), doc["metadata"]
    for service in _of_kind("Service"):
        target_ports = {p["targetPort"] for p in service["spec"]["ports"]}
        selected = [
            w
            for w in _of_kind(*WORKLOAD_KINDS)
            if service["spec"]["selector"].items()
            <= w["spec"]["template"]["metadata"]["labels"].items()
        ]
        for workload in selected:
            declared = {p["name"] for c in _containers(workload) for p in c.get("ports", [])}
            assert target_ports <= declared, f"{service['metadata']['name']} targets {target_ports}"


def test_autoscalers_scale_the_stateless_services_on_cpu() -> None:
    scaled = {}
    for hpa in _of_kind("HorizontalPodAutoscaler"):
        target = hpa["spec"]["scaleTargetRef"]
        workload = _named(target["kind"], target["name"])
        assert (
            hpa["spec"]["minReplicas"] >= 2
            and hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]
        )
        assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
        # utilisation is measured against the CPU request, so there has to be one
        assert all("cpu" in c["resources"]["requests"] for c in _containers(workload))
        scaled[target["name"]] = hpa
    assert set(scaled) == {"gateway", "executor"}
    budgets = {pdb["metadata"]["name"] for pdb in _of_kind("PodDisruptionBudget")}
    assert {"gateway", "executor"} <= budgets


@pytest.mark.parametrize("name", ["gateway", "executor"])
def test_stateless_services_run_as_the_image_user_without_privileges(name) -> None:
    deployment = _named("Deployment", name)
    pod = deployment["spec"]["template"]["spec"]
    # the image's final stage: the target named after the service in the shared Dockerfile
    stage = re.split(rf"^FROM \S+ AS {name}\n", (REPO / "Dockerfile").read_text(), flags=re.M)[1]
    image_uid = re.findall(r"^USER\s+(\d+)", stage.split("\nFROM ")[0], re.M)[-1]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert str(pod["securityContext"]["runAsUser"]) == image_uid
    for container in pod["containers"]:
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"]["drop"] == ["ALL"]
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        if context.get("readOnlyRootFilesystem"):
            mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
            assert "/tmp" in mounts, f"{name}: a read-only root needs a writable /tmp"


@pytest.mark.parametrize("name", MODEL_SERVERS)
def test_model_servers_get_a_gpu_time_to_load_and_a_model_cache(name) -> None:
    server = _named("StatefulSet", name)
    (container,) = _containers(server)
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 15 * 60, (
        "model load takes minutes"
    )
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["hf-cache"] == "/root/.cache/huggingface"
    claims = {c["metadata"]["name"] for c in server["spec"].get("volumeClaimTemplates", [])}
    pod_volumes = {v["name"] for v in server["spec"]["template"]["spec"].get("volumes", [])}
    assert "hf-cache" in claims | pod_volumes
    assert mounts["dshm"] == "/dev/shm"


def _settings(name: str) -> dict[str, str]:
    return _named("ConfigMap", name)["data"]


@pytest.mark.parametrize("module", MODEL_SERVERS)
def test_gateway_lists_one_stable_address_per_model_server_replica(module) -> None:
    """Run affinity hashes over this list, so it must name each replica exactly once."""
    server = _named("StatefulSet", module)
    service = _named("Service", server["spec"]["serviceName"])
    assert service["spec"]["clusterIP"] == "None", "per-pod DNS names need a headless Service"
    port = service["spec"]["ports"][0]["port"]
    urls = _settings("gateway-settings")[f"LUMOS_{module.upper()}_URLS"].split(",")
    expected = [
        f"http://{module}-{i}.{service['metadata']['name']}:{port}"
        for i in range(server["spec"]["replicas"])
    ]
    assert urls == expected


def test_gateway_reaches_the_executor_and_redis_through_their_services() -> None:
    settings = _settings("gateway-settings")
    executor_settings = _settings("executor-settings")
    for url in (
        settings["LUMOS_EXECUTOR_URL"],
        settings["LUMOS_REDIS_URL"],
        executor_settings["LUMOS_EXECUTOR_REDIS_URL"],
    ):
        parts = urlsplit(url)
        service = _named("Service", parts.hostname)
        assert parts.port in {p["port"] for p in service["spec"]["ports"]}, url
    assert settings["LUMOS_PLANNER_MODEL"] == "lumos-plan"
    assert settings["LUMOS_GROUNDER_MODEL"] == "lumos-ground"
    assert executor_settings["LUMOS_EXECUTOR_PORT"] == "8003"


def test_every_referenced_config_map_and_secret_exists() -> None:
    config_maps = {c["metadata"]["name"] for c in _of_kind("ConfigMap")}
    secrets = {s["metadata"]["name"]: s for s in _of_kind("Secret")}
    for workload in _of_kind(*WORKLOAD_KINDS):
        for container in _containers(workload):
            for source in container.get("envFrom", []):
                assert source["configMapRef"]["name"] in config_maps
            for variable in container.get("env", []):
                ref = variable.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["key"] in secrets[ref["name"]]["stringData"], variable["name"]


def test_images_are_pinned_and_model_servers_match_compose() -> None:
    compose = load_yaml(COMPOSE)["services"]
    for workload in _of_kind(*WORKLOAD_KINDS):
        for container in _containers(workload):
            image = container["image"]
            assert re.fullmatch(r"[\w./-]+:[\w.-]+", image) and not image.endswith(":latest"), image
    for name in MODEL_SERVERS:
        (container,) = _containers(_named("StatefulSet", name))
        assert container["image"] == compose[name]["image"]


@pytest.mark.parametrize("name", MODEL_SERVERS)
def test_model_servers_run_their_launch_profiles(name) -> None:
    (container,) = _containers(_named("StatefulSet", name))
    args = container["args"]
    share = float(args[args.index("--gpu-memory-utilization") + 1])
    profile = PROFILES[name].model_copy(update={"port": 8000, "gpu_memory_utilization": share})
    assert args == launch_command(profile, "gpu")
    assert container["ports"][0]["containerPort"] == 8000


def test_redis_image_matches_compose() -> None:
    compose = load_yaml(COMPOSE)["services"]
    assert _containers(_named("StatefulSet", "redis"))[0]["image"] == compose["redis"]["image"]


def test_redis_keeps_an_append_only_file_on_a_volume() -> None:
    redis = _named("StatefulSet", "redis")
    (container,) = _containers(redis)
    args = container["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    data_dir = args[args.index("--dir") + 1]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    claims = {c["metadata"]["name"] for c in redis["spec"]["volumeClaimTemplates"]}
    assert mounts[data_dir] in claims


def test_service_monitor_scrapes_the_components_that_serve_metrics() -> None:
    (monitor,) = load_yaml_documents(K8S / "monitoring" / "servicemonitors.yaml")
    assert monitor["kind"] == "ServiceMonitor"
    (expression,) = monitor["spec"]["selector"]["matchExpressions"]
    selected = {
        s["metadata"]["name"]
        for s in _of_kind("Service")
        if s["metadata"]["labels"].get("app.kubernetes.io/component") in expression["values"]
    }
    assert selected == {"gateway", "executor", "planner", "grounder"}
    for service in _of_kind("Service"):
        if service["metadata"]["name"] in selected:
            assert monitor["spec"]["endpoints"][0]["port"] in {
                p["name"] for p in service["spec"]["ports"]
            }
