"""What an API error means for a durable row: pure decisions, the same for every kind.

Given the error and the row's situation, the answer is to end the row (with a state and a
reason) or to look again after a delay. No session, no clock, no environment: unit-tested
in tests/test_decisions.py.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from clients.errors import ApiError
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
    error: ApiError,
    *,
    attempt: int,
    deadline_at: dt.datetime | None,
    now: dt.datetime,
    settings: Settings,
    unknown_outcomes: int = 0,
    max_unknown_outcomes: int | None = None,
) -> Decision:
    """A terminal error fails the row; a retryable one is tried again with backoff that
    honors Retry-After, unless the next try would fall after the deadline. For a create call
    that is not idempotent, ``unknown_outcomes`` counts the attempts that may have created
    work at Vidmob all the same: past ``max_unknown_outcomes`` the row fails rather than risk
    paying again (each one is flagged ``duplicate_risk``)."""
    if not error.retryable:
        return End(FAILED, f"submission refused: {error}")
    if max_unknown_outcomes is not None and unknown_outcomes >= max_unknown_outcomes:
        return End(
            FAILED,
            f"gave up after {unknown_outcomes} submissions whose outcome is unknown "
            f"(APERTURE_SUBMIT_MAX_RETRIES={max_unknown_outcomes}); Vidmob may hold a job for it; last error: {error}",
        )
    delay = backoff(attempt, settings, error.retry_after)
    if deadline_at is not None and now + dt.timedelta(seconds=delay) > deadline_at:
        return End(TIMED_OUT, f"could not submit before the deadline; last error: {error}")
    return LookAgain(delay, str(error))


def after_poll_error(error: ApiError, *, failures: int, settings: Settings) -> Decision:
    """A status check that failed: terminal ends the row; retryable looks again with backoff
    that grows with ``failures`` (this row's failed checks in a row, this one included), capped
    at ``APERTURE_RETRY_BACKOFF_MAX_S``, jittered, never sooner than Retry-After. During an
    outage each row slows down on its own: a few checks in the first minute, then one every
    few minutes, instead of one per poll interval."""
    if not error.retryable:
        return End(FAILED, f"status check refused: {error}")
    return LookAgain(backoff(max(1, failures), settings, error.retry_after), str(error))
