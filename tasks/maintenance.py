"""Periodic housekeeping."""

from __future__ import annotations

import logging

from celery import shared_task

from services import steps
from tasks._enqueue import send_after_commit
from tasks.tagging import RETRY

log = logging.getLogger(__name__)


@shared_task(name="aperture.sweep", bind=True, soft_time_limit=60, time_limit=90, **RETRY)
def sweep(self) -> dict:
    """Send the messages Postgres says are due and missing (parked waits, lost
    messages) and the callbacks still owed.

    Safe twice, and with several beat instances by mistake: rows are claimed with
    FOR UPDATE SKIP LOCKED and re-tokened, so each due look is sent once.
    """
    result = steps.sweep()
    send_after_commit(result)
    if result.dispatches or result.callbacks:
        log.info("sweep sent %d messages and %d owed callbacks", len(result.dispatches), len(result.callbacks))
    return {"dispatched": len(result.dispatches), "callbacks": len(result.callbacks)}
