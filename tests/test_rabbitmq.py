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

from config.celery import celery_config
from config.settings import Settings
from config.tasks import ALL_TASKS, CREATE_JOB, SWEEP, QueueName
from tests.conftest import REQUIRE_SERVICES, ROOT, ObservedProcess, start_worker
from tests.support import (
    RabbitMQUnavailable,
    rabbitmq_exchanges,
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


def test_a_message_held_by_a_worker_killed_with_kill_9_is_redelivered_at_once(
    app_env, vhosts, rabbit_db, simulator, tmp_root
):
    """No visibility timeout: the broker requeues what a dead connection held unacked, and another worker
    runs it. (On Redis the same message waits APERTURE_VISIBILITY_TIMEOUT_S.)"""
    env = rabbit_env_for(app_env, vhosts(), rabbit_db)
    url = env["APERTURE_BROKER_URL"]
    reset_simulator(simulator.url)
    # Vidmob answers the submission slowly: the worker is inside create_job, its message unacked.
    sim_fault(simulator, method="POST", path="/v1/aperture/jobs", delay_s=30, times=1)
    first = start_worker({**env, "APERTURE_METRICS_PORT": "0"}, tmp_root / "rabbit-kill-first.log", concurrency=1)
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

        second = start_worker({**env, "APERTURE_METRICS_PORT": "0"}, tmp_root / "rabbit-kill-second.log", concurrency=1)
        second.wait_for_log(f"aperture.create_job[{task_id}] succeeded", timeout=60)
        assert requeued_s < 5
        assert len(job_rows(rabbit_db, request_id)) == 1  # run twice, stored once
    finally:
        first.stop()
        if second is not None:
            second.stop()
        reset_simulator(simulator.url)
