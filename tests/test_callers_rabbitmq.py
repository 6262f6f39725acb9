"""On RabbitMQ the caller is who the broker says sent the message: the AMQP ``user_id`` property,
which RabbitMQ checks against the user of the publishing connection.

A vhost and two broker users of this test's own (made with rabbitmqctl, removed after): application
``a`` may publish only as itself, a message of ``a`` claiming to be ``b`` is refused by RabbitMQ (never
delivered), and a Celery worker consuming the vhost stores the request under the user_id's caller.
The worker runs in this process (celery.contrib.testing's embedded worker, the solo pool) against the
in-process tier's PostgreSQL and simulator: what is tested is the message as the broker delivers it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from amqp.exceptions import PreconditionFailed
from celery import Celery
from celery.contrib.testing.worker import start_worker
from sqlalchemy import select

from config import get_settings
from config.celery import celery_config
from config.tasks import CREATE_JOB
from models import Job, JobState
from models.db import session_scope
from tests.conftest import REQUIRE_SERVICES
from tests.inprocess import Fleet
from tests.support import wait_for

pytestmark = pytest.mark.slow
AMQP = "amqp://{user}:{password}@127.0.0.1:5672/{vhost}"


def _ctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def rabbitmq() -> Iterator[dict[str, str]]:
    """A vhost of this module's own, and two applications' users (``a``, ``b``) allowed on it."""
    if shutil.which("rabbitmqctl") is None:
        if REQUIRE_SERVICES:
            pytest.fail("rabbitmqctl is not installed")
        pytest.skip("rabbitmqctl is not installed")
    suffix = uuid.uuid4().hex[:8]
    vhost = f"aperture-callers-{suffix}"
    users = {"a": f"app-a-{suffix}", "b": f"app-b-{suffix}", "worker": f"aperture-{suffix}"}
    _ctl("add_vhost", vhost)
    try:
        for user in users.values():
            _ctl("add_user", user, f"pw-{user}")
            _ctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
        yield {"vhost": vhost, **users}
    finally:
        for user in users.values():
            subprocess.run(["rabbitmqctl", "delete_user", user], capture_output=True, timeout=60)
        subprocess.run(["rabbitmqctl", "delete_vhost", vhost], capture_output=True, timeout=60)


def url(rabbitmq: dict[str, str], who: str) -> str:
    user = rabbitmq[who]
    return AMQP.format(user=user, password=f"pw-{user}", vhost=rabbitmq["vhost"])


def client(rabbitmq: dict[str, str], who: str) -> Celery:
    """An application's own Celery client, publishing with confirms (a refusal is an error at once)."""
    app = Celery(f"client-{who}", broker=url(rabbitmq, who), set_as_current=False)
    # The four settings README gives a caller on RabbitMQ: it declares the queue as the workers do.
    app.conf.update(
        task_default_queue_type="quorum",
        task_default_exchange_type="topic",
        task_create_missing_queue_type="quorum",
        task_create_missing_queue_exchange_type="topic",
        broker_transport_options={"confirm_publish": True},
    )
    return app


def send(app: Celery, request_id: str, **options: Any) -> None:
    kwargs = {"assets": [{"url": f"https://cdn.example.com/amqp/{request_id}.mp4"}], "request_id": request_id}
    app.send_task(CREATE_JOB.name, kwargs=kwargs | options.pop("extra", {}), queue=CREATE_JOB.queue, **options)


def stored(request_id: str) -> Job | None:
    with session_scope() as s:
        return s.execute(select(Job).where(Job.request_id == request_id)).scalar_one_or_none()


@pytest.fixture(scope="module")
def consumer(rabbitmq: dict[str, str]) -> Iterator[Celery]:
    """A Celery worker consuming the vhost as the system's own broker user, for the whole module: its
    tasks read the settings when they run (each test's ``fleet``)."""
    import tasks  # noqa: F401  (registers the system's tasks on every app)

    app = Celery("aperture-rabbitmq", set_as_current=False)
    app.config_from_object(celery_config(get_settings(), url(rabbitmq, "worker")))
    app.conf.worker_soft_shutdown_timeout = 0  # nothing to hand back at the end of the module
    with start_worker(app, pool="threads", concurrency=1, perform_ping_check=False, shutdown_timeout=30):
        yield app


@pytest.fixture
def worker(
    fleet: Fleet, consumer: Celery, rabbitmq: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Celery]:
    """The worker, with the applications ``a`` and ``b`` configured as callers."""
    monkeypatch.setenv("APERTURE_CALLERS", json.dumps({rabbitmq["a"]: {}, rabbitmq["b"]: {}}))
    get_settings.cache_clear()
    yield consumer
    get_settings.cache_clear()


def test_a_message_claiming_another_broker_user_is_refused_by_rabbitmq(
    worker: Celery, rabbitmq: dict[str, str]
) -> None:
    a = client(rabbitmq, "a")
    with pytest.raises(PreconditionFailed, match="user_id property set to"):
        send(a, "forged", user_id=rabbitmq["b"])
    # Sent after the forged one, on the same queue: once it is stored, the forged one would have been.
    send(a, "honest", user_id=rabbitmq["a"])
    honest = wait_for(lambda: stored("honest"), timeout=60, what="the honest request stored")
    assert honest.caller == rabbitmq["a"]
    assert stored("forged") is None


def test_the_caller_is_the_user_id_and_a_declared_caller_must_match_it(
    worker: Celery, rabbitmq: dict[str, str]
) -> None:
    b = client(rabbitmq, "b")
    send(b, "b-1", user_id=rabbitmq["b"])
    send(b, "b-2", user_id=rabbitmq["b"], extra={"caller": rabbitmq["a"]})
    # No user_id: RabbitMQ vouches for nobody, so the request is the default caller's.
    send(b, "b-3")
    first = wait_for(lambda: stored("b-1"), timeout=60, what="b-1 stored")
    mismatch = wait_for(lambda: stored("b-2"), timeout=60, what="b-2 stored")
    anonymous = wait_for(lambda: stored("b-3"), timeout=60, what="b-3 stored")
    assert (first.caller, first.error) == (rabbitmq["b"], None)
    assert mismatch.state is JobState.REJECTED and mismatch.caller == rabbitmq["b"]
    assert mismatch.error == (
        f"caller: {rabbitmq['a']!r} is not the broker user that sent the request ({rabbitmq['b']!r})"
    )
    assert anonymous.caller == "default"
