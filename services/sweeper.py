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

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from config import Settings
from models import CallbackStatus, Job, JobState, ScoredMedia, ScoringState
from models.scoring import SWEPT_SCORING_STATES
from services import scoring
from services.scheduling import POLL_TASK, SUBMIT_TASK, Dispatch

TASK_FOR_STATE = {JobState.SUBMITTING: SUBMIT_TASK, JobState.POLLING: POLL_TASK}
SCORING_TASK_FOR_STATE = {
    ScoringState.SUBMITTING: scoring.SUBMIT_SCORING_TASK,
    ScoringState.POLLING: scoring.POLL_SCORING_TASK,
    ScoringState.AWAITING_TAGS: scoring.FLUSH_TAGGING_TASK,
}


def due_looks(session: Session, *, settings: Settings, now: dt.datetime, limit: int) -> list[Dispatch]:
    lost_before = now - dt.timedelta(seconds=settings.lost_message_after_s)
    due = (
        select(Job.id)
        .where(
            Job.state.in_([JobState.SUBMITTING, JobState.POLLING]),
            Job.next_poll_at <= now,
            or_(Job.poll_dispatched.is_(False), Job.next_poll_at <= lost_before),
        )
        .order_by(Job.next_poll_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .cte("due")
    )
    # One statement claims the whole batch. Due "now": if this message is lost too, a
    # sweep after lost_message_after_s re-sends it.
    rows = session.execute(
        update(Job)
        .where(Job.id == due.c.id)
        .values(poll_token=func.gen_random_uuid(), poll_dispatched=True, next_poll_at=now)
        .returning(Job.id, Job.state, Job.poll_token)
    ).all()
    return [Dispatch(TASK_FOR_STATE[JobState(r.state)], r.id, r.poll_token, 0.0) for r in rows]


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


def due_scoring_looks(session: Session, *, settings: Settings, now: dt.datetime, limit: int) -> list[Dispatch]:
    """The same as due_looks, for scored media (a media in TAGGING is looked at through its job)."""
    lost_before = now - dt.timedelta(seconds=settings.lost_message_after_s)
    due = (
        select(ScoredMedia.id)
        .where(
            ScoredMedia.state.in_(SWEPT_SCORING_STATES),
            ScoredMedia.next_poll_at <= now,
            or_(ScoredMedia.poll_dispatched.is_(False), ScoredMedia.next_poll_at <= lost_before),
        )
        .order_by(ScoredMedia.next_poll_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .cte("due_media")
    )
    rows = session.execute(
        update(ScoredMedia)
        .where(ScoredMedia.id == due.c.id)
        .values(poll_token=func.gen_random_uuid(), poll_dispatched=True, next_poll_at=now)
        .returning(ScoredMedia.id, ScoredMedia.state, ScoredMedia.poll_token)
    ).all()
    return [scoring.MediaDispatch(SCORING_TASK_FOR_STATE[ScoringState(r.state)], r.id, r.poll_token, 0.0) for r in rows]


def owed_score_callbacks(session: Session, *, settings: Settings, now: dt.datetime, limit: int) -> list[Dispatch]:
    """Ended scored media whose callback should have gone out by now: one send message each.
    An ended row has no next look, so next_poll_at notes when its send was last dispatched:
    it is not dispatched again before that message too could be presumed lost."""
    before = now - dt.timedelta(seconds=settings.lost_message_after_s)
    ids = list(
        session.execute(
            select(ScoredMedia.id)
            .where(
                ScoredMedia.callback_status == CallbackStatus.PENDING,
                ScoredMedia.ended_at <= before,
                or_(ScoredMedia.next_poll_at.is_(None), ScoredMedia.next_poll_at <= before),
            )
            .order_by(ScoredMedia.ended_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).scalars()
    )
    if ids:
        session.execute(update(ScoredMedia).where(ScoredMedia.id.in_(ids)).values(next_poll_at=now))
    return [scoring.callback_dispatch(i) for i in ids]
