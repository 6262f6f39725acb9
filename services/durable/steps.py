"""A step of the lifecycle: claim, call Vidmob with no transaction open, record.

Each step is: a short transaction that claims the row (compare-and-set on its token), the
HTTP call(s), and a short transaction that records the answer and the attempts. A transaction
never stays open across a remote call. Domains declare their steps as ``Step`` values; ``run``
returns the ``Outcome`` to send once everything is committed (tasks send it: tasks/base.py).
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Generic, Protocol, TypeVar

from sqlalchemy.exc import DataError, DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from clients.errors import ApiError
from config import Settings, get_settings
from models.db import session_scope
from services import log_context
from services.durable import attempts, claims, intake
from services.durable.claims import Claim
from services.durable.kind import AnyKind
from services.durable.messages import Outcome, OwedCallback
from services.durable.schedule import utcnow

log = logging.getLogger(__name__)

C = TypeVar("C", bound=Claim)
A = TypeVar("A")
C_contra = TypeVar("C_contra", bound=Claim, contravariant=True)
A_co = TypeVar("A_co", covariant=True)
A_contra = TypeVar("A_contra", contravariant=True)


class Call(Protocol[C_contra, A_co]):
    """The HTTP calls of a step, with no transaction open; every attempt goes to ``log``. Vidmob's
    answer, or raises ApiError (an answer too: ``Record`` gets it)."""

    def __call__(self, claim: C_contra, log: attempts.AttemptLog, /) -> A_co: ...


class Record(Protocol[C_contra, A_contra]):
    """Stores what the call answered (or the ApiError it raised) in a new transaction, and decides
    what follows: the Outcome to send after commit."""

    def __call__(
        self, session: Session, claim: C_contra, answer: A_contra | ApiError, /, *, settings: Settings, now: dt.datetime
    ) -> Outcome: ...


class Hold(Protocol[C]):
    """Checked in the claim's transaction before the call: the Outcome of keeping the row waiting
    (a cap on work open at Vidmob) or of answering it without a call (tagging's reuse ends it), None
    to go ahead, or a new claim to go ahead with (the same row, asking for less: partial reuse)."""

    def __call__(
        self, session: Session, claim: C, /, *, settings: Settings, now: dt.datetime
    ) -> Outcome | C | None: ...


class TimeOut(Protocol[C_contra]):
    """Ends the row instead of calling, when its deadline has passed."""

    def __call__(self, session: Session, claim: C_contra, now: dt.datetime, /) -> Outcome: ...


class Intent(Protocol[C_contra]):
    """(method, endpoint) of a non-idempotent call: stored as an attempt of unknown outcome and
    committed before the call, so a worker that dies during it leaves the possible duplicate visible."""

    def __call__(self, claim: C_contra, /) -> tuple[str, str]: ...


@dataclass(frozen=True)
class Step(Generic[C, A]):
    """One step of a kind, declared by its domain: claim, call, record.

    The claim is the engine's: the row must be in ``state`` and hold the message's token;
    ``claim_type`` (a ``Claim``) says what else claiming sets and reads back, whether the row
    may be taken over after a lease ran out, and builds itself from the row. Then, in order:
    ``time_out``, ``hold`` and ``intent`` in the claim's transaction, ``call`` with none open,
    ``record`` in a new one (each hook's protocol above says what it does)."""

    kind: AnyKind
    state: StrEnum
    claim_type: type[C]
    call: Call[C, A]
    record: Record[C, A]
    time_out: TimeOut[C] | None = None
    intent: Intent[C] | None = None
    hold: Hold[C] | None = None

    def claim(
        self, session: Session, row_id: uuid.UUID, token: uuid.UUID | None, *, settings: Settings, now: dt.datetime
    ) -> C | None:
        if self.claim_type.OPTIMISTIC:
            row = claims.read(session, self.kind, row_id, token, state=self.state, returning=self.claim_type.COLUMNS)
            return None if row is None else self.claim_type.from_row(session, row)
        row = claims.claim(
            session,
            self.kind,
            row_id,
            token,
            state=self.state,
            settings=settings,
            now=now,
            takeover_after_lease=self.claim_type.TAKEOVER_AFTER_LEASE,
            values=self.claim_type.claim_values(row_id),
            returning=self.claim_type.COLUMNS,
        )
        return None if row is None else self.claim_type.from_row(session, row)


@dataclass(frozen=True)
class _Held(Generic[C]):
    """A claimed row about to be called for, and its intent attempt (if the step records one)."""

    claim: C
    intent_id: int | None


def _begin(
    step: Step[C, A],
    session: Session,
    row_id: uuid.UUID,
    token: uuid.UUID | None,
    *,
    settings: Settings,
    task_name: str,
) -> _Held[C] | Outcome:
    """In the caller's transaction: claim, then what needs no call (stale, past the deadline,
    held back); else the intent row and the claim for the call."""
    kind = step.kind
    now = utcnow()
    held = step.claim(session, row_id, token, settings=settings, now=now)
    if held is None:
        return Outcome()
    log_context.bind(**{kind.id_kwarg: row_id, "request_id": held.request_id, "caller": held.caller})
    if step.time_out is not None and held.past_deadline(now):
        return step.time_out(session, held, now)
    if step.hold is not None:
        held_back = step.hold(session, held, settings=settings, now=now)
        if isinstance(held_back, Outcome):
            return held_back
        if held_back is not None:  # the claim, narrowed (tagging's partial reuse: fewer assets to send)
            held = held_back
    intent_id = None
    if step.intent is not None:
        method, endpoint = step.intent(held)
        intent_id = attempts.record_intent(session, kind, row_id, task_name, method, endpoint)
    return _Held(held, intent_id)


def _call_and_record(
    step: Step[C, A], row_id: uuid.UUID, held: _Held[C], *, settings: Settings, task_name: str
) -> Outcome:
    """The remote call, with no transaction open, then its record in a new one."""
    kind = step.kind
    log = attempts.AttemptLog()
    answer: A | ApiError
    try:
        answer = step.call(held.claim, log)
    except ApiError as exc:
        answer = exc
    for tries_left in reversed(range(3)):
        try:
            with session_scope() as session:
                if held.intent_id is not None:
                    attempts.resolve_intent(session, held.intent_id, log, kind, row_id, task_name)
                else:
                    log.save(session, kind, row_id, task_name)
                return step.record(session, held.claim, answer, settings=settings, now=utcnow())
        except DBAPIError as exc:
            # What Vidmob answered is recorded now or never (a retried message finds the row
            # re-tokened): a connection that died in the pool (PostgreSQL restarted; the pool
            # pings none) is replaced at once, and the record tried again on a new one.
            if not exc.connection_invalidated or not tries_left:
                raise
            logging.getLogger(__name__).warning("recording %s %s on a new connection", kind.name, row_id)
    raise AssertionError("unreachable")


def run(step: Step[C, A], row_id: uuid.UUID, token: uuid.UUID | None, *, task_name: str) -> Outcome:
    """Claim (None: stale or duplicate, nothing to do), call, record."""
    settings = get_settings()
    with session_scope() as session:
        begun = _begin(step, session, row_id, token, settings=settings, task_name=task_name)
    if isinstance(begun, Outcome):
        return begun
    return _call_and_record(step, row_id, begun, settings=settings, task_name=task_name)


def accept_then_submit(
    spec: intake.Intake[Any],
    submit: Step[C, A],
    payload: dict[str, Any],
    *,
    task_id: str,
    task_name: str,
    positional_args: tuple[Any, ...] = (),
    settings: Settings | None = None,
    broker_user: str | None = None,
) -> tuple[intake.Accepted, Outcome]:
    """A public task's whole step: store the request and, while it waits to be submitted,
    claim it, in one transaction (one commit fewer per job; a rejected one is stored alone),
    then submit it. A redelivered message finds its row: it submits only if the first
    delivery's lease ran out (the claim decides). A rejected request's callback is owed at once.
    ``broker_user``: who sent the message, as the broker vouches for it (services/callers.py)."""
    settings = settings or get_settings()
    begun: _Held[C] | Outcome | None = None
    try:
        with session_scope() as session:
            accepted = intake.accept(
                session,
                spec,
                payload,
                task_id=task_id,
                settings=settings,
                now=utcnow(),
                positional_args=positional_args,
                broker_user=broker_user,
            )
            if accepted.state == intake.SUBMITTING:
                begun = _begin(submit, session, accepted.row_id, accepted.token, settings=settings, task_name=task_name)
    except (DataError, IntegrityError) as exc:
        # Not transient: the same payload fails the same way every time. Keep the request anyway.
        log.error(
            "%s could not be stored as sent (%s): storing it as rejected", spec.kind.name, type(exc.orig).__name__
        )
        reason = str(exc.orig).splitlines()[0] if exc.orig else type(exc).__name__
        with session_scope() as session:
            accepted = intake.accept_unstorable(
                session,
                spec,
                payload,
                reason,
                task_id=task_id,
                settings=settings,
                now=utcnow(),
                broker_user=broker_user,
            )
    log_context.bind(**{spec.kind.id_kwarg: accepted.row_id, "caller": accepted.caller})
    outcome = Outcome(state=accepted.state)
    if accepted.created and accepted.error:
        outcome.callbacks.append(OwedCallback(spec.kind, accepted.row_id))
    if begun is not None:
        submitted = begun if isinstance(begun, Outcome) else _call_and_record(
            submit, accepted.row_id, begun, settings=settings, task_name=task_name
        )  # fmt: skip
        outcome.extend(submitted)
        outcome.state = submitted.state or accepted.state
    return accepted, outcome
