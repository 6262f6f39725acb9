"""engine columns: one meaning each (next_poll_at: when due; dispatched_at: a message is out; leased_until)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 10:00:00

Until now ``next_poll_at`` meant three things: when a row is due, the lease of the message a worker
holds (a claim set it to the end of the lease), and when the dispatcher sent a look (``poll_dispatched``
true, ``next_poll_at`` the time of the send, so that the lost-message horizon counted from it). Now:
``next_poll_at`` is only when the row must next be looked at, ``dispatched_at`` when the message carrying
its token was sent (NULL: none is out), ``leased_until`` the claim's lease. ``poll_dispatched`` goes.

Reviewed by hand, for ``jobs`` and ``scored_media`` alike:
- The two new columns are nullable with no default: catalog-only changes, however many rows.
- Backfill, on the active rows the engine looks at only (the due index's states: a few thousand,
  not the millions of ended rows): a row marked dispatched gets ``dispatched_at = next_poll_at`` (the
  time the look was sent, or due for a countdown message), so the dispatcher's lost-message horizon
  is the same as before. A row not marked dispatched keeps ``next_poll_at`` as its due time; if it was
  a lease, the row becomes due when the lease would have ended, as before (its holder's token still
  holds it, so the look sent then is the recovery it always was).
- The dispatcher's index changes predicate (parked rows only: ``dispatched_at IS NULL``) and a second
  one covers the looks sent (``dispatched_at IS NOT NULL``), by when each should have run
  (``greatest(next_poll_at, dispatched_at)``), so the lost ones are found without reading the others. Both are built
  CONCURRENTLY outside the migration's transaction, the new due index under a temporary name, then
  swapped for the old one; an index left INVALID by an interrupted build is dropped and built again.
- ``poll_dispatched`` is dropped last. The dispatcher and the workers of the previous schema read and
  write it, so this release is deployed with them stopped (no version with the old columns was ever
  released beside this one: there is no rolling upgrade across this revision to support).
- Downgrade restores the old meanings: ``poll_dispatched`` from ``dispatched_at``, and ``next_poll_at``
  from the send time or the lease, whichever applies.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from models.migrate import create_index_concurrently, outside_the_transaction

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# The states each table's dispatcher looks at (models.LOOKED_AT_JOB_STATES, LOOKED_AT_SCORING_STATES),
# written out: a migration must not change when the models do.
LOOKED_AT = {
    "jobs": "'submitting', 'polling'",
    "scored_media": "'submitting', 'polling', 'awaiting_tags'",
}


def _indexes(table: str) -> dict[str, str]:
    states = LOOKED_AT[table]
    return {
        f"ix_{table}_due_parked": f"ON {table} (next_poll_at) WHERE state IN ({states}) AND dispatched_at IS NULL",
        f"ix_{table}_dispatched": (
            f"ON {table} ((greatest(next_poll_at, dispatched_at)))"
            f" WHERE state IN ({states}) AND dispatched_at IS NOT NULL"
        ),
    }


def upgrade() -> None:
    for table, states in LOOKED_AT.items():
        op.add_column(table, sa.Column("dispatched_at", sa.DateTime(timezone=True), nullable=True))
        op.add_column(table, sa.Column("leased_until", sa.DateTime(timezone=True), nullable=True))
        # Table names and states from the constants above, never from input.
        op.execute(
            f"UPDATE {table} SET dispatched_at = next_poll_at"  # noqa: S608
            f" WHERE state IN ({states}) AND poll_dispatched AND next_poll_at IS NOT NULL"
        )
    with outside_the_transaction():
        for table in LOOKED_AT:
            for name, definition in _indexes(table).items():
                create_index_concurrently(name, definition)
            op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS ix_{table}_due")
            op.execute(f"ALTER INDEX ix_{table}_due_parked RENAME TO ix_{table}_due")
    for table in LOOKED_AT:
        op.drop_column(table, "poll_dispatched")


def downgrade() -> None:
    for table, states in LOOKED_AT.items():
        op.add_column(
            table, sa.Column("poll_dispatched", sa.Boolean(), server_default=sa.text("false"), nullable=False)
        )
        op.execute(
            f"UPDATE {table} SET poll_dispatched = true, next_poll_at = greatest(next_poll_at, dispatched_at)"  # noqa: S608
            f" WHERE state IN ({states}) AND dispatched_at IS NOT NULL"
        )
        op.execute(
            f"UPDATE {table} SET next_poll_at = leased_until"  # noqa: S608
            f" WHERE state IN ({states}) AND dispatched_at IS NULL AND leased_until > next_poll_at"
        )
        op.drop_index(f"ix_{table}_dispatched", table_name=table)
        op.drop_index(f"ix_{table}_due", table_name=table)
        op.create_index(f"ix_{table}_due", table, ["next_poll_at"], postgresql_where=sa.text(f"state IN ({states})"))
        op.drop_column(table, "leased_until")
        op.drop_column(table, "dispatched_at")
