"""Small helpers the tests share: waiting on Postgres, reading the simulator's counters."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from typing import Any, TypeVar

import redis
import requests
from sqlalchemy import select

from models import ApiAttempt, Asset, Job, JobState
from models.db import session_scope

T = TypeVar("T")
TERMINAL = {JobState.COMPLETE, JobState.FAILED, JobState.TIMED_OUT, JobState.REJECTED}


def wait_for(predicate: Callable[[], T | None], timeout: float = 30, interval: float = 0.1, what: str = "") -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


def job_by_request_id(request_id: str) -> Job | None:
    with session_scope() as s:
        return s.execute(select(Job).where(Job.request_id == request_id)).scalar_one_or_none()


def wait_for_job(request_id: str, states=TERMINAL, timeout: float = 30) -> Job:
    def ended() -> Job | None:
        job = job_by_request_id(request_id)
        return job if job is not None and job.state in states else None

    return wait_for(ended, timeout, what=f"job {request_id} to reach {sorted(s.value for s in states)}")


def tags_by_url(job_id) -> dict[str, set[tuple[str, str]]]:
    with session_scope() as s:
        assets = s.execute(select(Asset).where(Asset.job_id == job_id).order_by(Asset.position)).scalars().all()
        return {a.url: {(t.category, t.label) for t in a.tags} for a in assets}


def attempts_for(job_id) -> list[ApiAttempt]:
    with session_scope() as s:
        return list(s.execute(select(ApiAttempt).where(ApiAttempt.job_id == job_id).order_by(ApiAttempt.id)).scalars())


def sim_stats(simulator) -> dict[str, Any]:
    return requests.get(f"{simulator.url}/_sim/stats", timeout=5).json()


def sim_fault(simulator, **fault: Any) -> None:
    requests.post(f"{simulator.url}/_sim/faults", json=fault, timeout=5).raise_for_status()


def send(app_env: dict[str, str], task: str, **kwargs: Any) -> str:
    """Enqueue by name, as another application would."""
    from celery import Celery

    from config.celery import caller_config

    app = Celery(broker=app_env["APERTURE_BROKER_URL"])
    app.conf.update(caller_config(app_env["APERTURE_BROKER_URL"]))
    app.conf.task_serializer = "json"
    try:
        return app.send_task(task, kwargs=kwargs).id
    finally:
        app.close()


def drain(broker_url: str, queue: str) -> list:
    """Every message waiting on ``queue`` (a caller's callback queue), taken off it."""
    from kombu import Connection

    with Connection(broker_url) as conn:
        q = conn.SimpleQueue(queue)
        messages = []
        while True:
            try:
                messages.append(q.get(timeout=0.5))
            except q.Empty:
                break
        q.close()
    return messages


def dispatcher_passes(dispatcher: Any) -> int:
    """How many passes the dispatcher process has run (its metrics endpoint)."""
    text = requests.get(f"http://127.0.0.1:{dispatcher.metrics_port}/metrics", timeout=5).text
    for line in text.splitlines():
        if line.startswith("aperture_dispatcher_passes_total "):
            return int(float(line.split()[1]))
    return 0


def wait_for_passes(dispatcher: Any, n: int, timeout: float = 60) -> None:
    """Until the dispatcher process has run ``n`` more passes: every look due meanwhile was sent.
    What a subprocess test that asserts "nothing more happens" waits for."""
    target = dispatcher_passes(dispatcher) + n
    wait_for(lambda: dispatcher_passes(dispatcher) >= target, timeout, interval=0.05, what=f"{n} dispatcher passes")


def claim_redis_database(server: str = "redis://127.0.0.1:6379", hours: float = 3.0) -> tuple[str, Callable[[], None]]:
    """A Redis database of this server (1 to 15) that no other test run on this machine is using, and
    the function that gives it back. Test runs side by side (two developers, a developer and CI, the
    tiers of one run) must not flush or consume each other's messages: each claims its database with a
    key in database 0 (SET NX, expiring after ``hours`` should a run die without giving it back)."""
    import os
    import random

    control = redis.Redis.from_url(f"{server}/0", socket_connect_timeout=3)
    for number in random.sample(range(1, 16), 15):
        key = f"aperture-tests:redis-db:{number}"
        if control.set(key, os.getpid(), nx=True, ex=int(hours * 3600)):

            def give_back(key: str = key) -> None:
                control.delete(key)

            return f"{server}/{number}", give_back
    raise RuntimeError(f"every database of {server} is claimed by another test run (keys aperture-tests:redis-db:*)")


def reset_simulator(url: str) -> None:
    """The simulator at ``url`` as a test starts from: no jobs, no faults, and every setting at the
    tests' defaults (tests.conftest.SIM_CONFIG over the simulator's own), not only those a previous
    test happened to change (a rotated API key, ``never_tagged``, a timing)."""
    import dataclasses

    from simulator import SimulatorConfig
    from tests.conftest import SIM_CONFIG

    requests.post(f"{url}/_sim/reset", timeout=5).raise_for_status()
    defaults = dataclasses.asdict(SimulatorConfig(**SIM_CONFIG))
    requests.post(f"{url}/_sim/config", json=defaults, timeout=5).raise_for_status()


# The machine's RabbitMQ as Debian installs it: the default user, allowed from loopback only.
RABBITMQ_GUEST = "guest:guest"


class RabbitMQUnavailable(RuntimeError):
    """No RabbitMQ to make a vhost on: `rabbitmqctl` missing or the node not running."""


def rabbitmqctl(*args: str, timeout: float = 60) -> str:
    """The machine's RabbitMQ node, administered as its own CLI does (as root, the node's cookie)."""
    import subprocess

    try:
        done = subprocess.run(
            ["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=timeout, check=False
        )
    except (FileNotFoundError, subprocess.TimeoutExpired) as exc:
        raise RabbitMQUnavailable(f"rabbitmqctl {args[0]}: {exc}") from exc
    if done.returncode != 0:
        raise RabbitMQUnavailable(f"rabbitmqctl {' '.join(args)}: {(done.stderr or done.stdout).strip()}")
    return done.stdout


@contextmanager
def rabbitmq_vhost(server: str = "127.0.0.1:5672", credentials: str = RABBITMQ_GUEST) -> Iterator[str]:
    """A vhost of the machine's RabbitMQ that only this caller uses (as a Redis database is claimed
    above), with the user of ``credentials`` (``user:password``) allowed everything in it, deleted
    afterwards with whatever it holds. Yields its amqp:// URL."""
    import uuid

    user = credentials.split(":", 1)[0]
    name = f"aperture-test-{uuid.uuid4().hex[:10]}"
    rabbitmqctl("add_vhost", name)
    try:
        rabbitmqctl("set_permissions", "-p", name, user, ".*", ".*", ".*")
        yield f"amqp://{credentials}@{server}/{name}"
    finally:
        with suppress(RabbitMQUnavailable):
            rabbitmqctl("delete_vhost", name)


def vhost_of(url: str) -> str:
    from urllib.parse import unquote, urlsplit

    return unquote(urlsplit(url).path.lstrip("/")) or "/"


def rabbitmq_queues(url: str) -> dict[str, dict[str, Any]]:
    """Every queue of ``url``'s vhost as RabbitMQ reports it: type, ready and unacknowledged messages."""
    import json

    listed = rabbitmqctl(
        "list_queues", "-p", vhost_of(url), "--formatter", "json", "name", "type", "messages_ready",
        "messages_unacknowledged", "arguments",
    )  # fmt: skip
    return {q["name"]: q for q in json.loads(listed or "[]")}


def rabbitmq_prefetch(url: str) -> dict[str, list[int]]:
    """The prefetch count of each consumer of each queue of ``url``'s vhost, as RabbitMQ applies it."""
    import json

    listed = rabbitmqctl("list_consumers", "-p", vhost_of(url), "--formatter", "json", "queue_name", "prefetch_count")
    consumers: dict[str, list[int]] = {}
    for consumer in json.loads(listed or "[]"):
        consumers.setdefault(consumer["queue_name"], []).append(int(consumer["prefetch_count"]))
    return consumers


def rabbitmq_exchanges(url: str) -> dict[str, str]:
    """Every named exchange of ``url``'s vhost and its type."""
    import json

    listed = rabbitmqctl("list_exchanges", "-p", vhost_of(url), "--formatter", "json", "name", "type")
    return {e["name"]: e["type"] for e in json.loads(listed or "[]") if e["name"]}


def rabbitmq_ready(url: str, names: Iterable[str]) -> dict[str, int]:
    """Messages ready on each queue that exists, now (a passive declare answers from the queue itself;
    `rabbitmqctl list_queues` reports a quorum queue's counts only every few seconds)."""
    from amqp.exceptions import NotFound
    from kombu import Connection

    counts: dict[str, int] = {}
    with Connection(url, connect_timeout=5) as conn:
        for name in names:
            channel: Any = conn.channel()  # py-amqp's Channel: kombu's stubs type only the common part
            try:
                counts[name] = channel.queue_declare(queue=name, passive=True).message_count
            except NotFound:
                continue  # the channel is closed by the broker with the error
            channel.close()
    return counts
