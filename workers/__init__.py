"""Celery entry point: `celery -A workers worker -Q aperture.submit,celery`, `celery -A workers beat`."""

from workers.app import create_app

app = create_app()

import tasks  # noqa: E402,F401  (registers every task on `app`)
import workers.signals  # noqa: E402,F401

__all__ = ["app"]
