"""The RabbitMQ variants of the deployment, validated offline like the rest (tests/test_deploy.py): the compose
override file merged onto docker-compose.yml as `docker compose -f ... -f ...` merges it, and the kustomize
overlay deploy/k8s-rabbitmq applied to deploy/k8s as kustomize applies its patches (maps merged, a CRD's
lists replaced, a Deployment's containers and env merged by name), each result checked against its schema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from config.settings import is_rabbitmq_url, is_redis_url
from tests.test_deploy import (
    COMPOSE_TEST_ENV,
    KEDA_SCHEMA,
    POLL_QUEUES,
    ROOT,
    SUBMIT_QUEUES,
    MissingVariable,
    compose,
    container_env_names,
    interpolate,
    k8s_documents,
    pod_spec,
    worker_queues,
)

OVERLAY = ROOT / "deploy" / "k8s-rabbitmq"
OVERRIDE = ROOT / "docker-compose.rabbitmq.yml"
CLUSTER_SCHEMA = ROOT / "deploy" / "schemas" / "rabbitmqcluster-v1beta1.schema.json"
RABBITMQ_TEST_ENV = {**COMPOSE_TEST_ENV, "RABBITMQ_PASSWORD": "pw-for-tests"}
# What loads the Celery app, so needs both the broker and the fleet's Redis.
APP_SERVICES = {"worker-submit", "worker-poll", "dispatcher", "flower"}


def merged(base: Any, patch: Any, *, by_name: bool) -> Any:
    """``patch`` over ``base``: maps merged key by key; lists of named items merged by name when ``by_name``
    (a Deployment's containers and env, kustomize's strategic merge), otherwise replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        return {k: merged(base[k], v, by_name=by_name) if k in base else v for k, v in patch.items()} | {
            k: v for k, v in base.items() if k not in patch
        }
    if by_name and isinstance(base, list) and isinstance(patch, list) and all("name" in i for i in base + patch):
        named = {item["name"]: item for item in base}
        for item in patch:
            named[item["name"]] = merged(named[item["name"]], item, by_name=True) if item["name"] in named else item
        return list(named.values())
    return patch


def load_all(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


# ----------------------------------------------------------------------------------------- compose


def rabbitmq_compose(env: dict[str, str] = RABBITMQ_TEST_ENV) -> dict[str, Any]:
    override = interpolate(yaml.safe_load(OVERRIDE.read_text()), env)
    override.pop("x-rabbitmq-env"), override.pop("x-after-rabbitmq")
    return merged(compose(), override, by_name=False)


def test_the_compose_override_gives_every_process_rabbitmq_and_the_fleets_redis() -> None:
    from importlib import resources

    project = rabbitmq_compose()
    schema = json.loads(
        resources.files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json").read_text()
    )
    jsonschema.validate(project, schema, cls=jsonschema.Draft202012Validator)
    for name in APP_SERVICES:
        env = project["services"][name]["environment"]
        assert is_rabbitmq_url(env["APERTURE_BROKER_URL"]) and is_redis_url(env["APERTURE_REDIS_URL"]), name
        assert project["services"][name]["depends_on"]["rabbitmq"] == {"condition": "service_healthy"}, name
        assert "VIDMOB_API_KEY" not in env or name.startswith("worker"), "the key still reaches workers only"
    assert project["services"]["flower"]["environment"]["FLOWER_BROKER_API"].endswith(":15672/api/")
    assert "rabbitmq-data" in project["volumes"]


def test_the_compose_override_has_no_default_password() -> None:
    with pytest.raises(MissingVariable, match="RABBITMQ_PASSWORD"):
        rabbitmq_compose(COMPOSE_TEST_ENV)


# -------------------------------------------------------------------------------------- kubernetes


def overlay_patches() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((OVERLAY / "kustomization.yaml").read_text())
    assert kustomization["resources"][0] == "../k8s"
    return [doc for p in kustomization["patches"] for doc in load_all(OVERLAY / p["path"])]


def overlaid() -> dict[tuple[str, str], dict[str, Any]]:
    """deploy/k8s with the overlay's patches applied, and the overlay's own resources, by (kind, name)."""
    objects = {(doc["kind"], doc["metadata"]["name"]): doc for _, doc in k8s_documents()}
    kustomization = yaml.safe_load((OVERLAY / "kustomization.yaml").read_text())
    for resource in kustomization["resources"][1:]:
        for doc in load_all(OVERLAY / resource):
            objects[(doc["kind"], doc["metadata"]["name"])] = doc
    for patch in overlay_patches():
        key = (patch["kind"], patch["metadata"]["name"])
        assert key in objects, f"the overlay patches {key}, which deploy/k8s does not have"
        objects[key] = merged(objects[key], patch, by_name=patch["kind"] == "Deployment")
    return objects


def test_the_overlay_lists_files_that_exist_and_none_it_leaves_out() -> None:
    kustomization = yaml.safe_load((OVERLAY / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"][1:]) | {p["path"] for p in kustomization["patches"]}
    present = {p.name for p in OVERLAY.glob("*.yaml") if p.name != "kustomization.yaml"}
    assert listed == present


def test_the_rabbitmq_cluster_has_three_replicas_on_their_own_volumes() -> None:
    schema = json.loads(CLUSTER_SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    [cluster] = [doc for (kind, _), doc in overlaid().items() if kind == "RabbitmqCluster"]
    jsonschema.validate(cluster, schema, cls=jsonschema.Draft202012Validator)
    assert cluster["spec"]["replicas"] == 3, "a quorum queue keeps a majority through the loss of one node of 3"
    assert cluster["spec"]["persistence"]["storage"]
    broken = json.loads(json.dumps(cluster))
    broken["spec"]["replica"] = 3  # a misspelt field: pruned by the API server, so refused here
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def test_keda_scales_each_worker_on_the_quorum_queues_it_consumes() -> None:
    objects = overlaid()
    schema = json.loads(KEDA_SCHEMA.read_text())
    scaled = {name: doc for (kind, name), doc in objects.items() if kind == "ScaledObject"}
    assert set(scaled) == {"aperture-worker-submit", "aperture-worker-poll"}
    for name, obj in scaled.items():
        jsonschema.validate(obj, schema, cls=jsonschema.Draft202012Validator)
        deployment = objects[("Deployment", obj["spec"]["scaleTargetRef"]["name"])]
        container = pod_spec(deployment)["containers"][0]
        assert {t["type"] for t in obj["spec"]["triggers"]} == {"rabbitmq"}, "no redis trigger left over"
        watched = {t["metadata"]["queueName"] for t in obj["spec"]["triggers"]}
        assert watched == worker_queues(container["command"]), f"{name}: KEDA watches what the pods consume"
        for trigger in obj["spec"]["triggers"]:
            assert trigger["metadata"]["hostFromEnv"] in container_env_names(container)
    assert {t["metadata"]["queueName"] for t in scaled["aperture-worker-submit"]["spec"]["triggers"]} == SUBMIT_QUEUES
    assert {t["metadata"]["queueName"] for t in scaled["aperture-worker-poll"]["spec"]["triggers"]} == POLL_QUEUES
    broken = json.loads(json.dumps(scaled["aperture-worker-poll"]))
    broken["spec"]["triggers"][0]["metadata"]["value"] = 16  # the CRD wants strings
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def test_every_process_that_loads_the_app_gets_the_fleets_redis_from_the_secret() -> None:
    import kubernetes_validate

    secret = load_all(OVERLAY / "examples" / "secret.yaml")[0]["stringData"]
    assert all("REPLACE-ME" in value for value in secret.values()), "the example holds placeholders only"
    assert is_rabbitmq_url(secret["APERTURE_BROKER_URL"]) and is_redis_url(secret["APERTURE_REDIS_URL"])
    for (kind, name), doc in overlaid().items():
        if kind != "Deployment":
            continue
        kubernetes_validate.validate(doc, "1.29", strict=True)
        for container in pod_spec(doc)["containers"]:
            refs = {
                e["name"]: e["valueFrom"]["secretKeyRef"]["key"]
                for e in container.get("env", [])
                if "secretKeyRef" in e.get("valueFrom", {})
            }
            if "APERTURE_BROKER_URL" in refs:
                assert refs.get("APERTURE_REDIS_URL") == "APERTURE_REDIS_URL", f"{name}:{container['name']}"
            assert set(refs.values()) <= set(secret), (
                f"{name}: the example Secret lacks {set(refs.values()) - set(secret)}"
            )
