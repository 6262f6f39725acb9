"""Accepting a request: one row per idempotency key, stored valid or rejected with a reason.

Every public task stores what it was sent before doing anything else: a valid request as a
row in its first state, holding a lease for the message being processed; an invalid one as
``rejected`` with a readable reason (and its callback owed, when the caller gave a valid one).
The same ``request_id`` again finds the row and creates nothing.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from config import Settings
from models import CallbackStatus
from services.contract import REFUSED_FIELD, describe_errors, parse_callback
from services.durable.kind import AnyKind
from services.durable.lifecycle import accepted_values
from services.durable.storable import MAX_STORED_PAYLOAD_CHARS, pg_safe, storable

REJECTED = "rejected"
SUBMITTING = "submitting"  # the first state of every kind: stored, not (knowingly) accepted by Vidmob yet


@dataclass(frozen=True)
class Accepted:
    row_id: uuid.UUID
    state: StrEnum
    created: bool
    error: str | None = None
    token: uuid.UUID | None = None  # held by the message that created the row


def request_id_for(payload: dict[str, Any], task_id: str) -> str:
    """The caller's key, or the message's own id: a redelivered message (acks_late) has the
    same task id, so it finds the row its first delivery wrote."""
    given = payload.get("request_id")
    if isinstance(given, str) and 0 < len(given.strip()) <= 255:
        return given.strip()
    return f"celery-task:{task_id}"


R = TypeVar("R", bound=BaseModel)


@dataclass(frozen=True)
class Intake(Generic[R]):
    """How a public task's request becomes a row of ``kind``: validated by ``contract``;
    ``fields(request, settings, now)`` are the row's domain columns,
    ``rejected_fields(payload, settings, now)`` those of a rejected one,
    ``on_created(session, row_id, request)`` writes its children in the same transaction.
    ``usage`` is the reason given for positional arguments."""

    kind: AnyKind
    contract: type[R]
    usage: str
    fields: Callable[[R, Settings, dt.datetime], dict[str, Any]]
    rejected_fields: Callable[[dict[str, Any], Settings, dt.datetime], dict[str, Any]]
    on_created: Callable[[Session, uuid.UUID, R], None]


def accept(
    session: Session,
    spec: Intake[R],
    payload: dict[str, Any],
    *,
    task_id: str,
    settings: Settings,
    now: dt.datetime,
    positional_args: tuple[Any, ...] = (),
) -> Accepted:
    """Store ``payload`` as a row of ``spec.kind``: SUBMITTING when valid, REJECTED with a
    reason when not. The same request_id again returns the existing row and creates nothing."""
    kind = spec.kind
    request_id = pg_safe(request_id_for(payload, task_id))
    existing = _find(session, kind, request_id)
    if existing is not None:
        return existing

    error: str | None = None
    request: R | None = None
    refused = payload.get(REFUSED_FIELD)
    if isinstance(refused, str):
        # The worker refused to decode the message as sent (too large, too deep): its reason.
        error = refused
    elif positional_args:
        error = spec.usage
    else:
        try:
            request = spec.contract.model_validate(payload)
        except ValidationError as exc:
            error = describe_errors(exc)

    callback = getattr(request, "callback", None) if request is not None else parse_callback(payload.get("callback"))
    values: dict[str, Any] = {
        "request_id": request_id,
        "payload": storable(payload if not positional_args else {"args": list(positional_args), **payload}),
        "callback": callback.model_dump() if callback else None,
    }
    if request is None:
        values |= spec.rejected_fields(payload, settings, now) | {
            "state": REJECTED,
            "error": error,
            "ended_at": now,
            "callback_status": CallbackStatus.PENDING if callback else CallbackStatus.NONE,
        }
    else:
        values |= spec.fields(request, settings, now) | {"state": SUBMITTING} | accepted_values(now, settings)
    values = {name: pg_safe(value) for name, value in values.items()}
    model = kind.model
    # ON CONFLICT: a concurrent delivery with the same request_id waits for ours, then inserts nothing.
    row_id = session.execute(
        pg_insert(model).values(**values).on_conflict_do_nothing(index_elements=[model.request_id]).returning(model.id)
    ).scalar_one_or_none()
    if row_id is None:
        found = _find(session, kind, request_id)
        assert found is not None  # the conflicting row is committed: ON CONFLICT waited for it
        return found
    if request is not None:
        spec.on_created(session, row_id, request)
    return Accepted(row_id, kind.states(values["state"]), created=True, error=error, token=values.get("poll_token"))


def accept_unstorable(
    session: Session,
    spec: Intake[Any],
    payload: dict[str, Any],
    reason: str,
    *,
    task_id: str,
    settings: Settings,
    now: dt.datetime,
) -> Accepted:
    """The last resort when ``accept`` could not store a request (PostgreSQL refused something
    pg_safe did not foresee): a rejected row with the reason and a printable copy of the payload,
    so the request is never lost and its caller still hears of it when the callback is usable."""
    kind = spec.kind
    request_id = pg_safe(request_id_for(payload, task_id))
    existing = _find(session, kind, request_id)
    if existing is not None:
        return existing
    callback = parse_callback(payload.get("callback"))
    values = spec.rejected_fields({}, settings, now) | {
        "request_id": request_id,
        "payload": {"unstorable": pg_safe(repr(payload)[:MAX_STORED_PAYLOAD_CHARS])},
        "callback": callback.model_dump() if callback else None,
        "state": REJECTED,
        "error": pg_safe(f"the request could not be stored as sent: {reason}")[:2000],
        "ended_at": now,
        "callback_status": CallbackStatus.PENDING if callback else CallbackStatus.NONE,
    }
    model = kind.model
    row_id = session.execute(
        pg_insert(model).values(**values).on_conflict_do_nothing(index_elements=[model.request_id]).returning(model.id)
    ).scalar_one_or_none()
    if row_id is None:
        found = _find(session, kind, request_id)
        assert found is not None
        return found
    return Accepted(row_id, kind.states(REJECTED), created=True, error=values["error"])


def _find(session: Session, kind: AnyKind, request_id: str) -> Accepted | None:
    model = kind.model
    row = session.execute(select(model.id, model.state, model.error).where(model.request_id == request_id)).first()
    if row is None:
        return None
    return Accepted(row.id, row.state, created=False, error=row.error)
