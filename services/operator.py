"""What an operator may change by hand: re-submitting a job that ended failed or timed out.

A compare-and-set like every other state change: only a job that is still failed or timed out
moves, so two operators retrying at once re-submit it once. The caller commits, then sends the
returned message; if that send is lost, the dispatcher sends it (the row says it is due now).
"""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import update
from sqlalchemy.orm import Session

from config import Settings, tasks
from models import CallbackStatus, Job, JobState
from services import tagging
from services.durable.lifecycle import look_message
from services.durable.messages import Message

RETRYABLE_STATES = (JobState.FAILED, JobState.TIMED_OUT)


def retry_job(session: Session, job_id: uuid.UUID, *, settings: Settings, now: dt.datetime) -> Message | None:
    """Back to SUBMITTING with a fresh token and deadline; None if the job is not (or no longer)
    failed or timed out. The abandoned Vidmob job id is cleared: the next submission makes a new one."""
    token = uuid.uuid4()
    moved = session.execute(
        update(Job)
        # A pack is not retried: its members were sent to Vidmob alone when it failed.
        .where(Job.id == job_id, Job.state.in_(RETRYABLE_STATES), Job.is_pack.is_(False))
        .values(
            state=JobState.SUBMITTING,
            error=None,
            vidmob_job_id=None,
            submitted_at=None,
            completed_at=None,
            ended_at=None,
            deadline_at=now + dt.timedelta(seconds=settings.job_deadline_s),
            poll_token=token,
            poll_dispatched=True,
            next_poll_at=now,
            poll_count=0,
            submit_attempts=0,
            # The end of the retried job owes the callback again (services/durable/lifecycle.end); a
            # failure callback not sent yet is moot now and must not go out mid-retry. A new
            # generation gives that callback a task id of its own.
            callback_status=CallbackStatus.NONE,
            callback_sent_at=None,
            generation=Job.generation + 1,
        )
        .returning(Job.id)
    ).first()
    if moved is None:
        return None
    return look_message(tagging.KIND, tasks.SUBMIT_JOB.name, job_id, token, 0.0)
