"""Rows for API attempts: every HTTP call to Vidmob is kept with its outcome and its owner
(the durable row whose task made it: ``api_attempts.job_id`` or ``scored_media_id``)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import ColumnElement, and_, func, insert, or_, select, update
from sqlalchemy.orm import Session

from clients.http import Attempt
from models import ApiAttempt
from services.durable.kind import AnyKind
from services.durable.storable import pg_safe

# Called with every attempt as it happens (the worker registers its metrics here, see
# workers/metrics.py); services do not depend on how they are watched.
ATTEMPT_OBSERVERS: list[Callable[[Attempt], None]] = []


class AttemptLog:
    """Collects the attempts a client makes during one task, to be written in that
    task's transaction. Passed to the client as its `on_attempt` hook."""

    def __init__(self) -> None:
        self.attempts: list[Attempt] = []

    def __call__(self, attempt: Attempt) -> None:
        self.attempts.append(attempt)
        for observe in ATTEMPT_OBSERVERS:
            observe(attempt)

    def save(self, session: Session, kind: AnyKind, row_id: uuid.UUID, task_name: str) -> None:
        if self.attempts:
            session.execute(insert(ApiAttempt), [_row(a, kind, row_id, task_name) for a in self.attempts])
            self.attempts.clear()


def _row(attempt: Attempt, kind: AnyKind, row_id: uuid.UUID, task_name: str) -> dict[str, Any]:
    return {
        kind.attempt_owner: row_id,
        "task_name": task_name,
        "method": attempt.method,
        "endpoint": attempt.endpoint,
        "status_code": attempt.status_code,
        "outcome": attempt.outcome,
        "latency_ms": attempt.latency_ms,
        "retry_after_s": attempt.retry_after,
        "error": pg_safe(attempt.error),
    }


def record_intent(
    session: Session, kind: AnyKind, row_id: uuid.UUID, task_name: str, method: str, endpoint: str
) -> int:
    """An attempt whose outcome is not known yet, committed before the call: if the
    worker dies during it, this row is how we know Vidmob may hold work we never saw."""
    return session.execute(
        insert(ApiAttempt)
        .values(
            {
                kind.attempt_owner: row_id,
                "task_name": task_name,
                "method": method,
                "endpoint": endpoint,
                "outcome": "unknown",
            }
        )
        .returning(ApiAttempt.id)
    ).scalar_one()


def resolve_intent(
    session: Session, intent_id: int, log: AttemptLog, kind: AnyKind, row_id: uuid.UUID, task_name: str
) -> None:
    """Turn the intent row into the first real attempt; any further ones are new rows."""
    if not log.attempts:
        # Refused before any request left (e.g. a payload the dialect cannot express):
        # nothing can be pending at Vidmob, so the row must not read as "outcome unknown".
        session.execute(update(ApiAttempt).where(ApiAttempt.id == intent_id).values(outcome="not_sent"))
        return
    first = log.attempts.pop(0)
    session.execute(update(ApiAttempt).where(ApiAttempt.id == intent_id).values(**_row(first, kind, row_id, task_name)))
    log.save(session, kind, row_id, task_name)


def may_have_created_work(attempt: type[ApiAttempt] = ApiAttempt) -> ColumnElement[bool]:
    """A POST whose outcome is unknown: no HTTP answer (a timeout, a reset, a worker that died
    mid-call: the intent row), a 2xx whose body we could not read, or a 500/502/504 that a
    gateway may have sent after forwarding it. 429 and 503 say the request was not taken."""
    status = attempt.status_code
    return and_(
        attempt.method == "POST",
        attempt.outcome.not_in(("ok", "not_sent")),
        or_(status.is_(None), status.between(200, 299), status.in_((500, 502, 504))),
    )


def count_unknown_posts(session: Session, kind: AnyKind, row_id: uuid.UUID) -> int:
    owner = getattr(ApiAttempt, kind.attempt_owner)
    return session.execute(select(func.count()).where(owner == row_id, may_have_created_work())).scalar_one()


def consecutive_failures(session: Session, kind: AnyKind, row_id: uuid.UUID, *, method: str, limit: int = 32) -> int:
    """How many of the row's latest ``method`` attempts failed in a row (at most ``limit``):
    how long an outage has lasted, for this row, in attempts."""
    owner = getattr(ApiAttempt, kind.attempt_owner)
    outcomes = session.execute(
        select(ApiAttempt.outcome)
        .where(owner == row_id, ApiAttempt.method == method)
        .order_by(ApiAttempt.id.desc())
        .limit(limit)
    ).scalars()
    count = 0
    for outcome in outcomes:
        if outcome == "ok":
            break
        count += 1
    return count
