"""What an operator may change by hand: re-submitting a job that ended failed or timed out.

A compare-and-set like every other state change (services/durable/lifecycle.restart): only a job that
is still failed or timed out moves, so two operators retrying at once re-submit it once. The caller
commits, then sends the returned message; if that send is lost, the dispatcher sends it again.
"""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy.orm import Session

from config import Settings
from models import Job, JobState
from services.durable import lifecycle
from services.durable.messages import Message
from services.tagging.kind import KIND

RETRYABLE_STATES = (JobState.FAILED, JobState.TIMED_OUT)


def retry_job(session: Session, job_id: uuid.UUID, *, settings: Settings, now: dt.datetime) -> Message | None:
    """Back to SUBMITTING with a fresh token and deadline; None if the job is not (or no longer)
    failed or timed out. The abandoned Vidmob job id is cleared: the next submission makes a new one.
    A pack is not retried: its members were sent to Vidmob alone when it failed."""
    return lifecycle.restart(
        session,
        KIND,
        job_id,
        Job.state.in_(RETRYABLE_STATES),
        Job.is_pack.is_(False),
        to_state=JobState.SUBMITTING,
        now=now,
        values={
            "vidmob_job_id": None,
            "submitted_at": None,
            "completed_at": None,
            "deadline_at": now + dt.timedelta(seconds=settings.job_deadline_s),
            "poll_count": 0,
            "submit_attempts": 0,
        },
    )
