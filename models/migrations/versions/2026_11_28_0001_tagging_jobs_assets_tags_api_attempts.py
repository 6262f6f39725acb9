"""tagging jobs assets tags api attempts

Revision ID: 0001
Revises: (none)

Reviewed by hand: partial indexes keep the sweeper and callback queries on active rows only.
Create Date: 2026-11-28 13:00:59.945381
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("request_id", sa.String(length=255), nullable=False),
        sa.Column(
            "state",
            sa.Enum(
                "rejected",
                "submitting",
                "polling",
                "complete",
                "failed",
                "timed_out",
                name="job_state",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "client_tags",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
        sa.Column("callback", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column(
            "callback_status",
            sa.Enum(
                "none", "pending", "sent", name="callback_status", native_enum=False, create_constraint=True, length=16
            ),
            server_default="none",
            nullable=False,
        ),
        sa.Column("callback_sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("dialect", sa.String(length=16), nullable=False),
        sa.Column("vidmob_job_id", sa.String(length=255), nullable=True),
        sa.Column("next_poll_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("poll_token", sa.UUID(), nullable=True),
        sa.Column("poll_dispatched", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("poll_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("submit_attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("duplicate_risk", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("asset_count", sa.Integer(), nullable=False),
        sa.Column("deadline_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
        sa.UniqueConstraint("request_id", name=op.f("uq_jobs_request_id")),
        sa.UniqueConstraint("vidmob_job_id", name=op.f("uq_jobs_vidmob_job_id")),
    )
    op.create_index(
        "ix_jobs_callback_owed",
        "jobs",
        ["ended_at"],
        unique=False,
        postgresql_where=sa.text("callback_status = 'pending'"),
    )
    op.create_index(
        "ix_jobs_due",
        "jobs",
        ["next_poll_at"],
        unique=False,
        postgresql_where=sa.text("state IN ('submitting', 'polling')"),
    )
    op.create_index("ix_jobs_state_created_at", "jobs", ["state", "created_at"], unique=False)
    op.create_table(
        "api_attempts",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("job_id", sa.UUID(), nullable=True),
        sa.Column("task_name", sa.String(length=64), nullable=True),
        sa.Column("method", sa.String(length=8), nullable=False),
        sa.Column("endpoint", sa.String(length=255), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("latency_ms", sa.Double(), nullable=True),
        sa.Column("retry_after_s", sa.Double(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("attempted_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name=op.f("fk_api_attempts_job_id_jobs"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_attempts")),
    )
    op.create_index("ix_api_attempts_job_id_attempted_at", "api_attempts", ["job_id", "attempted_at"], unique=False)
    op.create_table(
        "assets",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("job_id", sa.UUID(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("external_id", sa.String(length=255), nullable=True),
        sa.Column("tagged_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name=op.f("fk_assets_job_id_jobs"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_assets")),
        sa.UniqueConstraint("job_id", "position", name=op.f("uq_assets_job_id_position")),
    )
    op.create_index(op.f("ix_assets_url"), "assets", ["url"], unique=False)
    op.create_table(
        "tags",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("asset_id", sa.BigInteger(), nullable=False),
        sa.Column("category", sa.String(length=64), nullable=False),
        sa.Column("label", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["asset_id"], ["assets.id"], name=op.f("fk_tags_asset_id_assets"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tags")),
        sa.UniqueConstraint("asset_id", "category", "label", name=op.f("uq_tags_asset_id_category_label")),
    )


def downgrade() -> None:
    op.drop_table("tags")
    op.drop_index(op.f("ix_assets_url"), table_name="assets")
    op.drop_table("assets")
    op.drop_index("ix_api_attempts_job_id_attempted_at", table_name="api_attempts")
    op.drop_table("api_attempts")
    op.drop_index("ix_jobs_state_created_at", table_name="jobs")
    op.drop_index("ix_jobs_due", table_name="jobs", postgresql_where=sa.text("state IN ('submitting', 'polling')"))
    op.drop_index("ix_jobs_callback_owed", table_name="jobs", postgresql_where=sa.text("callback_status = 'pending'"))
    op.drop_table("jobs")
