"""When to look at a durable row next.

A look is parked in Postgres (``next_poll_at``) for the dispatcher to send when due, or, for a
wait of at most ``max_countdown_s``, a countdown message. On Redis that is 0 by default (only a look due
at once): a countdown message sits unacknowledged in a worker's RAM and is redelivered after the
visibility timeout, so only near-term ones may ride on it. On RabbitMQ it is a day: the broker holds the
countdown in its delay queues, and the row still says when it is due (docs/operations.md). Pure
functions: ``now`` and settings are passed in.
"""

from __future__ import annotations

import datetime as dt
import math
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


# The first look may come later than the maximum interval, but no more than the maximum interval
# after the work is done, except with this probability: long jobs skip early calls, and a job that
# ends unusually early waits for its first look hardly longer than on the fixed schedule.
FIRST_LOOK_RISK = 0.02


def adaptive_delay(prediction: Prediction, elapsed_s: float, *, worth_s: float, min_s: float, max_s: float) -> float:
    """How long to wait, ``elapsed_s`` after submission, before looking at work whose duration is
    ``prediction`` (not jittered: the caller jitters).

    The next look is at the ``s`` where P(done between now and s | not done now) * (s - now) equals
    ``2 * worth_s`` (``APERTURE_POLL_DELAY_PER_CALL_S``: the detection delay one status call is worth).
    While the work is unlikely to be done the waits are long; around the predicted finish, where it
    is most likely to end, they are short (the square-root rule: wait = sqrt(2 * worth / hazard));
    past it, as the tail thins, they lengthen again. Bounded by ``min_s`` and ``max_s``, except the
    first look (``elapsed_s`` 0), which may come later than ``max_s``: near the predicted finish."""
    lowest = min_s
    survival = 1.0 - prediction.cdf(elapsed_s)
    if survival < 1e-9:
        return max_s  # far past anything the model expected: it is of no help here
    highest = max_s if elapsed_s > 0 else max_s + prediction.quantile(FIRST_LOOK_RISK)

    def gain(wait: float) -> float:
        return (prediction.cdf(elapsed_s + wait) - (1.0 - survival)) / survival * wait

    target = 2 * worth_s
    if gain(lowest) >= target:
        return lowest
    if gain(highest) <= target:
        return highest
    low, high = lowest, highest
    for _ in range(40):  # bisection (on a log scale once above 0): to well under a second
        mid = math.sqrt(low * high) if low > 0 else high / 2
        if gain(mid) < target:
            low = mid
        else:
            high = mid
    return high


def look_delay(
    prediction: Prediction | None, elapsed_s: float, *, fixed_s: float, max_s: float, settings: Settings
) -> float:
    """The wait before the next status check, jittered: ``fixed_s`` without a prediction (the fixed
    schedule, or a cold start), else the adaptive wait (``adaptive_delay``) bounded by the minimum
    interval and ``max_s``."""
    if prediction is None:
        return jittered(fixed_s, settings)
    wait = adaptive_delay(
        prediction, elapsed_s, worth_s=settings.poll_delay_per_call_s, min_s=settings.poll_min_interval_s, max_s=max_s
    )
    return jittered(wait, settings)


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
