"""When to look at a durable row next.

A look is parked in Postgres (``next_poll_at``) for the dispatcher to send when due, or, for a
wait of at most ``max_countdown_s``, a countdown message. On Redis that is 0 by default (only a look due
at once): a countdown message sits unacknowledged in a worker's RAM and is redelivered after the
visibility timeout, so only near-term ones may ride on it. On RabbitMQ it is a day: the broker holds the
countdown in its delay queues, and the row still says when it is due (docs/operations.md). Pure
functions: ``now`` and settings are passed in.
"""

from __future__ import annotations

import bisect
import datetime as dt
import random
import uuid
from dataclasses import dataclass

from config import Settings
from services.durable.prediction import Prediction


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


def spacing(checks_s: tuple[float, ...], k: int) -> float:
    """The plan's gap before its check ``k``; for the first, the gap after it (the wait to the first
    check is long, and how precisely it is kept matters as little as the gaps around it)."""
    if k > 0:
        return checks_s[k] - checks_s[k - 1]
    return checks_s[1] - checks_s[0] if len(checks_s) > 1 else checks_s[0]


def planned_wait(checks_s: tuple[float, ...], elapsed_s: float, jitter: float = 0.0) -> tuple[float, float] | None:
    """The wait, ``elapsed_s`` after submission, before the next check of the plan ``checks_s``
    (services/durable/checking.py), and the plan's spacing there; None past its end. A look within
    ``jitter`` of the spacing around a planned check counts as that check, and the next comes one
    planned gap later. A look off the plan (a plan re-made since: a refreshed model) goes to the plan's
    first check if it is still ahead, else keeps the plan's spacing where it falls, neither checking
    twice in a row nor skipping a check."""
    i = bisect.bisect_right(checks_s, elapsed_s)
    for k in (i - 1, i):  # the planned checks either side of now
        if 0 <= k < len(checks_s) and abs(elapsed_s - checks_s[k]) <= jitter * spacing(checks_s, k) + 1e-6:
            if k + 1 < len(checks_s):
                return checks_s[k + 1] - checks_s[k], spacing(checks_s, k + 1)
            return None
    if i >= len(checks_s):
        return None
    if i == 0:
        return checks_s[0] - elapsed_s, spacing(checks_s, 0)
    return checks_s[i] - checks_s[i - 1], spacing(checks_s, i)


def look_delay(
    prediction: Prediction | None, elapsed_s: float, *, fixed_s: float, max_s: float, settings: Settings
) -> float:
    """The wait before the next status check: ``fixed_s`` without a planned prediction (the fixed
    schedule, a cold start) or past its plan, jittered by ``poll_jitter`` of it; else the plan's next
    check, at least the minimum interval away and, except for the first look (``elapsed_s`` 0), at most
    ``max_s``. Only the first planned look is jittered, by ``poll_jitter`` of the plan's spacing there:
    the later ones keep the plan's spacing from it, so jobs submitted together stay apart by that
    offset, and no gap the p95 guard holds at its threshold is stretched over it."""
    planned = None if prediction is None else planned_wait(prediction.checks_s, elapsed_s, settings.poll_jitter)
    if planned is None:
        return jittered(fixed_s, settings)
    wait, gap = planned
    wait = max(wait, settings.poll_min_interval_s)
    if elapsed_s > 0:
        wait = min(wait, max_s)
    if elapsed_s > 0:
        return wait
    spread = min(gap, wait) * settings.poll_jitter
    return max(settings.poll_min_interval_s, wait + random.uniform(-spread, spread))


def backoff(attempt: int, settings: Settings, retry_after: float | None = None) -> float:
    """Exponential backoff with full jitter, capped, never sooner than Retry-After."""
    capped = min(settings.retry_backoff_max_s, settings.retry_backoff_base_s * 2 ** max(0, attempt - 1))
    delay = random.uniform(capped / 2, capped)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay


def schedule(now: dt.datetime, delay_s: float, settings: Settings, *, park: bool = False) -> NextLook:
    """The next look, ``delay_s`` from ``now``, under a new token: a countdown message when the wait is
    at most ``max_countdown_s`` (and ``park`` does not ask for PostgreSQL whatever the wait), else parked."""
    return NextLook(
        at=now + dt.timedelta(seconds=delay_s),
        token=uuid.uuid4(),
        dispatched=not park and delay_s <= settings.max_countdown_s,
        delay_s=delay_s,
    )


def lease_until(now: dt.datetime, settings: Settings) -> dt.datetime:
    """How long a worker holds a row it claimed (``leased_until``): the hard time limit kills the
    task before then, so a crashed holder is recovered by the dispatcher once it has passed, and a
    live one is never second-guessed."""
    return now + dt.timedelta(seconds=settings.task_time_limit_s + 5)
