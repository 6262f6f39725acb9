"""The transitions every durable row goes through, written once for every kind.

With services/durable/claims.py (taking a row), this module is the only writer of the engine's
columns (``next_poll_at``, ``poll_token``, ``dispatched_at``, ``leased_until``: tests/test_engine.py
checks that no module outside services/durable/ names them). Each transition of a held row is a
compare-and-set on the row's ``poll_token`` (and state): a message carrying an old token, or a
second delivery of the same message, changes nothing. Functions take a Session and never commit;
they return an ``Outcome`` that says what to send after the caller's commit.

    accept (intake.py) -> claim -> [remote call, no transaction] -> reschedule | end
                            ^                                          |
                            +-- the dispatcher when due, or a message -+

A row may also wait on another row (``wait_on``: a request in its pack, a media in its tagging job):
the engine does not look at it until that row's end wakes it (``wake_where``) or ends it
(``end_where``). An operator may start an ended row again (``restart``).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable
from enum import StrEnum
from typing import Any

from sqlalchemy import case, func, insert, update
from sqlalchemy.orm import Session

from config import Settings
from models import CallbackStatus
from services.durable.claims import Claim
from services.durable.kind import AnyKind
from services.durable.messages import Message, Outcome, OwedCallback
from services.durable.policy import End, LookAgain
from services.durable.schedule import NextLook, lease_until, schedule
from services.durable.storable import pg_safe


def look_message(kind: AnyKind, task: str, row_id: uuid.UUID, token: uuid.UUID, countdown: float) -> Message:
    return Message(task, {kind.id_kwarg: str(row_id), "token": str(token)}, countdown=countdown)


# --- new rows -------------------------------------------------------------------------------


def accepted_values(now: dt.datetime, settings: Settings) -> dict[str, Any]:
    """The engine's columns of a row just accepted from a message (services/durable/intake.py): due
    now and held by that message, so if its worker dies the dispatcher looks at it once the lease has
    passed. ``poll_token`` is the message's to claim with."""
    return {
        "next_poll_at": now,
        "poll_token": uuid.uuid4(),
        "dispatched_at": None,
        "leased_until": lease_until(now, settings),
    }


def create_parked(session: Session, kind: AnyKind, values: dict[str, Any], *, due_at: dt.datetime) -> uuid.UUID:
    """Insert a row of ``kind`` (``values``: its own columns, ``id`` and ``state`` included), parked
    until ``due_at``: the dispatcher sends its look then."""
    model = kind.model
    row_id: uuid.UUID = session.execute(
        insert(model)
        .values(**values, next_poll_at=due_at, poll_token=uuid.uuid4(), dispatched_at=None, leased_until=None)
        .returning(model.id)
    ).scalar_one()
    return row_id


def due_by(session: Session, kind: AnyKind, row_id: uuid.UUID, at: dt.datetime) -> None:
    """A parked row is due no later than ``at`` (a pack that became full goes at the next pass)."""
    model = kind.model
    session.execute(
        update(model)
        .where(model.id == row_id, model.dispatched_at.is_(None))
        .values(next_poll_at=func.least(model.next_poll_at, at))
    )


# --- looking again --------------------------------------------------------------------------


def reschedule(
    session: Session,
    kind: AnyKind,
    claim: Claim,
    *,
    state: StrEnum,
    delay_s: float,
    settings: Settings,
    now: dt.datetime,
    to_state: StrEnum | None = None,
    values: dict[str, Any] | None = None,
    task: str | None = None,
    park: bool = False,
) -> Outcome:
    """Look at the row again in ``delay_s`` (in ``to_state`` if it changes): parked for the
    dispatcher, or a countdown message when the wait is at most ``max_countdown_s`` (never with
    ``park``). The message's task is ``task``, else the kind's for the row in its new state."""
    nxt = schedule(now, delay_s, settings, park=park)
    target = to_state or state
    if not move(
        session, kind, claim.row_id, claim.token, state=state, nxt=nxt, now=now, to_state=to_state, values=values
    ):
        return Outcome(stale=True)
    messages = []
    if nxt.dispatched:
        look = task or kind.look_task(kind.states(target), claim)
        messages.append(look_message(kind, look, claim.row_id, nxt.token, delay_s))
    return Outcome(state=kind.states(target), messages=messages)


def move(
    session: Session,
    kind: AnyKind,
    row_id: uuid.UUID,
    token: uuid.UUID,
    *,
    state: StrEnum,
    nxt: NextLook,
    now: dt.datetime,
    to_state: StrEnum | None = None,
    values: dict[str, Any] | None = None,
) -> bool:
    """The held row's next look is ``nxt``; its lease ends. False: stale (the token moved on)."""
    model = kind.model
    changes: dict[str, Any] = {
        "next_poll_at": nxt.at,
        "poll_token": nxt.token,
        "dispatched_at": now if nxt.dispatched else None,
        "leased_until": None,
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
    kind: AnyKind,
    claim: Claim,
    decision: End | LookAgain,
    *,
    state: StrEnum,
    settings: Settings,
    now: dt.datetime,
    values: dict[str, Any] | None = None,
) -> Outcome:
    """Carry out a policy decision for the row ``claim`` holds in ``state``: end it, or look
    again after the decision's delay. ``values`` are set either way."""
    if isinstance(decision, End):
        return end(session, kind, claim, kind.states(decision.state), now, error=decision.error, values=values)
    return reschedule(
        session, kind, claim, state=state, delay_s=decision.delay_s, settings=settings, now=now,
        values={"error": decision.error} | (values or {}),
    )  # fmt: skip


# --- waiting on another row -----------------------------------------------------------------


def _not_looked_at() -> dict[str, Any]:
    return {"next_poll_at": None, "poll_token": None, "dispatched_at": None, "leased_until": None}


def wait_on(
    session: Session,
    kind: AnyKind,
    claim: Claim,
    *,
    state: StrEnum,
    to_state: StrEnum,
    values: dict[str, Any] | None = None,
) -> Outcome:
    """The held row waits in ``to_state`` for another row (a request for its pack): no look, no
    token, until that row's end wakes it (``wake_where``) or ends it (``end_where``)."""
    model = kind.model
    moved = session.execute(
        update(model)
        .where(model.id == claim.row_id, model.poll_token == claim.token, model.state == state)
        .values(state=to_state, error=None, **_not_looked_at(), **(values or {}))
        .returning(model.id)
    ).first()
    return Outcome(stale=True) if moved is None else Outcome(state=kind.states(to_state))


def wait_on_where(
    session: Session, kind: AnyKind, *conditions: Any, to_state: StrEnum, values: dict[str, Any] | None = None
) -> list[uuid.UUID]:
    """``wait_on`` in bulk, for rows no message holds (the caller's conditions say which, e.g. rows
    it took FOR UPDATE in a state the engine's claims never take): their ids."""
    model = kind.model
    return list(
        session.execute(
            update(model).where(*conditions).values(state=to_state, **_not_looked_at(), **(values or {}))
            .returning(model.id)
        ).scalars()
    )  # fmt: skip


def wake_where(
    session: Session,
    kind: AnyKind,
    *conditions: Any,
    to_state: StrEnum,
    delay_s: float,
    settings: Settings,
    now: dt.datetime,
    values: dict[str, Any] | None = None,
    task: str | None = None,
    park: bool = False,
) -> Outcome:
    """Rows that waited on another row (the caller's conditions say which) are looked at again in
    ``to_state`` after ``delay_s``, each under a token of its own: parked, or a message each (of
    ``task``, else the state's look task) when the wait may ride on a countdown (``schedule``)."""
    model = kind.model
    nxt = schedule(now, delay_s, settings, park=park)
    woken = session.execute(
        update(model)
        .where(*conditions)
        .values(
            state=to_state,
            next_poll_at=nxt.at,
            poll_token=func.gen_random_uuid(),
            dispatched_at=now if nxt.dispatched else None,
            leased_until=None,
            **(values or {}),
        )
        .returning(model.id, model.poll_token)
    ).all()
    outcome = Outcome(state=kind.states(to_state), moved=[r.id for r in woken])
    if nxt.dispatched:
        look = task or kind.look_tasks[kind.states(to_state)]
        outcome.messages.extend(look_message(kind, look, r.id, r.poll_token, delay_s) for r in woken)
    return outcome


# --- ending ---------------------------------------------------------------------------------


def ending_values(kind: AnyKind, state: StrEnum, now: dt.datetime, error: str | None) -> dict[str, Any]:
    """The columns of an end. The callback becomes owed in the same statement, so an ended
    row never forgets it; a row sent without one owes nothing."""
    return {
        "state": state,
        "error": pg_safe(error),
        "ended_at": now,
        **_not_looked_at(),
        "callback_status": case(
            (kind.model.callback.is_(None), CallbackStatus.NONE.value), else_=CallbackStatus.PENDING.value
        ),
    }


def end(
    session: Session,
    kind: AnyKind,
    claim: Claim,
    state: StrEnum,
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
    session: Session,
    kind: AnyKind,
    *conditions: Any,
    state: StrEnum,
    now: dt.datetime,
    error: str | None,
    values: dict[str, Any] | None = None,
) -> Outcome:
    """End in bulk every row of ``kind`` that matches ``conditions`` (rows no message holds:
    the caller's conditions must say which, e.g. a state the engine never claims)."""
    model = kind.model
    ended = session.execute(
        update(model)
        .where(*conditions)
        .values(**ending_values(kind, state, now, error), **(values or {}))
        .returning(model.id, model.callback_status)
    ).all()
    owing = [r.id for r in ended if r.callback_status == CallbackStatus.PENDING.value]
    outcome = ended_rows(session, kind, [r.id for r in ended], state, now, owing=owing)
    outcome.moved = [r.id for r in ended]
    return outcome


def ended_rows(
    session: Session,
    kind: AnyKind,
    row_ids: Iterable[uuid.UUID],
    state: StrEnum,
    now: dt.datetime,
    *,
    owing: Iterable[uuid.UUID] | None = None,
) -> Outcome:
    """What rows that just ended (by end(), or in bulk with ending_values) owe: their
    callbacks (of the rows in ``owing``, when the caller knows which asked for one: a row
    without a callback then costs no transaction after the commit), and whatever the kind's
    listeners decide."""
    ended_in = kind.states(state)
    outcome = Outcome(state=ended_in)
    row_ids = list(row_ids)
    owed = set(row_ids if owing is None else owing)
    for row_id in row_ids:
        if row_id in owed:
            outcome.callbacks.append(OwedCallback(kind, row_id))
        for listener in kind.ended.listeners:
            outcome.extend(listener(session, row_id, ended_in, now))
    return outcome


# --- an operator's hand ---------------------------------------------------------------------


def restart(
    session: Session,
    kind: AnyKind,
    row_id: uuid.UUID,
    *conditions: Any,
    to_state: StrEnum,
    now: dt.datetime,
    values: dict[str, Any] | None = None,
) -> Message | None:
    """Start an ended row again in ``to_state``, looked at now, if it still matches ``conditions``
    (a compare-and-set: two operators at once restart it once). Its end will owe the callback again,
    under a new task id (a new generation); a callback owed by the old end and not sent yet is moot.
    The caller commits, then sends the returned message; if that send is lost, the dispatcher sends
    the look again after ``lost_message_after_s``. None: the row no longer matches."""
    model = kind.model
    token = uuid.uuid4()
    moved = session.execute(
        update(model)
        .where(model.id == row_id, *conditions)
        .values(
            state=to_state,
            error=None,
            ended_at=None,
            next_poll_at=now,
            poll_token=token,
            dispatched_at=now,
            leased_until=None,
            callback_status=CallbackStatus.NONE,
            callback_sent_at=None,
            generation=model.generation + 1,
            **(values or {}),
        )
        .returning(model.id)
    ).first()
    if moved is None:
        return None
    return look_message(kind, kind.look_tasks[kind.states(to_state)], row_id, token, 0.0)
