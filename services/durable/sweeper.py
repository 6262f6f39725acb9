"""One pass of the dispatcher: PostgreSQL says when every active row must next be looked at;
a pass turns the looks that are due into messages, for every kind of durable row.

A pass sends a message for (a) parked looks that are now due (every wait is parked unless
``max_countdown_s`` lets short ones ride on a countdown message; a row a worker holds is left to it
until its lease passes), and (b) looks whose message was sent and due ``lost_message_after_s`` ago
but never ran (lost to kill -9, a Redis flush or restart). Each is sent with the row's **current
token**: if the first message was only late
(queued behind a backlog), both copies carry the same token, the first to run claims the row
and the other is a no-op. (A fresh token would make the late original stale, and behind a
backlog older than the lost-message horizon every sweep would re-token every queued look
again: a livelock, measured in docs/reliability.md.) Rows are taken with FOR UPDATE SKIP
LOCKED in bounded batches: several dispatchers never block each other and never send the same
look twice. A pass also collects the callbacks whose send after their row's end was lost.

A look the pass claimed but could not send (the broker away: a partition, a restart) is parked again
at once (``not_sent``), so the first pass once the broker is back sends it, rather than
``lost_message_after_s`` later as a lost message would be.

``workers/dispatcher.py`` runs passes continuously; ``aperture.sweep`` runs one on demand.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import func, literal, or_, select, tuple_, union_all, update
from sqlalchemy.orm import Session

from config import Settings
from models.db import session_scope
from services.durable import callbacks
from services.durable.kind import AnyKind
from services.durable.lifecycle import look_message
from services.durable.messages import Message, Outcome
from services.durable.schedule import utcnow


@dataclass
class Due:
    """The looks one statement claimed, and how late each was when claimed (seconds)."""

    messages: list[Message] = field(default_factory=list)
    lateness_s: list[float] = field(default_factory=list)
    parked: int = 0  # looks parked until due: sent for the first time
    lost: int = 0  # looks sent before whose message never ran: sent again


def due_looks(session: Session, kind: AnyKind, *, settings: Settings, now: dt.datetime, limit: int) -> Due:
    """Claim up to ``limit`` parked looks of ``kind`` that are due, and up to ``limit`` looks sent
    ``lost_message_after_s`` ago (and due as long) that never ran, in one statement, each under its
    current token; mark each sent now."""
    model = kind.model
    lost_before = now - dt.timedelta(seconds=settings.lost_message_after_s)
    looked_at = model.state.in_(list(kind.look_tasks))
    # Parked and due, and no live lease: a row a worker holds is its worker's until the lease passes.
    parked = (
        select(model.id, model.next_poll_at, literal(False).label("lost"))
        .where(
            looked_at,
            model.dispatched_at.is_(None),
            model.next_poll_at <= now,
            or_(model.leased_until.is_(None), model.leased_until <= now),
        )
        .order_by(model.next_poll_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .cte("parked")
    )
    # Sent, and should have run (sent and due) lost_message_after_s ago: on the dispatched index.
    should_have_run = func.greatest(model.next_poll_at, model.dispatched_at)
    lost = (
        select(model.id, model.next_poll_at, literal(True).label("lost"))
        .where(looked_at, model.dispatched_at.is_not(None), should_have_run <= lost_before)
        .order_by(should_have_run)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .cte("lost")
    )
    due = union_all(select(parked), select(lost)).cte("due")
    rows = session.execute(
        update(model)
        .where(model.id == due.c.id)
        .values(dispatched_at=now)
        .returning(
            model.id,
            model.state,
            model.poll_token,
            *kind.route_columns,
            due.c.next_poll_at.label("was_due"),
            due.c.lost,
        )
    ).all()
    return Due(
        messages=[look_message(kind, kind.look_task(r.state, r), r.id, r.poll_token, 0.0) for r in rows],
        lateness_s=[(now - r.was_due).total_seconds() for r in rows],
        parked=sum(1 for r in rows if not r.lost),
        lost=sum(1 for r in rows if r.lost),
    )


@dataclass
class Pass(Outcome):
    """What one pass owes (messages and callbacks, as any step's Outcome), and its figures."""

    lateness_s: list[float] = field(default_factory=list)
    lost: int = 0
    full: bool = False  # a kind's last batch was full: more looks are due than the pass took


def sweep(kinds: Iterable[AnyKind], *, settings: Settings, max_batches: int = 10, callbacks_too: bool = True) -> Pass:
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
            if batch.parked < size and batch.lost < size:
                break
        else:
            result.full = True
        if not callbacks_too:
            continue
        with session_scope() as session:
            before = utcnow() - dt.timedelta(seconds=settings.lost_message_after_s)
            result.callbacks.extend(callbacks.overdue(session, kind, before=before, limit=size))
    return result


def not_sent(kinds: Iterable[AnyKind], messages: Sequence[Message]) -> int:
    """Park again, due as they were, the looks a pass claimed whose ``messages`` it could not send, so the
    next pass sends them again; how many. Only rows whose token is still the message's: a row a worker
    took meanwhile (an earlier copy of its look ran) is that worker's."""
    parked = 0
    with session_scope() as session:
        for kind in kinds:
            tasks = set(kind.look_tasks.values())
            pairs = [
                (uuid.UUID(m.kwargs[kind.id_kwarg]), uuid.UUID(m.kwargs["token"])) for m in messages if m.task in tasks
            ]
            if not pairs:
                continue
            model = kind.model
            parked += len(
                session.execute(
                    update(model)
                    .where(tuple_(model.id, model.poll_token).in_(pairs), model.dispatched_at.is_not(None))
                    .values(dispatched_at=None)
                    .returning(model.id)
                ).all()
            )
    return parked
