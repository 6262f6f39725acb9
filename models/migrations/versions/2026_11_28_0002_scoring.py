"""scoring: scored media, every scoring round, its summaries and guideline results

Revision ID: 0002
Revises: 0001

Reviewed by hand:
- New tables only; nothing existing is altered. The one lock on a busy table is the short
  SHARE ROW EXCLUSIVE that adding a foreign key to ``jobs`` takes (no rewrite, no scan).
- Partial indexes keep the sweeper (``ix_scored_media_due``), the tagging batcher
  (``ix_scored_media_awaiting_tags``), the tagging hook (``ix_scored_media_tagging``) and the
  owed-callback query on active rows only, like ``ix_jobs_due``.
- The unique constraints (scored_media_id, number), (round_id, channel), (round_id, position)
  also serve as the foreign-key indexes of the child tables.
- States are VARCHAR + CHECK (stored by value), as in 0001: adding one later is a plain migration.
Create Date: 2026-11-28 13:13:48.604095
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

SWEPT = sa.text("state IN ('submitting', 'polling', 'awaiting_tags')")
AWAITING_TAGS = sa.text("state = 'awaiting_tags'")
TAGGING = sa.text("state = 'tagging'")
CALLBACK_OWED = sa.text("callback_status = 'pending'")


def _state_enum(name: str, *values: str) -> sa.Enum:
    return sa.Enum(*values, name=name, native_enum=False, create_constraint=True, length=16)


def upgrade() -> None:
    op.create_table(
        "scored_media",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("request_id", sa.String(length=255), nullable=False),
        sa.Column(
            "state",
            _state_enum(
                "scoring_state",
                "rejected",
                "submitting",
                "polling",
                "awaiting_tags",
                "tagging",
                "scored",
                "unsupported",
                "failed",
                "needs_attention",
                "timed_out",
            ),
            nullable=False,
        ),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("media_id", sa.String(length=255), nullable=True),
        sa.Column("url", sa.Text(), nullable=True),
        sa.Column("version", sa.String(length=255), nullable=True),
        sa.Column(
            "channels", postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'[]'::jsonb"), nullable=False
        ),
        sa.Column("workspace_id", sa.BigInteger(), nullable=True),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("callback", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column(
            "callback_status",
            _state_enum("callback_status", "none", "pending", "sent"),
            server_default="none",
            nullable=False,
        ),
        sa.Column("callback_sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("round_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("rescore_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("tag_attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("tagging_job_id", sa.UUID(), nullable=True),
        sa.Column("flagged_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("next_poll_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("poll_token", sa.UUID(), nullable=True),
        sa.Column("poll_dispatched", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("deadline_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "state = 'rejected' OR (media_id IS NOT NULL AND url IS NOT NULL)",
            name=op.f("ck_scored_media_identified"),
        ),
        sa.ForeignKeyConstraint(
            ["tagging_job_id"], ["jobs.id"], name=op.f("fk_scored_media_tagging_job_id_jobs"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scored_media")),
        sa.UniqueConstraint("request_id", name=op.f("uq_scored_media_request_id")),
    )
    op.create_index("ix_scored_media_due", "scored_media", ["next_poll_at"], postgresql_where=SWEPT)
    op.create_index("ix_scored_media_awaiting_tags", "scored_media", ["flagged_at"], postgresql_where=AWAITING_TAGS)
    op.create_index("ix_scored_media_tagging", "scored_media", ["tagging_job_id"], postgresql_where=TAGGING)
    op.create_index("ix_scored_media_callback_owed", "scored_media", ["ended_at"], postgresql_where=CALLBACK_OWED)
    op.create_index("ix_scored_media_media_id", "scored_media", ["media_id"])
    op.create_index("ix_scored_media_state_created_at", "scored_media", ["state", "created_at"])

    op.create_table(
        "scored_media_tagging_jobs",
        sa.Column("scored_media_id", sa.UUID(), nullable=False),
        sa.Column("job_id", sa.UUID(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_scored_media_tagging_jobs_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["scored_media_id"],
            ["scored_media.id"],
            name=op.f("fk_scored_media_tagging_jobs_scored_media_id_scored_media"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("scored_media_id", "job_id", name=op.f("pk_scored_media_tagging_jobs")),
    )
    op.create_index("ix_scored_media_tagging_jobs_job_id", "scored_media_tagging_jobs", ["job_id"])

    op.create_table(
        "scoring_rounds",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("scored_media_id", sa.UUID(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("version", sa.String(length=255), nullable=True),
        sa.Column("reason", sa.String(length=64), nullable=False),
        sa.Column("tagging_job_id", sa.UUID(), nullable=True),
        sa.Column(
            "status",
            _state_enum("round_status", "submitting", "scoring", "complete", "unsupported", "failed", "timed_out"),
            nullable=False,
        ),
        sa.Column("vidmob_status", sa.String(length=16), nullable=True),
        sa.Column("vidmob_unique_id", sa.String(length=255), nullable=True),
        sa.Column("conflict", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("submit_attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("poll_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("error_polls", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("fetch_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=True),
        sa.Column(
            "no_data_codes",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("scored_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["scored_media_id"],
            ["scored_media.id"],
            name=op.f("fk_scoring_rounds_scored_media_id_scored_media"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tagging_job_id"], ["jobs.id"], name=op.f("fk_scoring_rounds_tagging_job_id_jobs"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scoring_rounds")),
        sa.UniqueConstraint("scored_media_id", "number", name=op.f("uq_scoring_rounds_scored_media_id_number")),
    )

    op.create_table(
        "scoring_results",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("round_id", sa.BigInteger(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(length=64), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("rule", sa.Text(), nullable=True),
        sa.Column("result", sa.String(length=64), nullable=False),
        sa.Column("weight", sa.Double(), nullable=True),
        sa.ForeignKeyConstraint(
            ["round_id"],
            ["scoring_rounds.id"],
            name=op.f("fk_scoring_results_round_id_scoring_rounds"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scoring_results")),
        sa.UniqueConstraint("round_id", "position", name=op.f("uq_scoring_results_round_id_position")),
    )

    op.create_table(
        "scoring_summaries",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("round_id", sa.BigInteger(), nullable=False),
        sa.Column("channel", sa.String(length=64), nullable=False),
        sa.Column("adherence_percent", sa.Double(), nullable=True),
        sa.Column("pass_count", sa.Integer(), nullable=False),
        sa.Column("fail_count", sa.Integer(), nullable=False),
        sa.Column("applicable_count", sa.Integer(), nullable=False),
        sa.Column("not_applicable_count", sa.Integer(), nullable=False),
        sa.Column("not_available_count", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["round_id"],
            ["scoring_rounds.id"],
            name=op.f("fk_scoring_summaries_round_id_scoring_rounds"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scoring_summaries")),
        sa.UniqueConstraint("round_id", "channel", name=op.f("uq_scoring_summaries_round_id_channel")),
    )


def downgrade() -> None:
    op.drop_table("scoring_summaries")
    op.drop_table("scoring_results")
    op.drop_table("scoring_rounds")
    op.drop_index("ix_scored_media_tagging_jobs_job_id", table_name="scored_media_tagging_jobs")
    op.drop_table("scored_media_tagging_jobs")
    op.drop_index("ix_scored_media_state_created_at", table_name="scored_media")
    op.drop_index("ix_scored_media_media_id", table_name="scored_media")
    op.drop_index("ix_scored_media_callback_owed", table_name="scored_media", postgresql_where=CALLBACK_OWED)
    op.drop_index("ix_scored_media_tagging", table_name="scored_media", postgresql_where=TAGGING)
    op.drop_index("ix_scored_media_awaiting_tags", table_name="scored_media", postgresql_where=AWAITING_TAGS)
    op.drop_index("ix_scored_media_due", table_name="scored_media", postgresql_where=SWEPT)
    op.drop_table("scored_media")
