"""waiting turns: each caller's waiting submissions in the order free slots go to them

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05 10:00:00

Fair admission reads each caller's first few waiting submissions, in turn order (interactive before bulk,
then first come first served), under the open-jobs cap's lock at every job's end: ``ix_jobs_waiting_turns``
gives them in that order, a few index entries however many thousands wait (before, every waiting row was
read and sorted). Built CONCURRENTLY outside the migration's transaction: no lock that stops writes.
Downgrade drops it; no row changes either way.
"""

from __future__ import annotations

from alembic import op

from models.migrate import create_index_concurrently, outside_the_transaction

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with outside_the_transaction():
        create_index_concurrently(
            "ix_jobs_waiting_turns",
            "ON jobs (caller, (priority = 'bulk'), waiting_since, id)"
            " WHERE waiting_since IS NOT NULL AND state = 'submitting'",
        )


def downgrade() -> None:
    op.drop_index("ix_jobs_waiting_turns", table_name="jobs")
