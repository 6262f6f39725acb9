"""Tagging jobs, their assets, and each asset's tags.

A job row is the truth about a Vidmob tagging job: what was asked, what state it is
in, and when it must next be looked at (``next_poll_at``). Redis only carries
messages that point at rows; losing a message loses nothing (see services/durable/sweeper.py).
"""

from __future__ import annotations

import uuid
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    ColumnElement,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column, relationship

from models.base import Base, bigint_pk, created_at, tz_datetime
from models.durable import CallbackStatus, Durable, durable_table_args, enum_column

__all__ = [
    "ACTIVE_JOB_STATES",
    "LOOKED_AT_JOB_STATES",
    "ApiAttempt",
    "Asset",
    "CallbackStatus",
    "Job",
    "JobState",
    "LibraryCollectionSize",
    "LibraryCountsState",
    "LibraryTagCount",
    "Tag",
    "enum_column",
    "members_of_pack",
]


class JobState(StrEnum):
    REJECTED = "rejected"  # the payload broke the contract; never sent to Vidmob
    SUBMITTING = "submitting"  # intent stored; Vidmob has not (knowingly) accepted it yet
    POLLING = "polling"  # Vidmob accepted it; we poll until it ends
    COMPLETE = "complete"
    FAILED = "failed"  # Vidmob said FAILED, or a terminal API error
    TIMED_OUT = "timed_out"  # past the job's deadline
    # Waiting in a pack (services/tagging/packing.py): its assets go to Vidmob in the pack's job,
    # and the pack's end ends it (or sends it alone). Never looked at by the dispatcher itself.
    PACKED = "packed"

    @property
    def is_active(self) -> bool:
        return self in ACTIVE_JOB_STATES


# Active: not ended, work still to do. Every other state is final.
ACTIVE_JOB_STATES = frozenset({JobState.SUBMITTING, JobState.POLLING, JobState.PACKED})
# The active states whose next look the dispatcher sends when ``next_poll_at`` is due; a packed request
# is moved by its pack's end instead.
LOOKED_AT_JOB_STATES = (JobState.SUBMITTING, JobState.POLLING)


class Job(Durable, Base):
    """A tagging request: one Vidmob tagging job (the lifecycle columns are models.durable's)."""

    __tablename__ = "jobs"

    state: Mapped[JobState] = mapped_column(enum_column(JobState, "job_state"))
    client_tags: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
    # Which dialect submitted it: polls must speak the same one.
    dialect: Mapped[str] = mapped_column(String(16))
    vidmob_job_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    poll_count: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    submit_attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    # Set when a submission is retried after an attempt whose outcome is unknown:
    # Vidmob may hold a second, paid job for it (the documented submit window).
    duplicate_risk: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    # The caller's `fresh: true`: tagged at Vidmob even if its assets' tags could be reused. A column,
    # not read from ``payload``: a large payload is stored truncated (services/durable/storable.py).
    fresh: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    # Batching (services/tagging/packing.py, migration 0006). ``batch``: the caller's consent to share
    # a Vidmob job. A pack is a job row of its own (``is_pack``: no assets, no callback) whose Vidmob
    # job carries the assets of its members; ``packed_in_job_id`` is a member's pack (kept after the
    # pack ended, so a member re-sent alone after a failed pack is never packed again), and
    # ``pack_open_until`` says a pack still takes members (cleared when its submission starts).
    batch: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    is_pack: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    packed_in_job_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    pack_open_until: Mapped[tz_datetime | None]

    asset_count: Mapped[int] = mapped_column(Integer)
    deadline_at: Mapped[tz_datetime]
    submitted_at: Mapped[tz_datetime | None]
    completed_at: Mapped[tz_datetime | None]  # first seen COMPLETE: adaptive polling learns from it
    # The caller's label for a set of jobs (a campaign, a brand): a subset of the library (services/library/).
    collection: Mapped[str | None] = mapped_column(String(100))
    # Admission (services/tagging/capacity.py): the caller's priority within its own waiting work
    # (``interactive`` before ``bulk``), and since when the submission waits for a slot under the
    # open-jobs cap (NULL: not waiting).
    priority: Mapped[str] = mapped_column(String(16), server_default=text("'interactive'"))
    # Assets its Vidmob job carried (reused ones are never sent): a caller's budget and usage count them.
    sent_assets: Mapped[int | None] = mapped_column(Integer)
    waiting_since: Mapped[tz_datetime | None]

    assets: Mapped[list[Asset]] = relationship(
        back_populates="job", order_by="Asset.position", cascade="all, delete-orphan"
    )

    __table_args__ = (
        *durable_table_args("jobs", LOOKED_AT_JOB_STATES),
        Index("ix_jobs_collection", "collection", postgresql_where=text("collection IS NOT NULL")),
        # A pack's members (its end moves them), and the packs still taking members (a handful).
        Index("ix_jobs_packed_in_job_id", "packed_in_job_id", postgresql_where=text("packed_in_job_id IS NOT NULL")),
        Index("ix_jobs_open_packs", "dialect", postgresql_where=text("pack_open_until IS NOT NULL")),
        # The submissions waiting for a slot under the open-jobs cap, in the order they came.
        Index(
            "ix_jobs_waiting",
            "waiting_since",
            postgresql_where=text("waiting_since IS NOT NULL AND state = 'submitting'"),
        ),
        # Each caller's waiting submissions in turn order (services/tagging/capacity.fair_order).
        Index(
            "ix_jobs_waiting_turns",
            "caller",
            text("(priority = 'bulk')"),
            "waiting_since",
            "id",
            postgresql_where=text("waiting_since IS NOT NULL AND state = 'submitting'"),
        ),
        # Usage by caller over a window (aperture callers) and the open jobs per caller (admission).
        Index("ix_jobs_caller_created_at", "caller", "created_at"),
        CheckConstraint("priority IN ('interactive', 'bulk')", name="priority"),
    )


def members_of_pack(pack_id: uuid.UUID) -> tuple[ColumnElement[bool], ColumnElement[bool]]:
    """Where-conditions of the requests still waiting on a pack (an operator may have ended one
    meanwhile): what the pack sends, what its answer is written on, what its end moves."""
    return (Job.packed_in_job_id == pack_id, Job.state == JobState.PACKED)


class Asset(Base):
    __tablename__ = "assets"

    id: Mapped[bigint_pk]
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    url: Mapped[str] = mapped_column(Text, index=True)
    external_id: Mapped[str | None] = mapped_column(String(255))  # the caller's own id
    # When its tags were made: by Vidmob for this asset, or, when they were reused
    # (services/tagging/reuse.py), by Vidmob for the asset they were copied from.
    tagged_at: Mapped[tz_datetime | None]
    # Reused tags: the asset whose Vidmob tagging they copy (the original, never a copy of it).
    reused_from_asset_id: Mapped[int | None] = mapped_column(ForeignKey("assets.id", ondelete="SET NULL"))
    created_at: Mapped[created_at]

    job: Mapped[Job] = relationship(back_populates="assets")
    reused_from: Mapped[Asset | None] = relationship(remote_side="Asset.id", lazy="raise")
    tags: Mapped[list[Tag]] = relationship(
        back_populates="asset", order_by="(Tag.category, Tag.label)", cascade="all, delete-orphan"
    )

    __table_args__ = (
        UniqueConstraint("job_id", "position"),
        # The library's "latest tagging of a URL" (services/library/, migration 0004): whether a newer
        # tagging of the same URL exists is one index-only probe.
        Index(
            "ix_assets_url_tagged_at_id",
            "url",
            "tagged_at",
            "id",
            postgresql_where=text("tagged_at IS NOT NULL"),
        ),
        # The library's date-range subsets.
        Index("ix_assets_tagged_at", "tagged_at", postgresql_where=text("tagged_at IS NOT NULL")),
        # Deleting an original finds its copies (ON DELETE SET NULL) without a scan (migration 0005).
        Index(
            "ix_assets_reused_from_asset_id",
            "reused_from_asset_id",
            postgresql_where=text("reused_from_asset_id IS NOT NULL"),
        ),
    )


class Tag(Base):
    __tablename__ = "tags"

    id: Mapped[bigint_pk]
    asset_id: Mapped[int] = mapped_column(ForeignKey("assets.id", ondelete="CASCADE"))
    category: Mapped[str] = mapped_column(String(64))
    label: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[created_at]

    asset: Mapped[Asset] = relationship(back_populates="tags")

    __table_args__ = (
        # Storing the same annotation twice is an upsert on this key, not a second row.
        UniqueConstraint("asset_id", "category", "label"),
        # The library's search by tag: the assets carrying a tag, in asset id order (by label alone, or
        # by category and label).
        Index("ix_tags_label_category_asset_id", "label", "category", "asset_id"),
    )


class ApiAttempt(Base):
    """Every HTTP call made to Vidmob, with its outcome: the audit trail and the
    raw material for latency and error-rate questions."""

    __tablename__ = "api_attempts"

    id: Mapped[bigint_pk]
    # Its owner: the durable row whose task made the call (at most one of these is set).
    job_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    scored_media_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("scored_media.id", ondelete="CASCADE"))
    task_name: Mapped[str | None] = mapped_column(String(64))
    method: Mapped[str] = mapped_column(String(8))
    endpoint: Mapped[str] = mapped_column(String(255))  # the path template, never a key
    status_code: Mapped[int | None] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(String(16))  # ok | retryable | terminal | unknown
    latency_ms: Mapped[float | None]
    retry_after_s: Mapped[float | None]
    error: Mapped[str | None] = mapped_column(Text)
    attempted_at: Mapped[created_at]

    __table_args__ = (
        Index("ix_api_attempts_job_id_attempted_at", "job_id", "attempted_at"),
        Index("ix_api_attempts_scored_media_id_attempted_at", "scored_media_id", "attempted_at"),
        CheckConstraint("num_nonnulls(job_id, scored_media_id) <= 1", name="one_owner"),
    )


# --- The library's counts (migration 0004, services/library/) ----------------------------------
# Derived data: how many assets of the library (each URL at its latest tagging) carry each tag, per
# collection. Kept exact in the transaction that stores tags, by triggers of migration 0004, so a
# tag inventory of millions of assets reads a few thousand rows instead of counting every tag.


class LibraryTagCount(Base):
    """Per collection ('' for jobs without one) and tag: ``assets`` of the library carrying it and,
    for client tags, ``requested``: the assets whose latest tagging asked for that client tag."""

    __tablename__ = "library_tag_counts"

    collection: Mapped[str] = mapped_column(String(100), primary_key=True)
    category: Mapped[str] = mapped_column(String(64), primary_key=True)
    label: Mapped[str] = mapped_column(String(255), primary_key=True)
    assets: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    requested: Mapped[int] = mapped_column(Integer, server_default=text("0"))


class LibraryCollectionSize(Base):
    """Assets of the library per collection ('' for jobs without one)."""

    __tablename__ = "library_collection_sizes"

    collection: Mapped[str] = mapped_column(String(100), primary_key=True)
    assets: Mapped[int] = mapped_column(Integer, server_default=text("0"))


class LibraryCountsState(Base):
    """One row: whether the counts above are exact. A delete or an update the triggers do not
    follow (deleting jobs, assets or tags, changing a job's collection) sets ``valid`` false; the
    library then counts from the tags until ``library_rebuild_counts()`` runs."""

    __tablename__ = "library_counts_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    valid: Mapped[bool] = mapped_column(Boolean)
    rebuilt_at: Mapped[tz_datetime | None]

    __table_args__ = (CheckConstraint("id = 1", name="singleton"),)
