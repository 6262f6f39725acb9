"""The caller's callback: owed in the transaction that ends a row, sent after it.

One way for every kind. Delivery is at-least-once with a stable task id (the kind's prefix
and the row id, plus ``-retry-<n>`` after an operator retry): the normal path sends it once
and marks it sent; if a worker dies between the send and the mark, the dispatcher sends it again
under the same id, so a caller can drop the repeat by task id.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Callable

from pydantic import ValidationError
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from models import CallbackStatus
from models.db import session_scope
from services.contract import CallbackIn
from services.durable.kind import AnyKind
from services.durable.messages import Message, OwedCallback

log = logging.getLogger(__name__)

Send = Callable[[Message], None]


def owed_callback(session: Session, kind: AnyKind, row_id: uuid.UUID) -> Message | None:
    """The callback message a row owes now, or None (not ended, none asked, already sent)."""
    model = kind.model
    row = session.execute(
        select(model).where(model.id == row_id, model.callback_status == CallbackStatus.PENDING)
    ).scalar_one_or_none()
    if row is None or row.callback is None:
        return None
    try:
        CallbackIn.model_validate(row.callback)
    except ValidationError as exc:
        # Stored before the contract refused such names (a queue named like kombu's own
        # ``unacked`` hash would turn it into a list and stop every worker): never sent.
        reason = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors(include_url=False))
        log.error("refusing to send the callback of %s %s: %s", kind.name, row_id, reason)
        return None
    return Message(
        task=row.callback["task"],
        kwargs=kind.callback_kwargs(session, row),
        task_id=kind.callback_task_id(row.id, row.generation),
        queue=row.callback.get("queue"),
    )


def mark_sent(session: Session, kind: AnyKind, row_id: uuid.UUID) -> bool:
    model = kind.model
    marked = session.execute(
        update(model)
        .where(model.id == row_id, model.callback_status == CallbackStatus.PENDING)
        .values(callback_status=CallbackStatus.SENT, callback_sent_at=func.now())
        .returning(model.id)
    ).first()
    return marked is not None


def overdue(session: Session, kind: AnyKind, *, before: dt.datetime, limit: int) -> list[OwedCallback]:
    """Rows that ended before ``before`` and still owe their callback: the send after their
    end was lost (a worker died between commit and send, or the broker was down)."""
    model = kind.model
    ids = session.execute(
        select(model.id)
        .where(model.callback_status == CallbackStatus.PENDING, model.ended_at <= before)
        .order_by(model.ended_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).scalars()
    return [OwedCallback(kind, row_id) for row_id in ids]


def deliver(owed: OwedCallback, send: Send) -> bool:
    """Send a row's callback if it is still owed, then mark it sent. Two transactions around
    the send: a crash between them leaves it owed, and the dispatcher re-sends it, same id."""
    with session_scope() as session:
        message = owed_callback(session, owed.kind, owed.row_id)
    if message is None:
        return False
    send(message)
    with session_scope() as session:
        mark_sent(session, owed.kind, owed.row_id)
    log.info("callback %s sent for %s %s (%s)", message.task, owed.kind.name, owed.row_id, message.kwargs["status"])
    return True
