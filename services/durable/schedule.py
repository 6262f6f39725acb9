"""When to look at a durable row next.

A look is parked in Postgres (``next_poll_at``) for the dispatcher to send when due, or, for a
wait of at most ``max_countdown_s`` (0 by default: only a look due at once), a message: countdown
messages sit unacknowledged in a worker's RAM and are redelivered after the broker's visibility
timeout, so only near-term ones may ride on them (docs/operations.md). Pure functions: ``now``
and settings are passed in.
"""

from __future__ import annotations

import datetime as dt
import math
import random
import uuid
from dataclasses import dataclass

from config import Settings


@dataclass(frozen=True)
class NextLook:
    at: dt.datetime
    token: uuid.UUID
    dispatched: bool  # False: parked, the dispatcher will send it when due
    delay_s: float


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def jittered(seconds: float, settings: Settings) -> float:
    spread = seconds * settings.poll_jitter
    return max(0.0, seconds + random.uniform(-spread, spread))


def backoff(attempt: int, settings: Settings, retry_after: float | None = None) -> float:
    """Exponential backoff with full jitter, capped, never sooner than Retry-After."""
    capped = min(settings.retry_backoff_max_s, settings.retry_backoff_base_s * 2 ** max(0, attempt - 1))
    delay = random.uniform(capped / 2, capped)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay


def schedule(now: dt.datetime, delay_s: float, settings: Settings) -> NextLook:
    return NextLook(
        at=now + dt.timedelta(seconds=delay_s),
        token=uuid.uuid4(),
        dispatched=delay_s <= settings.max_countdown_s,
        delay_s=delay_s,
    )


def lease_until(now: dt.datetime, settings: Settings) -> dt.datetime:
    """While a worker holds a row, the row says "look again after this": the hard time
    limit kills the task before then, so a crashed holder is recovered by the dispatcher
    and a live one is never second-guessed."""
    return now + dt.timedelta(seconds=settings.task_time_limit_s + 5)
