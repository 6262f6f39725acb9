"""A caller's budget: assets sent to Vidmob per UTC day (``APERTURE_CALLERS``: ``assets_per_day``).

Checked by the submit step (a hold, after reuse and batching, before the open-jobs cap): an asset
answered by reuse is never sent, so it never counts. Spent is what the caller's Vidmob jobs of the
day carried (``jobs.sent_assets``, recorded with the submission), plus the assets of its create
calls under way (an intent of unknown outcome, younger than a lease). A submission that would pass
the budget is refused (``over_budget: refuse``: the request ends rejected with the reason, its
callback told) or waits for the next day (``wait``: parked until midnight UTC, its error says why).
The check and the create call's intent row are taken under one advisory lock per caller, so
concurrent workers never overspend a budget together.
"""

from __future__ import annotations

import datetime as dt
import zlib
from dataclasses import dataclass

from sqlalchemy import and_, exists, func, select, text
from sqlalchemy.orm import Session

from config import Settings
from models import ApiAttempt, Job, JobState
from services.durable import lifecycle
from services.durable.messages import Outcome
from services.durable.schedule import lease_until
from services.tagging.claims import SubmitClaim
from services.tagging.kind import KIND


def day_start(now: dt.datetime) -> dt.datetime:
    return now.astimezone(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def spent_today(session: Session, caller: str, *, settings: Settings, now: dt.datetime) -> int:
    """Assets the caller's Vidmob jobs carried since midnight UTC, and those of its create calls under way."""
    start = day_start(now)
    # A job is created before it is submitted: the (caller, created_at) index bounds the rows read.
    earliest = start - dt.timedelta(seconds=settings.job_deadline_s)
    sent = select(func.coalesce(func.sum(Job.sent_assets), 0)).where(
        Job.caller == caller, Job.created_at >= earliest, Job.submitted_at >= start
    )
    live_since = now - (lease_until(now, settings) - now)
    creating = select(func.coalesce(func.sum(Job.asset_count), 0)).where(
        Job.caller == caller,
        Job.state == JobState.SUBMITTING,
        exists().where(
            and_(ApiAttempt.job_id == Job.id, ApiAttempt.outcome == "unknown", ApiAttempt.attempted_at > live_since)
        ),
    )
    total: int = session.execute(select(sent.scalar_subquery() + creating.scalar_subquery())).scalar_one()
    return int(total)


@dataclass(frozen=True)
class Budget:
    per_day: int
    spent: int

    @property
    def left(self) -> int:
        return max(0, self.per_day - self.spent)


def budget_of(session: Session, caller: str, *, settings: Settings, now: dt.datetime) -> Budget | None:
    """The caller's budget today (None: it has none)."""
    config = settings.caller(caller)
    if config is None or config.assets_per_day is None:
        return None
    return Budget(config.assets_per_day, spent_today(session, caller, settings=settings, now=now))


def hold_if_over(session: Session, claim: SubmitClaim, *, settings: Settings, now: dt.datetime) -> Outcome | None:
    """The submit step's check, in its claim's transaction: None to go ahead, else the request
    refused or parked until the next day, as the caller's ``over_budget`` says."""
    config = settings.caller(claim.caller)
    if config is None or config.assets_per_day is None or not claim.assets:
        return None
    session.execute(
        text("SELECT pg_advisory_xact_lock(:key)"), {"key": zlib.crc32(f"aperture.budget:{claim.caller}".encode())}
    )
    spent = spent_today(session, claim.caller, settings=settings, now=now)
    asked = len(claim.assets)
    if spent + asked <= config.assets_per_day:
        return None
    reason = (
        f"caller {claim.caller!r} is over its budget: {spent} of {config.assets_per_day} assets sent to Vidmob "
        f"today (UTC), and this request needs {asked} more"
    )
    if config.over_budget == "refuse":
        return lifecycle.end(session, KIND, claim, JobState.REJECTED, now, error=reason)
    tomorrow = day_start(now) + dt.timedelta(days=1)
    return lifecycle.reschedule(
        session, KIND, claim, state=JobState.SUBMITTING, delay_s=(tomorrow - now).total_seconds(),
        settings=settings, now=now, park=True,
        values={"error": f"{reason}: waiting for the next day", "submit_attempts": Job.submit_attempts - 1},
    )  # fmt: skip
