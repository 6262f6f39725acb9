"""Celery entry point: `celery -A workers worker|flower` finds `workers.app`.

The app is built on first access (PEP 562), so importing a light module of this
package (the liveness probe `python -m workers.health`) neither needs the broker URL
nor pays for loading every task.
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
