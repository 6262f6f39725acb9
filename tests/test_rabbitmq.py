"""RabbitMQ as the broker, where the broker matters: routing to quorum queues, countdowns held by the
broker's delay queues, redelivery after kill -9, and a job end to end on it.

Each test run gets vhosts of its own on the machine's RabbitMQ (127.0.0.1:5672, `rabbitmqctl`), deleted
afterwards, and a PostgreSQL database of its own, so the Redis fleet of the other tests never sees these
rows. The fleet's rate limit and circuit breaker stay on the run's Redis database (APERTURE_REDIS_URL).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
from celery import Celery

from cli.processes import Process
from config.celery import celery_config
from config.settings import Settings
from config.tasks import ALL_TASKS, CREATE_JOB, SWEEP, QueueName
from tasks.base import whole_seconds
from tests.conftest import REQUIRE_SERVICES, ROOT, ObservedProcess, start_worker
from tests.support import (
    RabbitMQUnavailable,
    rabbitmq_exchanges,
    rabbitmq_prefetch,
    rabbitmq_queues,
    rabbitmq_ready,
    rabbitmq_vhost,
    reset_simulator,
    sim_fault,
    wait_for,
)

BIN = Path(sys.executable).parent
# Celery's native delayed delivery: one queue per bit of the delay in seconds (2^0 .. 2^27).
DELAY_QUEUES = [f"celery_delayed_{level}" for level in range(28)]


@pytest.fixture(scope="module")
def vhosts() -> Iterator[Any]:
    """Makes vhosts on the machine's RabbitMQ for this module, each deleted at its end."""
    from contextlib import ExitStack

    with ExitStack() as stack:

        def new() -> str:
            try:
                return stack.enter_context(rabbitmq_vhost())
            except RabbitMQUnavailable as exc:
                if REQUIRE_SERVICES:
                    pytest.fail(f"RabbitMQ is required under CI but unusable: {exc}", pytrace=False)
                pytest.skip(f"no RabbitMQ here ({exc}); scripts/ensure-rabbitmq.sh installs and starts it")

        yield new


@pytest.fixture(scope="module")
def rabbit_db(app_env: dict[str, str]) -> Iterator[str]:
    """A migrated PostgreSQL database of this module's own, beside the run's."""
    parts = urlsplit(app_env["APERTURE_DATABASE_URL"])
    admin = parts._replace(path="/postgres").geturl()
    name = f"aperture_test_rmq_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = parts._replace(path=f"/{name}").geturl()
    migrated = subprocess.run(
        [str(BIN / "aperture"), "db", "upgrade"],
        env={**os.environ, **app_env, "APERTURE_DATABASE_URL": url},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert migrated.returncode == 0, migrated.stderr
    yield url
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def rabbit_env_for(app_env: dict[str, str], amqp_url: str, database_url: str) -> dict[str, str]:
    return {
        **app_env,
        "APERTURE_BROKER_URL": amqp_url,
        "APERTURE_REDIS_URL": app_env["APERTURE_BROKER_URL"],
        "APERTURE_DATABASE_URL": database_url,
        # Only a message truly lost is re-sent by the dispatcher (a slow machine must not count as one).
        "APERTURE_LOST_MESSAGE_AFTER_S": "30",
    }


def project_app(env: dict[str, str]) -> Celery:
    """A sender with the workers' own configuration (as the dispatcher sends)."""
    settings = Settings(broker_url=env["APERTURE_BROKER_URL"], redis_url=env["APERTURE_REDIS_URL"])
    app = Celery("rabbitmq-test")
    app.config_from_object(celery_config(settings, env["APERTURE_BROKER_URL"]))
    return app


def job_rows(database_url: str, request_id: str) -> list[tuple[str, str]]:
    with psycopg.connect(database_url) as conn:
        return [
            (str(row[0]), row[1])
            for row in conn.execute("SELECT id, state FROM jobs WHERE request_id = %s", (request_id,))
        ]


def test_every_task_goes_to_its_own_quorum_queue_behind_a_topic_exchange(app_env, vhosts, rabbit_db):
    env = rabbit_env_for(app_env, vhosts(), rabbit_db)
    url = env["APERTURE_BROKER_URL"]
    app = project_app(env)
    try:
        for spec in ALL_TASKS:  # no worker on this vhost: each message stays where it was routed
            app.send_task(spec.name, kwargs={})
    finally:
        app.close()

    # Every queue a task is routed to ("celery" has none: a worker declares it, as the next test does).
    expected = {spec.queue.value: sum(1 for s in ALL_TASKS if s.queue == spec.queue) for spec in ALL_TASKS}
    # RabbitMQ refreshes a quorum queue's counts every few seconds (collect_statistics_interval).
    queues = wait_for(
        lambda: (
            (q := rabbitmq_queues(url)) and {n: q.get(n, {}).get("messages_ready") for n in expected} == expected and q
        ),
        timeout=15,
        interval=0.5,
        what=f"messages ready per queue to be {expected}",
    )
    exchanges = rabbitmq_exchanges(url)
    for name in expected:
        assert queues[name]["type"] == "quorum", queues[name]
        assert exchanges[name] == "topic"


def test_a_caller_with_the_documented_settings_declares_the_queues_as_the_workers_do(app_env, vhosts, rabbit_db):
    """Another application sending `aperture.create_job` with plain Celery and the four settings of README
    "RabbitMQ": its declaration of aperture.submit matches the quorum queue, so the send is confirmed."""
    from config.celery import caller_config

    env = rabbit_env_for(app_env, vhosts(), rabbit_db)
    worker_side = project_app(env)
    with worker_side.connection_for_write() as conn:  # the queues as a worker declares them at start
        for queue in worker_side.amqp.queues.values():
            queue(conn.default_channel).declare()
    worker_side.close()

    caller = Celery("another-application", broker=env["APERTURE_BROKER_URL"])
    caller.conf.update(caller_config(env["APERTURE_BROKER_URL"]))
    try:
        caller.send_task(CREATE_JOB.name, kwargs={"assets": []}, queue=QueueName.SUBMIT.value, serializer="json")
        caller.send_task(CREATE_JOB.name, kwargs={"assets": []}, serializer="json")  # no queue: "celery"
    finally:
        caller.close()
    ready = {QueueName.SUBMIT.value: 1, QueueName.DEFAULT.value: 1}
    wait_for(
        lambda: all(
            rabbitmq_queues(env["APERTURE_BROKER_URL"])[name]["messages_ready"] == n for name, n in ready.items()
        ),
        timeout=15,
        interval=0.5,
        what="one message on each of aperture.submit and celery",
    )


@pytest.fixture(scope="module")
def rabbit_env(app_env, vhosts, rabbit_db) -> dict[str, str]:
    return rabbit_env_for(app_env, vhosts(), rabbit_db)


@pytest.fixture(scope="module")
def rabbit_worker(rabbit_env, tmp_root) -> Iterator[ObservedProcess]:
    proc = start_worker({**rabbit_env, "APERTURE_METRICS_PORT": "0"}, tmp_root / "rabbit-worker.log")
    yield proc
    proc.stop()


def worker_holds(app: Celery) -> int:
    """How many messages the workers hold: reserved (prefetched) plus scheduled (countdowns in RAM)."""
    inspect = app.control.inspect(timeout=2)
    held = 0
    for replies in (inspect.reserved() or {}, inspect.scheduled() or {}):
        held += sum(len(tasks) for tasks in replies.values())
    return held


def test_a_countdown_waits_in_the_broker_not_in_the_worker(rabbit_env, rabbit_worker):
    url = rabbit_env["APERTURE_BROKER_URL"]
    app = project_app(rabbit_env)
    countdown = 8
    try:
        sent_at = time.monotonic()
        task_id = app.send_task(SWEEP.name, countdown=countdown).id

        def delayed() -> int:
            return sum(rabbitmq_ready(url, DELAY_QUEUES).values())

        assert wait_for(delayed, timeout=5, what="the countdown message in a celery_delayed_* queue") == 1
        assert worker_holds(app) == 0  # the worker has nothing of it: no RAM, no prefetch slot
        assert time.monotonic() - sent_at < countdown - 1, "checked too late to prove anything"
        rabbit_worker.wait_for_log(f"aperture.sweep[{task_id}] succeeded", timeout=countdown + 30)
        assert time.monotonic() - sent_at >= countdown - 1
        assert delayed() == 0
    finally:
        app.close()


def test_a_countdown_for_the_delay_queues_is_the_nearest_whole_second():
    # Rounded up, every look would be up to a second late; truncated with the exact time in the message,
    # the worker would hold each early one in a prefetch slot. The nearest: at most half a second either way.
    assert [whole_seconds(s) for s in (0.3, 2.4, 2.5, 2.6, 3599.7)] == [0, 2, 3, 3, 3600]


def quiet_worker(env: dict[str, str], log_path: Path) -> Process:
    """One worker process (INFO: its log's tail shows tasks, not heartbeats)."""
    from cli.processes import worker_argv

    argv = worker_argv(f"rmq-{uuid.uuid4().hex[:6]}@%h", concurrency=1, loglevel="INFO")
    proc = Process(
        "worker", argv, {**env, "APERTURE_METRICS_PORT": "0", "APERTURE_LOG_FORMAT": "text"}, log_path, cwd=ROOT
    )
    proc.wait_for_log("ready.", timeout=60)
    return proc


def test_a_worker_serving_the_polls_prefetches_sixteen_a_process_and_a_submit_worker_four(
    app_env, vhosts, rabbit_db, tmp_root
):
    """A quorum queue sends a consumer its next message once the last one's ack is committed: the poll
    workers, whose looks are short and many, hold more of them (docs/benchmarks.md)."""
    from cli.processes import worker_argv

    env = rabbit_env_for(app_env, vhosts(), rabbit_db) | {"APERTURE_METRICS_PORT": "0"}
    url, poll, submit = env["APERTURE_BROKER_URL"], QueueName.POLL.value, QueueName.SUBMIT.value
    workers = [
        Process(name, worker_argv(f"{name}-{uuid.uuid4().hex[:6]}@%h", concurrency=2, queues=queue), env,
                tmp_root / f"rabbit-prefetch-{name}.log", cwd=ROOT)
        for name, queue in (("poll", poll), ("submit", submit))
    ]  # fmt: skip
    try:
        for worker in workers:
            worker.wait_for_log("ready.", timeout=60)
        consumers = wait_for(
            lambda: (found := rabbitmq_prefetch(url)).get(poll) and found.get(submit) and found,
            timeout=20,
            what="both workers consuming",
        )
        assert consumers[poll] == [2 * 16]
        assert consumers[submit] == [2 * 4]
    finally:
        for worker in workers:
            worker.stop()


def test_a_message_held_by_a_worker_killed_with_kill_9_is_redelivered_at_once(
    app_env, vhosts, rabbit_db, simulator, tmp_root
):
    """No visibility timeout: the broker requeues what a dead connection held unacked, and another worker
    runs it. (On Redis the same message waits APERTURE_VISIBILITY_TIMEOUT_S.)"""
    env = rabbit_env_for(app_env, vhosts(), rabbit_db)
    # Vidmob answers the submission slowly, and the worker waits for it: it stays inside create_job, its
    # message unacked, until it is killed.
    env |= {
        "APERTURE_HTTP_READ_TIMEOUT_S": "60",
        "APERTURE_TASK_SOFT_TIME_LIMIT_S": "60",
        "APERTURE_TASK_TIME_LIMIT_S": "70",
    }
    url = env["APERTURE_BROKER_URL"]
    reset_simulator(simulator.url)
    sim_fault(simulator, method="POST", path="/v1/aperture/jobs", delay_s=45, times=1)
    first = quiet_worker(env, tmp_root / "rabbit-kill-first.log")
    second = None
    request_id = f"rmq-kill-{uuid.uuid4().hex[:8]}"
    try:
        app = project_app(env)
        task_id = app.send_task(
            CREATE_JOB.name,
            kwargs={"assets": [{"url": "https://cdn.example.com/rmq/kill.mp4"}], "request_id": request_id},
        ).id
        app.close()
        wait_for(lambda: job_rows(rabbit_db, request_id), timeout=30, what="the request stored")
        submit = QueueName.SUBMIT.value
        wait_for(
            lambda: rabbitmq_queues(url)[submit]["messages_unacknowledged"] == 1,
            timeout=15,
            interval=0.5,
            what="the worker holding the message unacknowledged",
        )

        first.kill9()
        killed_at = time.monotonic()
        wait_for(lambda: rabbitmq_ready(url, [submit])[submit] == 1, timeout=10, interval=0.05, what="the requeue")
        requeued_s = time.monotonic() - killed_at

        second = quiet_worker(env, tmp_root / "rabbit-kill-second.log")
        second.wait_for_log(f"aperture.create_job[{task_id}] succeeded", timeout=60)
        assert requeued_s < 5
        assert len(job_rows(rabbit_db, request_id)) == 1  # run twice, stored once
    finally:
        first.stop()
        if second is not None:
            second.stop()
        reset_simulator(simulator.url)


@pytest.fixture(scope="module")
def rabbit_dispatcher(rabbit_env, tmp_root) -> Iterator[ObservedProcess]:
    from cli.processes import DISPATCHER_READY, dispatcher
    from tests.conftest import _free_port

    port = _free_port()
    proc = ObservedProcess(
        "rabbit-dispatcher",
        dispatcher(tmp_root, name="rabbit-dispatcher"),
        {**rabbit_env, "APERTURE_DISPATCHER_METRICS_PORT": str(port)},
        tmp_root / "rabbit-dispatcher.log",
        cwd=ROOT,
    )
    proc.metrics_port = port
    proc.wait_for_log(DISPATCHER_READY, timeout=30)
    yield proc
    proc.stop()


def dispatcher_looks(dispatcher: ObservedProcess) -> float:
    import requests

    text = requests.get(f"http://127.0.0.1:{dispatcher.metrics_port}/metrics", timeout=5).text
    return sum(
        float(line.split()[1]) for line in text.splitlines() if line.startswith("aperture_dispatcher_looks_total")
    )


def test_polls_re_enqueue_themselves_on_countdowns_and_the_dispatcher_sends_none(
    rabbit_env, rabbit_worker, rabbit_dispatcher, simulator
):
    """The default on RabbitMQ: each look of a tagging job and of a scoring round is a fresh countdown
    message held by the broker; PostgreSQL records when it is due, and the dispatcher, whose passes see
    every row, has nothing to send while no message is lost. The callback reaches the caller's queue."""
    from kombu import Connection

    from tests.support import dispatcher_passes, drain

    reset_simulator(simulator.url)
    app = project_app(rabbit_env)
    callback_queue = f"test.tagged.{uuid.uuid4().hex[:6]}"
    with Connection(rabbit_env["APERTURE_BROKER_URL"]) as conn:  # the caller's worker declares its queue
        conn.SimpleQueue(callback_queue).close()
    request_id, scoring_request = f"rmq-e2e-{uuid.uuid4().hex[:8]}", f"rmq-score-{uuid.uuid4().hex[:8]}"
    passes_before = dispatcher_passes(rabbit_dispatcher)
    try:
        app.send_task(
            CREATE_JOB.name,
            kwargs={
                "assets": [{"url": "https://cdn.example.com/rmq/e2e.mp4"}],
                "request_id": request_id,
                "callback": {"task": "caller.tagged", "queue": callback_queue},
            },
        )
        # Vidmob cannot download it: one round, polled until it says so, then scored with that code.
        app.send_task(
            "aperture.score_media",
            kwargs={
                "id": "rmq-media",
                "url": "https://cdn.example.com/sim-download-failure-rmq.mp4",
                "request_id": scoring_request,
            },
        )
    finally:
        app.close()

    db = rabbit_env["APERTURE_DATABASE_URL"]
    wait_for(lambda: job_rows(db, request_id) and job_rows(db, request_id)[0][1] == "complete", timeout=60, what="job")

    def scoring_state() -> str | None:
        with psycopg.connect(db) as conn:
            row = conn.execute("SELECT state FROM scored_media WHERE request_id = %s", (scoring_request,)).fetchone()
        return row[0] if row and row[0] not in ("submitting", "polling") else None

    assert wait_for(scoring_state, timeout=60, what="the scoring round to end") == "scored"
    messages = wait_for(lambda: drain(rabbit_env["APERTURE_BROKER_URL"], callback_queue), what="the callback")
    assert [m.headers["task"] for m in messages] == ["caller.tagged"]
    assert messages[0].payload[1]["status"] == "complete"

    log = rabbit_worker.log()
    assert "aperture.poll_job[" in log and "aperture.poll_scoring[" in log
    assert dispatcher_passes(rabbit_dispatcher) > passes_before + 10  # it ran, and looked at every row
    assert dispatcher_looks(rabbit_dispatcher) == 0


def wait_for_complete(database_url: str, request_id: str, worker: ObservedProcess) -> None:
    try:
        wait_for(
            lambda: [state for _, state in job_rows(database_url, request_id)] == ["complete"],
            timeout=60,
            what=f"job {request_id} complete",
        )
    except AssertionError as exc:  # say where the job stood, and what the worker was doing
        with psycopg.connect(database_url) as conn:
            rows = conn.execute(
                "SELECT state, error, vidmob_job_id, created_at, submitted_at, next_poll_at, now()"
                " FROM jobs WHERE request_id = %s",
                (request_id,),
            ).fetchall()
        raise AssertionError(f"{exc}; rows: {rows}; worker log ends:\n{worker.log()[-4000:]}") from None


def test_the_python_caller_example_gets_a_job_tagged_on_rabbitmq(rabbit_env, rabbit_worker, rabbit_dispatcher):
    request_id = f"example-rmq-{uuid.uuid4().hex[:8]}"
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "send_task.py"), "--broker", rabbit_env["APERTURE_BROKER_URL"],
         "--request-id", request_id, "https://cdn.example.com/examples/rmq-python.mp4"],
        env={"PATH": os.environ.get("PATH", "")}, cwd=ROOT / "docs", capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    wait_for_complete(rabbit_env["APERTURE_DATABASE_URL"], request_id, rabbit_worker)


@pytest.fixture(scope="module")
def celery_node() -> Path:
    """examples/node with its one dependency, celery-node, installed from the npm registry (once)."""
    import shutil

    node_dir = ROOT / "examples" / "node"
    if shutil.which("node") is None or shutil.which("npm") is None:
        if REQUIRE_SERVICES:
            pytest.fail("node and npm are required under CI for the Node.js caller", pytrace=False)
        pytest.skip("node and npm are not installed")
    if not (node_dir / "node_modules" / "celery-node").is_dir():
        installed = subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--no-package-lock"], cwd=node_dir, capture_output=True,
            text=True, timeout=300, check=False,
        )  # fmt: skip
        assert installed.returncode == 0, installed.stderr[-2000:]
    return node_dir


def test_a_nodejs_caller_with_celery_node_gets_a_job_tagged_on_rabbitmq(
    rabbit_env, rabbit_worker, rabbit_dispatcher, celery_node
):
    request_id = f"example-node-{uuid.uuid4().hex[:8]}"
    done = subprocess.run(
        ["node", "send_task.js", "--broker", rabbit_env["APERTURE_BROKER_URL"], "--request-id", request_id,
         "https://cdn.example.com/examples/rmq-node.mp4"],
        env={"PATH": os.environ.get("PATH", "")}, cwd=celery_node, capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    wait_for_complete(rabbit_env["APERTURE_DATABASE_URL"], request_id, rabbit_worker)


def test_flower_shows_the_rabbitmq_queues_through_the_management_api(app_env, rabbit_db, tmp_root):
    """Flower reads a RabbitMQ queue's length from the management API (`FLOWER_BROKER_API`). The machine's
    node has the management plugin off, and a test never reconfigures it: a private node with the plugin."""
    import requests

    from chaos.rabbitmq import RabbitMQ
    from cli.flower import start_flower
    from tests.conftest import _free_port

    try:
        node = RabbitMQ(management=True)
    except (OSError, RuntimeError, subprocess.CalledProcessError) as exc:
        if REQUIRE_SERVICES:
            raise
        pytest.skip(f"no private RabbitMQ node here: {exc}")
    flower = None
    try:
        env = rabbit_env_for(app_env, node.url, rabbit_db) | {
            "FLOWER_BROKER_API": f"http://guest:guest@127.0.0.1:{node.nodes[0].management_port}/api/"
        }
        app = project_app(env)
        for _ in range(3):  # no worker: they stay on aperture.poll
            app.send_task("aperture.poll_job", kwargs={"job_id": str(uuid.uuid4()), "token": str(uuid.uuid4())})
        app.close()
        port, auth = _free_port(), ("tester", uuid.uuid4().hex)
        flower = start_flower({**env, "FLOWER_BASIC_AUTH": ":".join(auth)}, tmp_root, port)

        def lengths() -> dict[str, int] | None:
            try:
                reply = requests.get(f"http://127.0.0.1:{port}/api/queues/length", auth=auth, timeout=5)
            except requests.ConnectionError:
                return None
            queues = {q["name"]: q.get("messages") for q in reply.json()["active_queues"]} if reply.ok else {}
            return queues if queues.get(QueueName.POLL.value) == 3 else None

        # The queues that exist (only aperture.poll, declared by the sends), each as RabbitMQ counts it.
        wait_for(lengths, timeout=60, interval=1, what="Flower showing 3 messages on aperture.poll")
    finally:
        if flower is not None:
            flower.stop()
        node.close()
