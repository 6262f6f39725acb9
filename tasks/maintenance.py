"""Periodic housekeeping."""

from __future__ import annotations

import logging

from config import get_settings
from config import tasks as spec
from services.domains import KINDS
from services.durable import sweeper
from tasks.base import aperture_task, send_after_commit

log = logging.getLogger(__name__)


@aperture_task(spec.SWEEP, soft_time_limit=60, time_limit=90)
def sweep(self) -> dict:
    """One dispatcher pass on demand (`workers/dispatcher.py` runs them continuously): send
    the messages Postgres says are due and missing (parked waits, lost messages), for every
    kind of durable row, and the callbacks still owed.

    Safe beside running dispatchers: rows are taken with FOR UPDATE SKIP LOCKED and marked
    sent in the same statement, so each due look is sent once.
    """
    outcome = sweeper.sweep(KINDS, settings=get_settings())
    send_after_commit(outcome)
    if outcome.messages or outcome.callbacks:
        log.info("sweep sent %d messages and %d owed callbacks", len(outcome.messages), len(outcome.callbacks))
    return {"dispatched": len(outcome.messages), "callbacks": len(outcome.callbacks)}
