"""A cap on Vidmob tagging jobs open at once (``APERTURE_MAX_OPEN_JOBS``).

Open means Vidmob holds the job or is about to: rows in ``polling``, and rows in ``submitting``
whose create call is under way (an intent attempt of unknown outcome, younger than a lease).
A submission that finds the cap reached is not sent: its row stays ``submitting``, parked in
PostgreSQL (never a message in Redis), and is looked at again after the poll interval (a slot is
freed only when a poll sees a job end). Every submission's check and its intent row are taken
under one transaction-level advisory lock, so concurrent workers never overshoot the cap.
"""

from __future__ import annotations

import datetime as dt
import zlib

from sqlalchemy import and_, exists, func, select, text
from sqlalchemy.orm import Session

from config import Settings
from models import ApiAttempt, Job, JobState
from services.durable import lifecycle
from services.durable.messages import Outcome
from services.durable.schedule import jittered, lease_until
from services.tagging.claims import SubmitClaim
from services.tagging.kind import KIND

_LOCK_KEY = zlib.crc32(b"aperture.max_open_jobs")


def open_jobs(session: Session, *, settings: Settings, now: dt.datetime) -> int:
    """Jobs Vidmob holds or is being asked to create. Counted from the partial and
    (state, created_at) indexes over active rows: cheap however many jobs have ended."""
    polling = select(func.count()).select_from(Job).where(Job.state == JobState.POLLING)
    # An intent older than a lease belongs to a worker that died mid-call: its row is taken over
    # (and counted again) by the next claim.
    live_since = now - (lease_until(now, settings) - now)
    creating = (
        select(func.count())
        .select_from(Job)
        .where(
            Job.state == JobState.SUBMITTING,
            exists().where(
                and_(ApiAttempt.job_id == Job.id, ApiAttempt.outcome == "unknown", ApiAttempt.attempted_at > live_since)
            ),
        )
    )
    in_flight: int = session.execute(select(polling.scalar_subquery() + creating.scalar_subquery())).scalar_one()
    return in_flight


def hold_if_full(session: Session, claim: SubmitClaim, *, settings: Settings, now: dt.datetime) -> Outcome | None:
    """The submit step's check, in its claim's transaction: None to go ahead (the intent row
    written next in this transaction counts the job as open), else the row parked until the
    next look. The lock is held until that transaction commits."""
    cap = settings.max_open_jobs
    if not cap:
        return None
    session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
    count = open_jobs(session, settings=settings, now=now)
    if count < cap:
        return None
    reason = f"waiting for a free slot: {count} Vidmob jobs open (APERTURE_MAX_OPEN_JOBS={cap})"
    # Held back, not tried: the claim's count of submission attempts is given back. Parked whatever
    # APERTURE_MAX_COUNTDOWN_S says: work beyond the cap waits in PostgreSQL, and the dispatcher sends
    # its look when due.
    return lifecycle.reschedule(
        session, KIND, claim, state=JobState.SUBMITTING, delay_s=jittered(settings.poll_interval_s, settings),
        settings=settings, now=now, values={"error": reason, "submit_attempts": Job.submit_attempts - 1}, park=True,
    )  # fmt: skip
