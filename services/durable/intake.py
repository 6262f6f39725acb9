"""Accepting a request: one row per idempotency key, stored valid or rejected with a reason.

Every public task stores what it was sent before doing anything else: a valid request as a
row in its first state, holding a lease for the message being processed; an invalid one as
``rejected`` with a readable reason (and its callback owed, when the caller gave a valid one
that it may use: services/callers.py).

The key is (request_id, caller). The same key with the same request (its ``fingerprint``) again
is a replay: it finds the row, creates nothing, and is counted on the row (``replays``). The same
key with a different request is refused as a rejected row of its own (``key_conflict_of`` names
the row that holds the key), so nothing a caller sends is ever dropped without a row and a reason.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError
from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from config import Settings
from models import CallbackStatus
from services import callers
from services.contract import REFUSED_FIELD, CallbackIn, describe_errors, parse_callback
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
    fingerprint: str | None = None
    caller: str = "default"


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


def fingerprint(request: BaseModel | None, payload: dict[str, Any], positional_args: tuple[Any, ...] = ()) -> str:
    """A hash of what was asked, key aside: of the validated request with its defaults filled in
    (so ``"batch": true`` and no ``batch`` are the same request), or of the payload as sent when it
    is invalid. Canonical JSON: the order of keys does not matter, the order of assets does."""
    key_fields = {"request_id", "caller"}
    if request is not None:
        what: Any = request.model_dump(mode="json", exclude=key_fields)
    else:
        what = {"args": list(positional_args), "kwargs": {k: v for k, v in payload.items() if k not in key_fields}}
    canonical = json.dumps(what, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=repr)
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


def accept(
    session: Session,
    spec: Intake[R],
    payload: dict[str, Any],
    *,
    task_id: str,
    settings: Settings,
    now: dt.datetime,
    positional_args: tuple[Any, ...] = (),
    broker_user: str | None = None,
) -> Accepted:
    """Store ``payload`` as a row of ``spec.kind``: SUBMITTING when valid, REJECTED with a reason
    when not. The same key with the same request returns the existing row and creates nothing;
    with a different one, a rejected row of its own. ``broker_user``: the sender as the broker
    vouches for it (RabbitMQ's ``user_id``), None when the broker says nothing."""
    kind = spec.kind
    caller = callers.resolve(payload, broker_user, settings)
    request_id = pg_safe(request_id_for(payload, task_id))

    error: str | None = caller.refused
    request: R | None = None
    refused = payload.get(REFUSED_FIELD)
    if isinstance(refused, str):
        # The worker refused to decode the message as sent (too large, too deep): its reason.
        error = error or refused
    elif positional_args:
        error = error or spec.usage
    else:
        try:
            request = spec.contract.model_validate(payload)
        except ValidationError as exc:
            error = error or describe_errors(exc)
    print_ = fingerprint(request, payload, positional_args)
    existing = _find(session, kind, request_id, caller.name)
    if existing is not None and existing.fingerprint in (None, print_):
        return _replayed(session, kind, existing, now)
    if error is not None:
        request = None

    callback = getattr(request, "callback", None) if request is not None else parse_callback(payload.get("callback"))
    if callback is not None:
        refusal = callers.callback_refusal(caller.name, callback.task, callback.queue, settings)
        if refusal is not None:
            # Not a callback this caller may have sent: the request is refused, and nobody is called.
            callback, request, error = None, None, error or refusal
    conflict_of = None
    if existing is not None:
        conflict_of = existing.row_id
        noun = kind.name.replace("_", " ")
        error = f'request_id "{request_id}" was already used for a different request: {noun} {existing.row_id}'
        request = None
    values: dict[str, Any] = {
        "request_id": request_id,
        "caller": caller.name,
        "request_fingerprint": print_,
        "key_conflict_of": conflict_of,
        "payload": storable(payload if not positional_args else {"args": list(positional_args), **payload}),
        "callback": _stored(callback),
    }
    if request is None:
        values |= spec.rejected_fields(payload, settings, now) | _rejected(error, callback, now)
    else:
        values |= spec.fields(request, settings, now) | {"state": SUBMITTING} | accepted_values(now, settings)
    values = {name: pg_safe(value) for name, value in values.items()}
    row_id = _insert(session, kind, values)
    if row_id is None:
        # A concurrent delivery of the same key stored it first: ON CONFLICT waited for it.
        found = _find(session, kind, request_id, caller.name, conflict_of=conflict_of, fingerprint=print_)
        assert found is not None
        return _replayed(session, kind, found, now)
    if request is not None:
        spec.on_created(session, row_id, request)
    return Accepted(
        row_id,
        kind.states(values["state"]),
        created=True,
        error=error,
        token=values.get("poll_token"),
        fingerprint=print_,
        caller=caller.name,
    )


def _stored(callback: CallbackIn | None) -> dict[str, Any] | None:
    return callback.model_dump() if callback else None


def _rejected(error: str | None, callback: CallbackIn | None, now: dt.datetime) -> dict[str, Any]:
    return {
        "state": REJECTED,
        "error": error,
        "ended_at": now,
        "callback_status": CallbackStatus.PENDING if callback else CallbackStatus.NONE,
    }


def _insert(session: Session, kind: AnyKind, values: dict[str, Any]) -> uuid.UUID | None:
    """The row, unless its key (or, for a refusal, its key and request) is stored already."""
    model = kind.model
    if values.get("key_conflict_of") is None:
        columns, where = [model.request_id, model.caller], model.key_conflict_of.is_(None)
    else:
        columns, where = [model.request_id, model.caller, model.request_fingerprint], model.key_conflict_of.isnot(None)
    statement = pg_insert(model).values(**values).on_conflict_do_nothing(index_elements=columns, index_where=where)
    row_id: uuid.UUID | None = session.execute(statement.returning(model.id)).scalar_one_or_none()
    return row_id


def _replayed(session: Session, kind: AnyKind, found: Accepted, now: dt.datetime) -> Accepted:
    """The same request under its key again: nothing new, the replay counted on the row."""
    model = kind.model
    session.execute(update(model).where(model.id == found.row_id).values(replays=model.replays + 1, last_replay_at=now))
    return found


def accept_unstorable(
    session: Session,
    spec: Intake[Any],
    payload: dict[str, Any],
    reason: str,
    *,
    task_id: str,
    settings: Settings,
    now: dt.datetime,
    broker_user: str | None = None,
) -> Accepted:
    """The last resort when ``accept`` could not store a request (PostgreSQL refused something
    pg_safe did not foresee): a rejected row with the reason and a printable copy of the payload,
    so the request is never lost and its caller still hears of it when the callback is usable."""
    kind = spec.kind
    caller = callers.resolve(payload, broker_user, settings)
    request_id = pg_safe(request_id_for(payload, task_id))
    print_ = fingerprint(None, {"unstorable": repr(payload)})
    existing = _find(session, kind, request_id, caller.name)
    if existing is not None:
        return existing
    callback = parse_callback(payload.get("callback"))
    if callback is not None and callers.callback_refusal(caller.name, callback.task, callback.queue, settings):
        callback = None
    values = (
        spec.rejected_fields({}, settings, now)
        | {
            "request_id": request_id,
            "caller": caller.name,
            "request_fingerprint": print_,
            "payload": {"unstorable": pg_safe(repr(payload)[:MAX_STORED_PAYLOAD_CHARS])},
            "callback": _stored(callback),
        }
        | _rejected(pg_safe(f"the request could not be stored as sent: {reason}")[:2000], callback, now)
    )
    row_id = _insert(session, kind, values)
    if row_id is None:
        found = _find(session, kind, request_id, caller.name)
        assert found is not None
        return found
    return Accepted(row_id, kind.states(REJECTED), created=True, error=values["error"], caller=caller.name)


def _find(
    session: Session,
    kind: AnyKind,
    request_id: str,
    caller: str,
    *,
    conflict_of: uuid.UUID | None = None,
    fingerprint: str | None = None,
) -> Accepted | None:
    """The row that holds the key; with ``conflict_of``, the refusal of this key for this request."""
    model = kind.model
    query = select(model.id, model.state, model.error, model.request_fingerprint, model.caller).where(
        model.request_id == request_id, model.caller == caller
    )
    if conflict_of is None:
        query = query.where(model.key_conflict_of.is_(None))
    else:
        query = query.where(model.key_conflict_of.isnot(None), model.request_fingerprint == fingerprint)
    row = session.execute(query).first()
    if row is None:
        return None
    return Accepted(
        row.id, row.state, created=False, error=row.error, fingerprint=row.request_fingerprint, caller=row.caller
    )
