"""Celery's own limit on this machine and broker: a task that does nothing, run by a worker with
exactly the project's Celery configuration (acks_late, prefetch 1, JSON, events, the same pool).

    celery -A bench.noop_app worker -Q bench.noop -c 2
"""

from __future__ import annotations

import os

from celery import Celery

from config import Settings
from config.celery import celery_config

app = Celery("noop")
_settings = Settings(broker_url=os.environ["APERTURE_BROKER_URL"])
assert _settings.broker_url is not None
app.config_from_object(celery_config(_settings, _settings.broker_url))
app.conf.task_routes = {"bench.noop": {"queue": "bench.noop"}}


@app.task(name="bench.noop")
def noop() -> None:
    return None
