"""The lifecycle columns every durable row shares: tagging jobs and scored media alike.

A durable row is the truth about one piece of remote work: what was asked (``payload``),
where it is (its own ``state`` column, declared by each model), when it must next be looked
at (``next_poll_at``), which message may do it (``poll_token``), and what its caller is owed
when it ends (``callback``). services/durable/ is the engine that moves these rows; the
domains (services/tagging/, services/scoring/) only decide what each answer means.
"""

from __future__ import annotations

import datetime as dt
import uuid
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from sqlalchemy import CheckConstraint, Enum, Index, Integer, String, Text, text
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from models.base import created_at, tz_datetime, updated_at, uuid_pk


class CallbackStatus(StrEnum):
    NONE = "none"  # the caller asked for no callback
    PENDING = "pending"  # owed: the row ended, the message is not known to be sent
    SENT = "sent"


def enum_column(enum: type[StrEnum], name: str) -> Enum:
    # Stored by value as VARCHAR + CHECK: adding a state later is a plain migration.
    return Enum(
        enum,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=16,
        values_callable=lambda e: [m.value for m in e],
    )


class Durable:
    """Mixin: the columns services/durable/ reads and writes. A model adds its ``state``
    (an enum of its own), its domain columns and ``durable_table_args(...)``."""

    id: Mapped[uuid_pk]
    if TYPE_CHECKING:
        # Declared by each model: its state (an enum of its own), and when its work is given up.
        state: Mapped[StrEnum]
        deadline_at: Mapped[dt.datetime | None]
    # Who sent it (services/callers.py): an application's name, "default" for a caller that names
    # none (every row stored before callers existed, migration 0008).
    caller: Mapped[str] = mapped_column(String(100), server_default=text("'default'"))
    # The caller's idempotency key; when they give none, the Celery task id of the message,
    # so a redelivered message still finds its row. Unique per caller (``ux_<table>_key``), among
    # the rows that are not refusals of a reused key.
    request_id: Mapped[str] = mapped_column(String(255))
    # A hash of the validated request (services/durable/intake.fingerprint): the same key with the
    # same fingerprint is a replay, with another a refusal. NULL on rows stored before 0008.
    request_fingerprint: Mapped[str | None] = mapped_column(String(64))
    # A refusal of a key already used for a different request: the row that holds the key.
    key_conflict_of: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    # How often the same request came again under its key (a replay creates nothing), and when last.
    replays: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    last_replay_at: Mapped[tz_datetime | None]
    error: Mapped[str | None] = mapped_column(Text)
    # The request as received (truncated if absurdly large), kept for audit and retry.
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    # SQL NULL when the caller asked for none: "owed" is decided by `callback IS NULL`, and a
    # JSON null would read as a callback (the CHECK in migration 0003 keeps it so).
    callback: Mapped[dict[str, Any] | None] = mapped_column(JSONB(none_as_null=True))
    callback_status: Mapped[CallbackStatus] = mapped_column(
        enum_column(CallbackStatus, "callback_status"), server_default=CallbackStatus.NONE.value
    )
    callback_sent_at: Mapped[tz_datetime | None]
    # How many times an operator restarted the row after it ended: each end owes its own
    # callback, with its own task id, so a caller that drops repeated ids still gets it.
    generation: Mapped[int] = mapped_column(Integer, server_default=text("0"))

    # --- The engine's columns (services/durable/lifecycle.py is the only writer), one meaning each:
    # When the row must next be looked at: the dispatcher sends a look once it is due (NULL: the
    # engine does not look at the row: it ended, or something else moves it, such as its pack).
    next_poll_at: Mapped[tz_datetime | None]
    # The one message allowed to act on the row; changes on every hand-off, so a message carrying an
    # old token is a no-op.
    poll_token: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    # When the message carrying poll_token was sent (NULL: none is out; the look is parked until due).
    # A message not run lost_message_after_s after it was sent and due is presumed lost: sent again.
    dispatched_at: Mapped[tz_datetime | None]
    # While a worker holds the row (a claim), until when: past it the holder is presumed dead and
    # the row is looked at again.
    leased_until: Mapped[tz_datetime | None]

    ended_at: Mapped[tz_datetime | None]
    created_at: Mapped[created_at]
    updated_at: Mapped[updated_at]


def durable_table_args(table: str, looked_at: tuple[str, ...]) -> tuple[Index | CheckConstraint, ...]:
    """The engine's indexes, on the rows their queries can match only, so they stay small
    however many millions of ended rows the table holds; and the callback's shape.

    ``looked_at``: the states whose next look ``next_poll_at`` drives (the dispatcher's)."""
    states = ", ".join(f"'{s}'" for s in looked_at)
    return (
        # A JSON null would read as "a callback is owed" (migration 0003).
        CheckConstraint("callback IS NULL OR jsonb_typeof(callback) = 'object'", name="callback_object"),
        # The dispatcher's parked looks, by when they are due (services/durable/sweeper.py).
        Index(
            f"ix_{table}_due",
            "next_poll_at",
            postgresql_where=text(f"state IN ({states}) AND dispatched_at IS NULL"),
        ),
        # The dispatcher's looks sent and not run yet, by when each should have run (the later of its
        # send and its due time): the lost ones are the oldest, found without reading the others.
        Index(
            f"ix_{table}_dispatched",
            text("greatest(next_poll_at, dispatched_at)"),
            postgresql_where=text(f"state IN ({states}) AND dispatched_at IS NOT NULL"),
        ),
        # The dispatcher's owed callbacks.
        Index(f"ix_{table}_callback_owed", "ended_at", postgresql_where=text("callback_status = 'pending'")),
        Index(f"ix_{table}_state_created_at", "state", "created_at"),
        # The idempotency key: one row per (request_id, caller), besides the refusals of that key
        # (one per different request it was reused for). request_id first: operators look rows up by it.
        Index(
            f"ux_{table}_key",
            "request_id",
            "caller",
            unique=True,
            postgresql_where=text("key_conflict_of IS NULL"),
        ),
        Index(
            f"ux_{table}_key_conflicts",
            "request_id",
            "caller",
            "request_fingerprint",
            unique=True,
            postgresql_where=text("key_conflict_of IS NOT NULL"),
        ),
    )
