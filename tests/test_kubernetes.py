"""deploy/kubernetes/: every manifest is valid for Kubernetes (kubernetes-validate's schemas, strict: an unknown
field is an error), the KEDA ScaledObject for its CRD (vendored in tests/schemas/), and the ConfigMap's YAML for
taskqueue; the numbers that must agree between them do."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate  # requirements-dev.lock pins it
import pytest
import yaml

from taskqueue import config as config_mod
from taskqueue.runner.runner import STOP_MARGIN_S

REPO = Path(__file__).resolve().parent.parent
MANIFESTS = REPO / "deploy" / "kubernetes"
KEDA_CRD = Path(__file__).resolve().parent / "schemas" / "keda.sh_scaledobjects.yaml"
KUBERNETES_VERSION = "1.33.0"  # the oldest release whose schema has every field used (preStop's sleep action)


def documents() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in sorted(MANIFESTS.glob("*.yaml")):
        for index, doc in enumerate(yaml.safe_load_all(path.read_text())):
            if doc is not None:
                yield f"{path.name}#{index}", doc


def by_kind(kind: str, name: str = "taskqueue") -> dict[str, Any]:
    (found,) = [doc for _, doc in documents() if doc["kind"] == kind and doc["metadata"]["name"] == name]
    return found


def test_the_manifests_are_there() -> None:
    kinds = sorted(doc["kind"] for _, doc in documents())
    assert kinds == [
        "ConfigMap",
        "ConfigMap",
        "Deployment",
        "HorizontalPodAutoscaler",
        "ScaledObject",
        "Service",
    ]


@pytest.mark.parametrize(("name", "doc"), [d for d in documents() if d[1]["kind"] != "ScaledObject"])
def test_a_manifest_is_valid_for_kubernetes(name: str, doc: dict[str, Any]) -> None:
    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(f"{name}: {'.'.join(map(str, exc.path))}: {exc.message}")


def test_kubernetes_validate_refuses_an_unknown_field() -> None:
    """The check above is strict: a misspelt field fails it (so it can fail at all)."""
    doc = copy.deepcopy(by_kind("Deployment"))
    doc["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def keda_schema() -> dict[str, Any]:
    crd = yaml.safe_load(KEDA_CRD.read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    found: dict[str, Any] = strict(version["schema"]["openAPIV3Schema"])
    return found


def strict(schema: Any) -> Any:
    """Refuse unknown fields, as kubernetes-validate's strict mode does (the API server would prune them)."""
    if isinstance(schema, dict):
        schema = {k: strict(v) for k, v in schema.items()}
        open_ended = "additionalProperties" in schema or schema.get("x-kubernetes-preserve-unknown-fields")
        if "properties" in schema and not open_ended:
            schema["additionalProperties"] = False
    elif isinstance(schema, list):
        schema = [strict(v) for v in schema]
    return schema


def test_the_scaled_object_is_valid_for_the_keda_crd() -> None:
    doc = by_kind("ScaledObject")
    assert doc["apiVersion"] == "keda.sh/v1alpha1"
    jsonschema.validate(doc, keda_schema())
    bad = copy.deepcopy(doc)
    bad["spec"]["minReplicas"] = 1  # HPA's name, not KEDA's (minReplicaCount)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, keda_schema())
    assert {t["type"] for t in doc["spec"]["triggers"]} == {"prometheus", "metrics-api"}


def embedded_config(tmp_path: Path) -> config_mod.Config:
    path = tmp_path / "task-queue.yaml"
    path.write_text(by_kind("ConfigMap", "taskqueue-config")["data"]["task-queue.yaml"])
    env = {"REDIS_URL": "redis://redis:6379/0", "TASKQUEUE_AUTH_TOKEN": "t"}
    return config_mod.load(path, env, import_tasks=False)


def test_the_config_map_holds_a_valid_config_with_the_builtin_autoscaler_off(tmp_path: Path) -> None:
    config = embedded_config(tmp_path)
    assert not config.autoscaler.enabled  # an HPA / KEDA drives the pods
    assert config.http.enabled and config.http.enable_health_check and config.http.enable_metrics
    assert config.http.port == 8080


def test_the_pods_get_time_for_the_grace_period(tmp_path: Path) -> None:
    config = embedded_config(tmp_path)
    pod = by_kind("Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    needed = pre_stop + config.workers.shutdown_grace_period_s + STOP_MARGIN_S
    assert pod["terminationGracePeriodSeconds"] > needed
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert by_kind("HorizontalPodAutoscaler")["spec"]["metrics"][0]["external"]["metric"]["name"] == (
        "taskqueue_deployment_load"
    )
