"""The sweeper: Postgres says when every active job must next be looked at; the
sweeper makes sure a message exists for each look that is due.

It sends a message for (a) parked looks that are now due (waits longer than the
maximum countdown never had one), and (b) looks whose message should have run a
while ago but did not (lost to kill -9, a Redis flush or restart). Each gets a fresh
token, so if the old message turns up after all, it is a no-op. Rows are taken with
FOR UPDATE SKIP LOCKED in bounded batches: several sweepers never block each other
and never send the same look twice.
"""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from config import Settings
from models import CallbackStatus, Job, JobState
from services.scheduling import POLL_TASK, SUBMIT_TASK, Dispatch

TASK_FOR_STATE = {JobState.SUBMITTING: SUBMIT_TASK, JobState.POLLING: POLL_TASK}


def due_looks(session: Session, *, settings: Settings, now: dt.datetime, limit: int) -> list[Dispatch]:
    lost_before = now - dt.timedelta(seconds=settings.lost_message_after_s)
    rows = session.execute(
        select(Job.id, Job.state)
        .where(
            Job.state.in_([JobState.SUBMITTING, JobState.POLLING]),
            Job.next_poll_at <= now,
            or_(Job.poll_dispatched.is_(False), and_(Job.poll_dispatched.is_(True), Job.next_poll_at <= lost_before)),
        )
        .order_by(Job.next_poll_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    dispatches = []
    for row in rows:
        token = uuid.uuid4()
        # Due now: if this message is lost too, the next sweep after lost_message_after_s resends it.
        session.execute(
            update(Job).where(Job.id == row.id).values(poll_token=token, poll_dispatched=True, next_poll_at=now)
        )
        dispatches.append(Dispatch(TASK_FOR_STATE[JobState(row.state)], row.id, token, 0.0))
    return dispatches


def owed_callbacks(session: Session, *, settings: Settings, now: dt.datetime, limit: int) -> list[uuid.UUID]:
    """Ended jobs whose callback should have gone out by now but is not marked sent."""
    before = now - dt.timedelta(seconds=settings.lost_message_after_s)
    return list(
        session.execute(
            select(Job.id)
            .where(Job.callback_status == CallbackStatus.PENDING, Job.ended_at <= before)
            .order_by(Job.ended_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).scalars()
    )
