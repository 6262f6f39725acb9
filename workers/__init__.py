"""The processes of the system: the Celery worker, the dispatcher, and what runs inside them.

`celery -A workers worker|flower` finds `workers.app`. The app is built on first access (PEP 562), so
importing a light module of this package (the liveness probe `python -m workers.health`) neither
needs the broker URL nor pays for loading every task.

- application.py   the app factory: settings, Celery config, and everything wired at start-up
- consumer.py      the worker's consumer, so a Redis restart does not end the worker
- dispatcher.py    `python -m workers.dispatcher`: sends the looks PostgreSQL says are due
- bounded_json.py  the worker's JSON decoder: messages too large or too deep become rejections
- signals.py       the worker's process hooks (pool after fork, log context, metrics observers)
- metrics.py       the worker's Prometheus metrics
- logging.py       JSON log lines that say which task and row they are about; the key redacted
- health.py        liveness without the broker: a heartbeat file and its probe
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from celery import Celery

    app: Celery


def __getattr__(name: str) -> Any:
    if name == "app":
        from workers.application import app

        return app
    raise AttributeError(f"module 'workers' has no attribute {name!r}")
