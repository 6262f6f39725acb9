"""A configured caller's own intake queue (config/tasks.caller_queue), on both brokers: a worker started
as deployed (``-Q`` naming the system's queues, nothing about callers) serves ``aperture.submit.<caller>``
too, and a request sent there by name is taken in like one sent to ``aperture.submit``. What the queue
is for, that another application's burst does not hold these requests back, is measured by
bench/bench_fairness.py, not timed here.
"""

from __future__ import annotations

import json
import tempfile
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from celery import Celery

from chaos.harness import Redis
from cli.processes import Process, worker_argv
from config.celery import caller_config
from config.tasks import CREATE_JOB, caller_queue
from tests.conftest import ROOT
from tests.support import wait_for
from tests.test_rabbitmq import rabbit_db, rabbit_env_for, vhosts  # noqa: F401  (fixtures)

pytestmark = pytest.mark.slow


def submitted(database_url: str, request_id: str) -> tuple[str, str | None] | None:
    """The row's caller and error, once its Vidmob job was created."""
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT caller, error FROM jobs WHERE request_id = %s AND vidmob_job_id IS NOT NULL", (request_id,)
        ).fetchone()
    return (row[0], row[1]) if row else None


@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_a_request_sent_to_its_callers_own_queue_is_taken_in_by_a_worker_started_as_deployed(
    broker: str,
    app_env: dict[str, str],
    vhosts: Any,  # noqa: F811  (the fixture imported above)
    rabbit_db: str,  # noqa: F811
    tmp_root: Path,
) -> None:
    # A database and a broker of this test's own: the session's worker and dispatcher never see its job
    # (left polling at the end), and its worker never takes the session's messages.
    private_redis = None
    if broker == "redis":
        private_redis = Redis(Path(tempfile.mkdtemp(prefix="aperture-caller-queue-", dir=tmp_root)))
        env = app_env | {"APERTURE_BROKER_URL": private_redis.url, "APERTURE_DATABASE_URL": rabbit_db}
    else:
        env = rabbit_env_for(app_env, vhosts(), rabbit_db)
    env = env | {"APERTURE_CALLERS": json.dumps({"shop": {}}), "APERTURE_METRICS_PORT": "0"}
    log = tmp_root / f"caller-queue-{broker}-{uuid.uuid4().hex[:6]}.log"
    sender = Celery("shop", broker=env["APERTURE_BROKER_URL"], set_as_current=False)
    sender.conf.update(caller_config(env["APERTURE_BROKER_URL"]))
    worker = None
    try:
        worker = Process("worker", worker_argv(f"callers-{uuid.uuid4().hex[:6]}@%h", concurrency=1), env, log, cwd=ROOT)
        worker.wait_for_log("ready.", timeout=60)
        request_id = f"own-queue-{uuid.uuid4().hex[:8]}"
        kwargs = {"assets": [{"url": f"https://cdn.example.com/q/{request_id}.mp4"}], "request_id": request_id}
        sender.send_task(CREATE_JOB.name, kwargs=kwargs | {"caller": "shop"}, queue=caller_queue("shop"))
        found = wait_for(
            lambda: submitted(env["APERTURE_DATABASE_URL"], request_id),
            timeout=60,
            what=f"the request sent to {caller_queue('shop')} submitted to Vidmob",
        )
        assert found == ("shop", None)
    finally:
        sender.close()
        if worker is not None:
            worker.stop()
        if private_redis is not None:
            private_redis.stop()
