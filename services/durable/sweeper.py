"""One pass of the dispatcher: PostgreSQL says when every active row must next be looked at;
a pass turns the looks that are due into messages, for every kind of durable row.

A pass sends a message for (a) parked looks that are now due (every wait is parked unless
``max_countdown_s`` lets short ones ride on a countdown message), and (b) looks whose message
should have run ``lost_message_after_s`` ago but did not (lost to kill -9, a Redis flush or
restart). Each is sent with the row's **current token**: if the first message was only late
(queued behind a backlog), both copies carry the same token, the first to run claims the row
and the other is a no-op. (A fresh token would make the late original stale, and behind a
backlog older than the lost-message horizon every sweep would re-token every queued look
again: a livelock, measured in docs/reliability.md.) Rows are taken with FOR UPDATE SKIP
LOCKED in bounded batches: several dispatchers never block each other and never send the same
look twice. A pass also collects the callbacks whose send after their row's end was lost.

``workers/dispatcher.py`` runs passes continuously; ``aperture.sweep`` runs one on demand.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from config import Settings
from models.db import session_scope
from services.durable import callbacks
from services.durable.kind import DurableKind
from services.durable.lifecycle import look_message
from services.durable.messages import Message, Outcome
from services.durable.schedule import utcnow


@dataclass
class Due:
    """The looks one statement claimed, and how late each was when claimed (seconds)."""

    messages: list[Message] = field(default_factory=list)
    lateness_s: list[float] = field(default_factory=list)
    lost: int = 0  # looks sent before whose message never ran: sent again


def due_looks(session: Session, kind: DurableKind, *, settings: Settings, now: dt.datetime, limit: int) -> Due:
    """Claim up to ``limit`` due looks of ``kind`` in one statement, each under its current token."""
    model = kind.model
    lost_before = now - dt.timedelta(seconds=settings.lost_message_after_s)
    due = (
        select(model.id, model.next_poll_at, model.poll_dispatched.label("dispatched"))
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
    # Due "now": if this message is lost too, a pass after lost_message_after_s sends it again.
    rows = session.execute(
        update(model)
        .where(model.id == due.c.id)
        .values(poll_dispatched=True, next_poll_at=now)
        .returning(model.id, model.state, model.poll_token, due.c.next_poll_at.label("was_due"), due.c.dispatched)
    ).all()
    return Due(
        messages=[look_message(kind, kind.look_tasks[r.state], r.id, r.poll_token, 0.0) for r in rows],
        lateness_s=[(now - r.was_due).total_seconds() for r in rows],
        lost=sum(1 for r in rows if r.dispatched),
    )


@dataclass
class Pass(Outcome):
    """What one pass owes (messages and callbacks, as any step's Outcome), and its figures."""

    lateness_s: list[float] = field(default_factory=list)
    lost: int = 0
    full: bool = False  # a kind's last batch was full: more looks are due than the pass took


def sweep(
    kinds: Iterable[DurableKind], *, settings: Settings, max_batches: int = 10, callbacks_too: bool = True
) -> Pass:
    """Bounded: at most ``max_batches`` transactions of ``sweep_batch_size`` looks per kind,
    and (``callbacks_too``) one of overdue callbacks."""
    result = Pass()
    size = settings.sweep_batch_size
    for kind in kinds:
        for _ in range(max_batches):
            with session_scope() as session:
                batch = due_looks(session, kind, settings=settings, now=utcnow(), limit=size)
            result.messages.extend(batch.messages)
            result.lateness_s.extend(batch.lateness_s)
            result.lost += batch.lost
            if len(batch.messages) < size:
                break
        else:
            result.full = True
        if not callbacks_too:
            continue
        with session_scope() as session:
            before = utcnow() - dt.timedelta(seconds=settings.lost_message_after_s)
            result.callbacks.extend(callbacks.overdue(session, kind, before=before, limit=size))
    return result
