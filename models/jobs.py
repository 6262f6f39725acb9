"""Tagging jobs, their assets, and each asset's tags.

A job row is the truth about a Vidmob tagging job: what was asked, what state it is
in, and when it must next be looked at (``next_poll_at``). Redis only carries
messages that point at rows; losing a message loses nothing (see services/sweeper.py).
"""

from __future__ import annotations

import uuid
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Enum,
    ForeignKey,
    Identity,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column, relationship

from models.base import Base, created_at, tz_datetime, updated_at, uuid_pk


class JobState(StrEnum):
    REJECTED = "rejected"  # the payload broke the contract; never sent to Vidmob
    SUBMITTING = "submitting"  # intent stored; Vidmob has not (knowingly) accepted it yet
    POLLING = "polling"  # Vidmob accepted it; we poll until it ends
    COMPLETE = "complete"
    FAILED = "failed"  # Vidmob said FAILED, or a terminal API error
    TIMED_OUT = "timed_out"  # past the job's deadline

    @property
    def is_active(self) -> bool:
        return self in (JobState.SUBMITTING, JobState.POLLING)


ACTIVE_STATES = (JobState.SUBMITTING.value, JobState.POLLING.value)


class CallbackStatus(StrEnum):
    NONE = "none"  # the caller asked for no callback
    PENDING = "pending"  # owed: the job ended, the message is not known to be sent
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


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[uuid_pk]
    # The caller's idempotency key; when they give none, the Celery task id of the
    # message, so a redelivered message still finds its row.
    request_id: Mapped[str] = mapped_column(String(255), unique=True)
    state: Mapped[JobState] = mapped_column(enum_column(JobState, "job_state"))
    error: Mapped[str | None] = mapped_column(Text)
    # The request as received (truncated if absurdly large), kept for audit and retry.
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    client_tags: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
    callback: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    callback_status: Mapped[CallbackStatus] = mapped_column(
        enum_column(CallbackStatus, "callback_status"), server_default=CallbackStatus.NONE.value
    )
    callback_sent_at: Mapped[tz_datetime | None]
    # Which dialect submitted it: polls must speak the same one.
    dialect: Mapped[str] = mapped_column(String(16))
    vidmob_job_id: Mapped[str | None] = mapped_column(String(255), unique=True)

    # --- Poll scheduling (also drives submission retries while SUBMITTING).
    next_poll_at: Mapped[tz_datetime | None]
    # Changes on every hand-off; a message carrying an old token is a no-op.
    poll_token: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    # True while a message carrying poll_token is believed to be in the broker.
    poll_dispatched: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    poll_count: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    submit_attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    # Set when a submission is retried after an attempt whose outcome is unknown:
    # Vidmob may hold a second, paid job for it (the documented submit window).
    duplicate_risk: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))

    asset_count: Mapped[int] = mapped_column(Integer)
    deadline_at: Mapped[tz_datetime]
    submitted_at: Mapped[tz_datetime | None]
    completed_at: Mapped[tz_datetime | None]  # first seen COMPLETE: adaptive polling learns from it
    ended_at: Mapped[tz_datetime | None]
    created_at: Mapped[created_at]
    updated_at: Mapped[updated_at]

    assets: Mapped[list[Asset]] = relationship(
        back_populates="job", order_by="Asset.position", cascade="all, delete-orphan"
    )

    __table_args__ = (
        # The sweeper's query: only active jobs are in this index, so it stays small
        # however many millions of finished jobs the table holds.
        Index(
            "ix_jobs_due",
            "next_poll_at",
            postgresql_where=text("state IN ('submitting', 'polling')"),
        ),
        Index(
            "ix_jobs_callback_owed",
            "ended_at",
            postgresql_where=text("callback_status = 'pending'"),
        ),
        Index("ix_jobs_state_created_at", "state", "created_at"),
    )


class Asset(Base):
    __tablename__ = "assets"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    url: Mapped[str] = mapped_column(Text, index=True)
    external_id: Mapped[str | None] = mapped_column(String(255))  # the caller's own id
    tagged_at: Mapped[tz_datetime | None]
    created_at: Mapped[created_at]

    job: Mapped[Job] = relationship(back_populates="assets")
    tags: Mapped[list[Tag]] = relationship(
        back_populates="asset", order_by="(Tag.category, Tag.label)", cascade="all, delete-orphan"
    )

    __table_args__ = (UniqueConstraint("job_id", "position"),)


class Tag(Base):
    __tablename__ = "tags"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    asset_id: Mapped[int] = mapped_column(ForeignKey("assets.id", ondelete="CASCADE"))
    category: Mapped[str] = mapped_column(String(64))
    label: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[created_at]

    asset: Mapped[Asset] = relationship(back_populates="tags")

    # Storing the same annotation twice is an upsert on this key, not a second row.
    __table_args__ = (UniqueConstraint("asset_id", "category", "label"),)


class ApiAttempt(Base):
    """Every HTTP call made to Vidmob, with its outcome: the audit trail and the
    raw material for latency and error-rate questions."""

    __tablename__ = "api_attempts"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    job_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    task_name: Mapped[str | None] = mapped_column(String(64))
    method: Mapped[str] = mapped_column(String(8))
    endpoint: Mapped[str] = mapped_column(String(255))  # the path template, never a key
    status_code: Mapped[int | None] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(String(16))  # ok | retryable | terminal | unknown
    latency_ms: Mapped[float | None]
    retry_after_s: Mapped[float | None]
    error: Mapped[str | None] = mapped_column(Text)
    attempted_at: Mapped[created_at]

    __table_args__ = (Index("ix_api_attempts_job_id_attempted_at", "job_id", "attempted_at"),)
