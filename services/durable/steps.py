"""A step of the lifecycle: claim, call Vidmob with no transaction open, record.

Each step is: a short transaction that claims the row (compare-and-set on its token), the
HTTP call(s), and a short transaction that records the answer and the attempts. A transaction
never stays open across a remote call. Domains supply the three parts; the step returns the
``Outcome`` to send once everything is committed (tasks send it: tasks/outbox.py).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.orm import Session

from clients.http import ApiError
from models.db import session_scope
from services import log_context
from services.durable import attempts
from services.durable.intake import SUBMITTING, Accepted
from services.durable.kind import DurableKind
from services.durable.lifecycle import Claim
from services.durable.messages import Outcome, OwedCallback
from services.durable.schedule import utcnow

C = TypeVar("C", bound=Claim)
A = TypeVar("A")


def run(
    kind: DurableKind,
    row_id: uuid.UUID,
    token: uuid.UUID | None,
    *,
    task_name: str,
    claim: Callable[[Session, uuid.UUID, uuid.UUID | None, dt.datetime], C | None],
    call: Callable[[C, attempts.AttemptLog], A],
    record: Callable[[Session, C, A | ApiError, dt.datetime], Outcome],
    time_out: Callable[[Session, C, dt.datetime], Outcome] | None = None,
    intent: Callable[[C], tuple[str, str]] | None = None,
) -> Outcome:
    """``claim`` takes the row (None: stale or duplicate, nothing to do). ``time_out`` ends it
    instead of calling when its deadline has passed. ``intent`` (method, endpoint) stores an
    attempt of unknown outcome before a non-idempotent call, committed before it is made.
    ``call`` makes the HTTP calls through the attempt log; an ApiError is its answer too.
    ``record`` stores the answer."""
    intent_id: int | None = None
    with session_scope() as session:
        now = utcnow()
        held = claim(session, row_id, token, now)
        if held is None:
            return Outcome()
        log_context.bind(**{kind.id_kwarg: row_id, "request_id": held.request_id})
        if time_out is not None and held.past_deadline(now):
            return time_out(session, held, now)
        if intent is not None:
            method, endpoint = intent(held)
            intent_id = attempts.record_intent(session, kind, row_id, task_name, method, endpoint)
    log = attempts.AttemptLog()
    answer: A | ApiError
    try:
        answer = call(held, log)
    except ApiError as exc:
        answer = exc
    with session_scope() as session:
        if intent_id is not None:
            attempts.resolve_intent(session, intent_id, log, kind, row_id, task_name)
        else:
            log.save(session, kind, row_id, task_name)
        return record(session, held, answer, utcnow())


def accept_then_submit(
    kind: DurableKind,
    accept: Callable[[Session], Accepted],
    submit: Callable[[uuid.UUID, uuid.UUID | None], Outcome],
) -> tuple[Accepted, Outcome]:
    """A public task's whole step: store the request in its own transaction (so a rejected one
    is kept whatever happens next), then submit it while it waits to be submitted. A
    redelivered message finds its row: it submits only if the first delivery's lease ran out
    (the claim decides). A rejected request's callback is owed at once."""
    with session_scope() as session:
        accepted = accept(session)
    log_context.bind(**{kind.id_kwarg: accepted.row_id})
    outcome = Outcome(state=accepted.state)
    if accepted.created and accepted.error:
        outcome.callbacks.append(OwedCallback(kind, accepted.row_id))
    if accepted.state == SUBMITTING:
        submitted = submit(accepted.row_id, accepted.token)
        outcome.extend(submitted)
        outcome.state = submitted.state or accepted.state
    return accepted, outcome
