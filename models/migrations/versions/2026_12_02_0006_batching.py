"""batching: packs of small tagging requests sent to Vidmob as one job (services/tagging/packing.py)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 10:00:00

Reviewed by hand:
- ``jobs.batch`` (NOT NULL DEFAULT true) and ``jobs.is_pack`` (NOT NULL DEFAULT false): constant
  defaults, catalog-only changes (PostgreSQL 11+ rewrites no row). ``batch`` is a column, not
  ``payload->'batch'``: a large payload is stored truncated.
- ``jobs.packed_in_job_id`` and ``jobs.pack_open_until`` are nullable with no default: catalog-only.
  The self-referencing foreign key (ON DELETE SET NULL: deleting a pack keeps its members) is added
  NOT VALID and validated in a second statement, which lets workers keep writing.
- The state CHECK gains ``packed``: the new constraint is added NOT VALID (no scan under the strong
  lock) and validated afterwards, then replaces the old one.
- Both partial indexes cover only rows in a pack (members) and packs still open (a handful): built
  CONCURRENTLY outside the migration's transaction, as 0004 and 0005 build theirs; an index left
  INVALID by an interrupted build is dropped and built again.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from models.migrate import create_index_concurrently, outside_the_transaction

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

FK = "fk_jobs_packed_in_job_id_jobs"
CHECK = "ck_jobs_job_state"
STATES = ("rejected", "submitting", "polling", "complete", "failed", "timed_out")
INDEXES = {
    "ix_jobs_packed_in_job_id": "ON jobs (packed_in_job_id) WHERE packed_in_job_id IS NOT NULL",
    "ix_jobs_open_packs": "ON jobs (dialect) WHERE pack_open_until IS NOT NULL",
}


def _state_check(states: tuple[str, ...]) -> None:
    listed = ", ".join(f"'{s}'" for s in states)
    op.execute(f"ALTER TABLE jobs DROP CONSTRAINT {CHECK}")
    op.execute(f"ALTER TABLE jobs ADD CONSTRAINT {CHECK} CHECK (state IN ({listed})) NOT VALID")
    op.execute(f"ALTER TABLE jobs VALIDATE CONSTRAINT {CHECK}")


def upgrade() -> None:
    op.add_column("jobs", sa.Column("batch", sa.Boolean(), server_default=sa.text("true"), nullable=False))
    op.add_column("jobs", sa.Column("is_pack", sa.Boolean(), server_default=sa.text("false"), nullable=False))
    op.add_column("jobs", sa.Column("packed_in_job_id", sa.UUID(), nullable=True))
    op.add_column("jobs", sa.Column("pack_open_until", sa.DateTime(timezone=True), nullable=True))
    op.execute(
        f"ALTER TABLE jobs ADD CONSTRAINT {FK} FOREIGN KEY (packed_in_job_id)"
        " REFERENCES jobs (id) ON DELETE SET NULL NOT VALID"
    )
    op.execute(f"ALTER TABLE jobs VALIDATE CONSTRAINT {FK}")
    _state_check((*STATES, "packed"))
    with outside_the_transaction():
        for name, definition in INDEXES.items():
            create_index_concurrently(name, definition)


def downgrade() -> None:
    # A packed request goes back to waiting for its submission, alone: nothing accepted is lost.
    op.execute(
        "UPDATE jobs SET state = 'submitting', next_poll_at = now(), poll_token = gen_random_uuid(),"
        " poll_dispatched = false WHERE state = 'packed'"
    )
    _state_check(STATES)
    for name in INDEXES:
        op.drop_index(name, table_name="jobs")
    op.drop_constraint(FK, "jobs", type_="foreignkey")
    for column in ("pack_open_until", "packed_in_job_id", "is_pack", "batch"):
        op.drop_column("jobs", column)
