"""The transitions every durable row goes through, written once for every kind.

Each is a compare-and-set on the row's ``poll_token`` (and state): a message carrying an old
token, or a second delivery of the same message, changes nothing. Functions take a Session
and never commit; they return an ``Outcome`` that says what to send after the caller's commit.

    accept (intake.py) -> claim -> [remote call, no transaction] -> reschedule | end
                            ^                                          |
                            +-- the dispatcher when due, or a message -+
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Self

from sqlalchemy import case, select, update
from sqlalchemy.engine import Row
from sqlalchemy.orm import Session

from config import Settings
from models import CallbackStatus
from services.durable.kind import DurableKind
from services.durable.messages import Message, Outcome, OwedCallback
from services.durable.policy import End, LookAgain
from services.durable.schedule import NextLook, lease_until, schedule
from services.durable.storable import pg_safe


@dataclass(frozen=True, kw_only=True)
class Claim:
    """The right to act on a row, held until the next transition: ``token`` is the row's
    new token. Domains subclass it with what their call needs."""

    # The row's own columns the claim reads back (beside these four), by field name.
    COLUMNS: ClassVar[tuple[Any, ...]] = ()
    # Anyone may take the row over once its last holder's lease has run out (not only the
    # holder of the current token): for steps that are safe to repeat after a crash.
    TAKEOVER_AFTER_LEASE: ClassVar[bool] = False
    # Read the row instead of swapping its token (``read``): for steps whose call is safe to
    # make twice (a status GET). One write and its WAL flush fewer per look; the record is still
    # a compare-and-set on the token, so of two copies of a message only the first records.
    OPTIMISTIC: ClassVar[bool] = False

    row_id: uuid.UUID
    token: uuid.UUID
    request_id: str
    deadline_at: dt.datetime | None

    def past_deadline(self, now: dt.datetime) -> bool:
        return self.deadline_at is not None and self.deadline_at <= now

    @classmethod
    def of(cls, row: Row[Any], **extra: Any) -> Self:
        """Built from a claimed row: every field named like a returned column, then ``extra``."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in row._mapping.items() if k in names} | extra)

    @classmethod
    def claim_values(cls, row_id: uuid.UUID) -> dict[str, Any]:
        """Columns the claim sets besides the token and the lease."""
        return {}

    @classmethod
    def from_row(cls, session: Session, row: Row[Any]) -> Self:
        """The claim from the claimed row (``COLUMNS`` included); a subclass that needs more
        (child rows, a warning) reads it here, in the claim's transaction."""
        return cls.of(row)


def claim(
    session: Session,
    kind: DurableKind,
    row_id: uuid.UUID,
    token: uuid.UUID | None,
    *,
    state: str,
    settings: Settings,
    now: dt.datetime,
    takeover_after_lease: bool = False,
    values: dict[str, Any] | None = None,
    returning: Iterable[Any] = (),
) -> Row[Any] | None:
    """Swap the row's token for a new one and lease it until the task's hard time limit.
    Only the message holding the current token may, or (``takeover_after_lease``) anyone once
    the last holder's lease has run out: a redelivered first message, after a crash.
    Returns ``row_id``, the new ``token``, ``request_id``, ``deadline_at`` and the
    ``returning`` columns (for ``Claim.of``), or None: stale, duplicate, or not in ``state``."""
    model = kind.model
    cond = model.poll_token == token if token is not None else None
    if takeover_after_lease:
        expired = model.next_poll_at <= now
        cond = expired if cond is None else (cond | expired)
    if cond is None:
        return None
    return session.execute(
        update(model)
        .where(model.id == row_id, model.state == state, cond)
        .values(
            poll_token=uuid.uuid4(), poll_dispatched=False, next_poll_at=lease_until(now, settings), **(values or {})
        )
        .returning(
            model.id.label("row_id"),
            model.poll_token.label("token"),
            model.request_id,
            model.deadline_at,
            *returning,
        )
    ).first()


def read(
    session: Session,
    kind: DurableKind,
    row_id: uuid.UUID,
    token: uuid.UUID | None,
    *,
    state: str,
    returning: Iterable[Any] = (),
) -> Row[Any] | None:
    """The row as the message holding its current token finds it, changed in nothing: the
    optimistic counterpart of ``claim``, with the same columns. None: stale, duplicate already
    recorded, or not in ``state``. A worker that dies holding it leaves the row marked sent:
    the dispatcher sends the look again after ``lost_message_after_s``."""
    if token is None:
        return None
    model = kind.model
    return session.execute(
        select(
            model.id.label("row_id"), model.poll_token.label("token"), model.request_id, model.deadline_at, *returning
        ).where(model.id == row_id, model.state == state, model.poll_token == token)
    ).first()


def hold_read(session: Session, kind: DurableKind, claim: Claim, *, state: str) -> bool:
    """For a record after an optimistic read that writes more than the row (child rows, counters)
    before its compare-and-set: lock the row while it still holds the read's token, so a second
    copy of the message waits, then finds the token changed and records nothing. False: stale.

    FOR NO KEY UPDATE, the lock an UPDATE of the row takes: the attempt rows this transaction has
    already inserted hold a KEY SHARE lock on it (their foreign key), and so do the other copy's;
    FOR UPDATE would wait on that one while it waits on ours (a deadlock)."""
    model = kind.model
    return (
        session.execute(
            select(model.id)
            .where(model.id == claim.row_id, model.poll_token == claim.token, model.state == state)
            .with_for_update(key_share=True)
        ).first()
        is not None
    )


def look_message(kind: DurableKind, task: str, row_id: uuid.UUID, token: uuid.UUID, countdown: float) -> Message:
    return Message(task, {kind.id_kwarg: str(row_id), "token": str(token)}, countdown=countdown)


def reschedule(
    session: Session,
    kind: DurableKind,
    claim: Claim,
    *,
    state: str,
    delay_s: float,
    settings: Settings,
    now: dt.datetime,
    to_state: str | None = None,
    values: dict[str, Any] | None = None,
    task: str | None = None,
) -> Outcome:
    """Look at the row again in ``delay_s`` (in ``to_state`` if it changes): parked for the
    dispatcher, or a countdown message when the wait is at most ``max_countdown_s``."""
    nxt = schedule(now, delay_s, settings)
    target = to_state or state
    if not move(session, kind, claim.row_id, claim.token, state=state, nxt=nxt, to_state=to_state, values=values):
        return Outcome(stale=True)
    messages = []
    if nxt.dispatched:
        messages.append(look_message(kind, task or kind.look_tasks[target], claim.row_id, nxt.token, delay_s))
    return Outcome(state=_state_of(kind, target), messages=messages)


def move(
    session: Session,
    kind: DurableKind,
    row_id: uuid.UUID,
    token: uuid.UUID,
    *,
    state: str,
    nxt: NextLook,
    to_state: str | None = None,
    values: dict[str, Any] | None = None,
) -> bool:
    model = kind.model
    changes: dict[str, Any] = {
        "next_poll_at": nxt.at,
        "poll_token": nxt.token,
        "poll_dispatched": nxt.dispatched,
        "error": None,
        **(values or {}),
    }
    # Errors quote what Vidmob answered: storable whatever it said.
    changes["error"] = pg_safe(changes["error"])
    if to_state is not None:
        changes["state"] = to_state
    moved = session.execute(
        update(model)
        .where(model.id == row_id, model.poll_token == token, model.state == state)
        .values(**changes)
        .returning(model.id)
    ).first()
    return moved is not None


def apply(
    session: Session,
    kind: DurableKind,
    claim: Claim,
    decision: End | LookAgain,
    *,
    state: str,
    settings: Settings,
    now: dt.datetime,
    values: dict[str, Any] | None = None,
) -> Outcome:
    """Carry out a policy decision for the row ``claim`` holds in ``state``: end it, or look
    again after the decision's delay. ``values`` are set either way."""
    if isinstance(decision, End):
        return end(session, kind, claim, decision.state, now, error=decision.error, values=values)
    return reschedule(
        session, kind, claim, state=state, delay_s=decision.delay_s, settings=settings, now=now,
        values={"error": decision.error} | (values or {}),
    )  # fmt: skip


def ending_values(kind: DurableKind, state: str, now: dt.datetime, error: str | None) -> dict[str, Any]:
    """The columns of an end. The callback becomes owed in the same statement, so an ended
    row never forgets it; a row sent without one owes nothing."""
    return {
        "state": state,
        "error": pg_safe(error),
        "ended_at": now,
        "next_poll_at": None,
        "poll_token": None,
        "poll_dispatched": False,
        "callback_status": case(
            (kind.model.callback.is_(None), CallbackStatus.NONE.value), else_=CallbackStatus.PENDING.value
        ),
    }


def end(
    session: Session,
    kind: DurableKind,
    claim: Claim,
    state: str,
    now: dt.datetime,
    *,
    error: str | None = None,
    values: dict[str, Any] | None = None,
) -> Outcome:
    """End the row held by ``claim``; its callback is owed, and the kind's listeners run in
    this same transaction (what they owe is sent after the same commit)."""
    model = kind.model
    ended = session.execute(
        update(model)
        .where(model.id == claim.row_id, model.poll_token == claim.token, model.state.in_(kind.active_states))
        .values(**ending_values(kind, state, now, error), **(values or {}))
        .returning(model.id, model.callback_status)
    ).first()
    if ended is None:
        return Outcome(stale=True)
    owes = ended.callback_status == CallbackStatus.PENDING.value
    return ended_rows(session, kind, [claim.row_id], state, now, owing=[claim.row_id] if owes else [])


def end_where(
    session: Session, kind: DurableKind, *conditions: Any, state: str, now: dt.datetime, error: str | None
) -> Outcome:
    """End in bulk every row of ``kind`` that matches ``conditions`` (rows no message holds:
    the caller's conditions must say which, e.g. a state the engine never claims)."""
    model = kind.model
    ids = session.execute(
        update(model).where(*conditions).values(**ending_values(kind, state, now, error)).returning(model.id)
    ).scalars()
    return ended_rows(session, kind, list(ids), state, now)


def ended_rows(
    session: Session,
    kind: DurableKind,
    row_ids: Iterable[uuid.UUID],
    state: str,
    now: dt.datetime,
    *,
    owing: Iterable[uuid.UUID] | None = None,
) -> Outcome:
    """What rows that just ended (by end(), or in bulk with ending_values) owe: their
    callbacks (of the rows in ``owing``, when the caller knows which asked for one: a row
    without a callback then costs no transaction after the commit), and whatever the kind's
    listeners decide."""
    outcome = Outcome(state=_state_of(kind, state))
    row_ids = list(row_ids)
    owed = set(row_ids if owing is None else owing)
    for row_id in row_ids:
        if row_id in owed:
            outcome.callbacks.append(OwedCallback(kind, row_id))
        for listener in kind.ended.listeners:
            outcome.extend(listener(session, row_id, outcome.state, now))
    return outcome


def _state_of(kind: DurableKind, state: str) -> Any:
    enum = kind.model.state.type.enum_class  # type: ignore[attr-defined]
    return enum(state)
