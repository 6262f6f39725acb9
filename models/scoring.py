"""Scored media, each scoring round, and what every round said.

A ``ScoredMedia`` row is one ``aperture.score_media`` request: the truth about where that
asset is in the loop score -> (tag -> rescore)* -> done, and when it must next be looked
at (``next_poll_at``, the same durable poll machinery as tagging jobs). Every submission
to Vidmob's Scoring API is a ``ScoringRound`` (Vidmob has no rescore endpoint: a rescore
is a new ``version`` of the media), kept for good with its per-channel summary and every
guideline result. The tagging jobs an asset went through are linked in
``ScoredMediaTaggingJob``; they are ordinary ``jobs`` rows.
"""

from __future__ import annotations

import uuid
from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
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

from models.base import Base, bigint_pk, created_at, tz_datetime, updated_at
from models.durable import Durable, durable_table_args, enum_column


class ScoringState(StrEnum):
    REJECTED = "rejected"  # the payload broke the contract; never sent to Vidmob
    SUBMITTING = "submitting"  # a round is stored; Vidmob has not (knowingly) accepted it yet
    POLLING = "polling"  # Vidmob is scoring the current round: poll its status, then fetch the scores
    AWAITING_TAGS = "awaiting_tags"  # flagged for tagging; waits a short window to be batched with others
    TAGGING = "tagging"  # a tagging job carries it; that job's end chains aperture.rescore (or a re-tag)
    SCORED = "scored"  # final scores stored (NO_DATA codes nobody can fix are recorded on the round)
    UNSUPPORTED = "unsupported"  # Vidmob: this media cannot be scored
    FAILED = "failed"  # Vidmob said FAILED, or a terminal API error
    NEEDS_ATTENTION = "needs_attention"  # the rescore (or re-tag) bound was reached: a person must look
    TIMED_OUT = "timed_out"  # a round did not finish before its deadline

    @property
    def is_active(self) -> bool:
        return self in ACTIVE_SCORING_STATES


# Active: not ended, work still to do. Every other state is final.
ACTIVE_SCORING_STATES = frozenset(
    {ScoringState.SUBMITTING, ScoringState.POLLING, ScoringState.AWAITING_TAGS, ScoringState.TAGGING}
)
# The active states whose next look the dispatcher sends when ``next_poll_at`` is due; a media in
# TAGGING is moved by its tagging job's end instead.
LOOKED_AT_SCORING_STATES = (ScoringState.SUBMITTING, ScoringState.POLLING, ScoringState.AWAITING_TAGS)


class RoundStatus(StrEnum):
    SUBMITTING = "submitting"
    SCORING = "scoring"  # accepted by Vidmob (or a 409: accepted earlier), scores not in yet
    COMPLETE = "complete"  # scores fetched and stored
    UNSUPPORTED = "unsupported"
    FAILED = "failed"
    TIMED_OUT = "timed_out"


class ScoredMedia(Durable, Base):
    """One ``aperture.score_media`` request (its id is the ``scoring_id`` of callbacks); the
    lifecycle columns are models.durable's. ``deadline_at`` is the current round's."""

    __tablename__ = "scored_media"

    state: Mapped[ScoringState] = mapped_column(enum_column(ScoringState, "scoring_state"))
    # The caller's media id and URL (NULL only on a rejected request that lacked them).
    media_id: Mapped[str | None] = mapped_column(String(255))
    url: Mapped[str | None] = mapped_column(Text)
    version: Mapped[str | None] = mapped_column(String(255))  # as given; rescores append "-r<n>"
    channels: Mapped[list[str]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
    workspace_id: Mapped[int | None] = mapped_column(BigInteger)

    round_count: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    rescore_count: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    tag_attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    # The tagging job carrying it while TAGGING (history: ScoredMediaTaggingJob).
    tagging_job_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    flagged_at: Mapped[tz_datetime | None]  # when it last entered AWAITING_TAGS: the batch window runs from here
    deadline_at: Mapped[tz_datetime | None]  # of the current round

    rounds: Mapped[list[ScoringRound]] = relationship(
        back_populates="media", order_by="ScoringRound.number", cascade="all, delete-orphan"
    )
    tagging_jobs: Mapped[list[ScoredMediaTaggingJob]] = relationship(
        order_by="ScoredMediaTaggingJob.created_at", cascade="all, delete-orphan"
    )

    __table_args__ = (
        *durable_table_args("scored_media", LOOKED_AT_SCORING_STATES),
        # The batcher's query: what waits for tagging, oldest first.
        Index("ix_scored_media_awaiting_tags", "flagged_at", postgresql_where=text("state = 'awaiting_tags'")),
        # The tagging hook's query: which media wait on the job that just ended.
        Index("ix_scored_media_tagging", "tagging_job_id", postgresql_where=text("state = 'tagging'")),
        Index("ix_scored_media_media_id", "media_id"),
        CheckConstraint("state = 'rejected' OR (media_id IS NOT NULL AND url IS NOT NULL)", name="identified"),
    )


class ScoringRound(Base):
    """One submission to the Scoring API (``POST /v1/media``) and what came of it."""

    __tablename__ = "scoring_rounds"

    id: Mapped[bigint_pk]
    scored_media_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("scored_media.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)  # 1 = the first scoring; n > 1 = rescore n - 1
    version: Mapped[str | None] = mapped_column(String(255))  # as sent to Vidmob
    # Why it exists: "initial", "tagged" (after a tagging job), or the NO_DATA code that asked for it.
    reason: Mapped[str] = mapped_column(String(64))
    tagging_job_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    status: Mapped[RoundStatus] = mapped_column(enum_column(RoundStatus, "round_status"))
    vidmob_status: Mapped[str | None] = mapped_column(String(16))  # the last status Vidmob answered
    # NULL after a 409 (Vidmob had it already; see docs/scoring.md): polled by media id + version.
    vidmob_unique_id: Mapped[str | None] = mapped_column(String(255))
    conflict: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    submit_attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    poll_count: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    error_polls: Mapped[int] = mapped_column(Integer, server_default=text("0"))  # status ERROR seen
    fetch_count: Mapped[int] = mapped_column(Integer, server_default=text("0"))  # > 1: backlog refetches
    # What the scores asked for (a clients.scoring.ScoreAction value, or "needs_attention").
    action: Mapped[str | None] = mapped_column(String(32))
    no_data_codes: Mapped[list[str]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
    error: Mapped[str | None] = mapped_column(Text)
    submitted_at: Mapped[tz_datetime | None]
    scored_at: Mapped[tz_datetime | None]
    created_at: Mapped[created_at]
    updated_at: Mapped[updated_at]

    media: Mapped[ScoredMedia] = relationship(back_populates="rounds")
    summaries: Mapped[list[ScoringChannelSummary]] = relationship(
        order_by="ScoringChannelSummary.channel", cascade="all, delete-orphan"
    )
    results: Mapped[list[ScoringGuidelineResult]] = relationship(
        order_by="ScoringGuidelineResult.position", cascade="all, delete-orphan"
    )

    __table_args__ = (UniqueConstraint("scored_media_id", "number"),)


class ScoringChannelSummary(Base):
    __tablename__ = "scoring_summaries"

    id: Mapped[bigint_pk]
    round_id: Mapped[int] = mapped_column(ForeignKey("scoring_rounds.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(64))
    adherence_percent: Mapped[float | None]
    pass_count: Mapped[int] = mapped_column(Integer)
    fail_count: Mapped[int] = mapped_column(Integer)
    applicable_count: Mapped[int] = mapped_column(Integer)
    not_applicable_count: Mapped[int] = mapped_column(Integer)
    not_available_count: Mapped[int] = mapped_column(Integer)

    # A refetch of the same round (NO_DATA_SCORING_BACKLOG) updates these rows in place.
    __table_args__ = (UniqueConstraint("round_id", "channel"),)


class ScoringGuidelineResult(Base):
    __tablename__ = "scoring_results"

    id: Mapped[bigint_pk]
    round_id: Mapped[int] = mapped_column(ForeignKey("scoring_rounds.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)  # index in Vidmob's detail list
    channel: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(Text)
    rule: Mapped[str | None] = mapped_column(Text)
    result: Mapped[str] = mapped_column(String(64))  # PASS | FAIL | NOT_APPLICABLE | NO_DATA[_<CODE>]
    weight: Mapped[float | None]

    __table_args__ = (UniqueConstraint("round_id", "position"),)


class ScoredMediaTaggingJob(Base):
    """Every tagging job a scored media was carried by (one job carries up to 200 media)."""

    __tablename__ = "scored_media_tagging_jobs"

    scored_media_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("scored_media.id", ondelete="CASCADE"), primary_key=True
    )
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    created_at: Mapped[created_at]

    __table_args__ = (Index("ix_scored_media_tagging_jobs_job_id", "job_id"),)
