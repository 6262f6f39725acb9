"""durable engine: one set of lifecycle columns, callbacks owed only when asked, attempts with an owner

Revision ID: 0003
Revises: 0002

Reviewed by hand:
- ``generation`` on jobs and scored_media (NOT NULL DEFAULT 0: a catalog-only change on
  PostgreSQL 11+, no rewrite). An operator retry increments it; the callback of a retried
  row gets its own task id.
- Repair: a row sent without a callback stored JSON ``null`` instead of SQL NULL, so its end
  marked a callback owed that nobody could send (the sweeper then re-selected those rows for
  ever). JSON nulls become SQL NULL, and their ``pending`` callbacks become ``none``. A CHECK
  keeps ``callback`` an object or NULL from now on; it is added NOT VALID and validated
  after, so the validation scan takes no lock that blocks writers.
- ``api_attempts.scored_media_id``: Scoring API attempts get their owner. Attempts stored
  before this revision keep NULL (which media they belonged to was never recorded).
  The CHECK allows at most one owner per attempt.
Create Date: 2026-11-28 20:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

DURABLE_TABLES = ("jobs", "scored_media")


def upgrade() -> None:
    for table in DURABLE_TABLES:
        op.add_column(table, sa.Column("generation", sa.Integer(), server_default=sa.text("0"), nullable=False))
        # Table names from the constant above, never from input.
        op.execute(f"UPDATE {table} SET callback = NULL WHERE jsonb_typeof(callback) = 'null'")  # noqa: S608
        op.execute(
            f"UPDATE {table} SET callback_status = 'none' "  # noqa: S608
            "WHERE callback IS NULL AND callback_status = 'pending'"
        )
        op.execute(
            f"ALTER TABLE {table} ADD CONSTRAINT ck_{table}_callback_object "
            "CHECK (callback IS NULL OR jsonb_typeof(callback) = 'object') NOT VALID"
        )
        op.execute(f"ALTER TABLE {table} VALIDATE CONSTRAINT ck_{table}_callback_object")

    op.add_column("api_attempts", sa.Column("scored_media_id", sa.UUID(), nullable=True))
    op.create_foreign_key(
        op.f("fk_api_attempts_scored_media_id_scored_media"),
        "api_attempts",
        "scored_media",
        ["scored_media_id"],
        ["id"],
        ondelete="CASCADE",
    )
    op.create_index("ix_api_attempts_scored_media_id_attempted_at", "api_attempts", ["scored_media_id", "attempted_at"])
    op.create_check_constraint(
        op.f("ck_api_attempts_one_owner"), "api_attempts", "num_nonnulls(job_id, scored_media_id) <= 1"
    )


def downgrade() -> None:
    op.drop_constraint(op.f("ck_api_attempts_one_owner"), "api_attempts", type_="check")
    op.drop_index("ix_api_attempts_scored_media_id_attempted_at", table_name="api_attempts")
    op.drop_constraint(op.f("fk_api_attempts_scored_media_id_scored_media"), "api_attempts", type_="foreignkey")
    op.drop_column("api_attempts", "scored_media_id")
    for table in DURABLE_TABLES:
        op.drop_constraint(op.f(f"ck_{table}_callback_object"), table, type_="check")
        op.drop_column(table, "generation")
