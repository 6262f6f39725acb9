"""What an API error means for a durable row: pure decisions, the same for every kind.

Given the error and the row's situation, the answer is to end the row (with a state and a
reason) or to look again after a delay. No session, no clock, no environment: unit-tested
in tests/test_decisions.py.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from clients.http import ApiError
from config import Settings
from services.durable.schedule import backoff

FAILED = "failed"
TIMED_OUT = "timed_out"


@dataclass(frozen=True)
class End:
    state: str
    error: str | None = None


@dataclass(frozen=True)
class LookAgain:
    delay_s: float
    error: str | None = None


Decision = End | LookAgain


def after_submit_error(
    error: ApiError, *, attempt: int, deadline_at: dt.datetime | None, now: dt.datetime, settings: Settings
) -> Decision:
    """A terminal error fails the row; a retryable one is tried again with backoff that
    honors Retry-After, unless the next try would fall after the deadline."""
    if not error.retryable:
        return End(FAILED, f"submission refused: {error}")
    delay = backoff(attempt, settings, error.retry_after)
    if deadline_at is not None and now + dt.timedelta(seconds=delay) > deadline_at:
        return End(TIMED_OUT, f"could not submit before the deadline; last error: {error}")
    return LookAgain(delay, str(error))


def after_poll_error(error: ApiError, *, interval_s: float, settings: Settings) -> Decision:
    """A status check that failed: terminal ends the row, retryable looks again soon (never
    later than the normal interval, never sooner than Retry-After)."""
    if not error.retryable:
        return End(FAILED, f"status check refused: {error}")
    delay = min(interval_s, backoff(1, settings, error.retry_after))
    if error.retry_after is not None:
        delay = max(delay, error.retry_after)
    return LookAgain(delay, str(error))
