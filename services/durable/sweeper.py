"""The sweeper: Postgres says when every active row must next be looked at; the sweeper makes
sure a message exists for each look that is due, for every kind of durable row.

It sends a message for (a) parked looks that are now due (waits longer than the maximum
countdown never had one), and (b) looks whose message should have run a while ago but did
not (lost to kill -9, a Redis flush or restart). Each gets a fresh token, so if the old
message turns up after all, it is a no-op. Rows are taken with FOR UPDATE SKIP LOCKED in
bounded batches: several sweepers never block each other and never send the same look twice.
It also collects the callbacks whose send after their row's end was lost.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from config import Settings
from models.db import session_scope
from services.durable import callbacks
from services.durable.kind import DurableKind
from services.durable.lifecycle import look_message
from services.durable.messages import Message, Outcome
from services.durable.schedule import utcnow


def due_looks(
    session: Session, kind: DurableKind, *, settings: Settings, now: dt.datetime, limit: int
) -> list[Message]:
    """Claim up to ``limit`` due looks of ``kind`` in one statement, each with a fresh token."""
    model = kind.model
    lost_before = now - dt.timedelta(seconds=settings.lost_message_after_s)
    due = (
        select(model.id)
        .where(
            model.state.in_(list(kind.look_tasks)),
            model.next_poll_at <= now,
            or_(model.poll_dispatched.is_(False), model.next_poll_at <= lost_before),
        )
        .order_by(model.next_poll_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .cte("due")
    )
    # Due "now": if this message is lost too, a sweep after lost_message_after_s re-sends it.
    rows = session.execute(
        update(model)
        .where(model.id == due.c.id)
        .values(poll_token=func.gen_random_uuid(), poll_dispatched=True, next_poll_at=now)
        .returning(model.id, model.state, model.poll_token)
    ).all()
    return [look_message(kind, kind.look_tasks[r.state], r.id, r.poll_token, 0.0) for r in rows]


def sweep(kinds: Iterable[DurableKind], *, settings: Settings, max_batches: int = 10) -> Outcome:
    """Bounded: at most ``max_batches`` transactions of ``sweep_batch_size`` rows per kind."""
    outcome = Outcome()
    size = settings.sweep_batch_size
    for kind in kinds:
        for _ in range(max_batches):
            with session_scope() as session:
                batch = due_looks(session, kind, settings=settings, now=utcnow(), limit=size)
            outcome.messages.extend(batch)
            if len(batch) < size:
                break
        with session_scope() as session:
            before = utcnow() - dt.timedelta(seconds=settings.lost_message_after_s)
            outcome.callbacks.extend(callbacks.overdue(session, kind, before=before, limit=size))
    return outcome
