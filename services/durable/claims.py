"""Taking a durable row: the right of one message to act on it, by compare-and-set on its token.

``claim`` swaps the token and leases the row to the worker (``leased_until``); ``read`` is its
optimistic counterpart for a call that is safe to make twice (it changes nothing; the record is
the compare-and-set). Domains subclass ``Claim`` with what their call needs (services/tagging/claims.py,
services/scoring/lifecycle.py). Like services/durable/lifecycle.py, this module writes the engine's
columns, and no module outside services/durable/ does.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any, ClassVar, Self

from sqlalchemy import ColumnElement, and_, or_, select, update
from sqlalchemy.engine import Row
from sqlalchemy.orm import Session

from config import Settings
from models import Durable
from services.durable.kind import AnyKind
from services.durable.schedule import lease_until


@dataclass(frozen=True, kw_only=True)
class Claim:
    """The right to act on a row, held until the next transition: ``token`` is the row's
    new token. Domains subclass it with what their call needs."""

    # The row's own columns the claim reads back (beside these five), by field name.
    COLUMNS: ClassVar[tuple[Any, ...]] = ()
    # Anyone may take the row over once it is due and no live lease holds it (not only the holder
    # of the current token): for steps that are safe to repeat after a crash.
    TAKEOVER_AFTER_LEASE: ClassVar[bool] = False
    # Read the row instead of swapping its token (``read``): for steps whose call is safe to
    # make twice (a status GET). One write and its WAL flush fewer per look; the record is still
    # a compare-and-set on the token, so of two copies of a message only the first records.
    OPTIMISTIC: ClassVar[bool] = False

    row_id: uuid.UUID
    token: uuid.UUID
    request_id: str
    caller: str
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
        """The domain's columns the claim sets besides the engine's."""
        return {}

    @classmethod
    def from_row(cls, session: Session, row: Row[Any]) -> Self:
        """The claim from the claimed row (``COLUMNS`` included); a subclass that needs more
        (child rows, a warning) reads it here, in the claim's transaction."""
        return cls.of(row)


def _claimed_columns(model: type[Durable], returning: Iterable[Any]) -> tuple[Any, ...]:
    return (
        model.id.label("row_id"),
        model.poll_token.label("token"),
        model.request_id,
        model.caller,
        model.deadline_at,
        *returning,
    )


def claim(
    session: Session,
    kind: AnyKind,
    row_id: uuid.UUID,
    token: uuid.UUID | None,
    *,
    state: StrEnum,
    settings: Settings,
    now: dt.datetime,
    takeover_after_lease: bool = False,
    values: dict[str, Any] | None = None,
    returning: Iterable[Any] = (),
) -> Row[Any] | None:
    """Swap the row's token for a new one and lease the row until the task's hard time limit.
    Only the message holding the current token may, or (``takeover_after_lease``) anyone once the
    row is due and no live lease holds it: a redelivered first message, after a crash.
    Returns ``row_id``, the new ``token``, ``request_id``, ``caller``, ``deadline_at`` and the
    ``returning`` columns (for ``Claim.of``), or None: stale, duplicate, or not in ``state``."""
    model = kind.model
    conditions: list[ColumnElement[bool]] = []
    if token is not None:
        conditions.append(model.poll_token == token)
    if takeover_after_lease:
        free = or_(model.leased_until.is_(None), model.leased_until <= now)
        conditions.append(and_(model.next_poll_at <= now, free))
    if not conditions:
        return None
    return session.execute(
        update(model)
        .where(model.id == row_id, model.state == state, or_(*conditions))
        .values(
            poll_token=uuid.uuid4(),
            dispatched_at=None,  # the message has arrived
            leased_until=lease_until(now, settings),
            **(values or {}),
        )
        .returning(*_claimed_columns(model, returning))
    ).first()


def read(
    session: Session,
    kind: AnyKind,
    row_id: uuid.UUID,
    token: uuid.UUID | None,
    *,
    state: StrEnum,
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
        select(*_claimed_columns(model, returning)).where(
            model.id == row_id, model.state == state, model.poll_token == token
        )
    ).first()


def hold_read(session: Session, kind: AnyKind, claim: Claim, *, state: StrEnum) -> bool:
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
