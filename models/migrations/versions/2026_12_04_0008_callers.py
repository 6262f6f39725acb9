"""callers: who sent each request, keys scoped by caller, admission order

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 10:00:00

Every public request now has a caller (an application's name) and its idempotency key is
(request_id, caller); the same key with a different request is refused as a row of its own.

Reviewed by hand, for ``jobs`` and ``scored_media`` alike:
- ``caller`` is NOT NULL with a constant default ``'default'``: a catalog-only change in PostgreSQL 11+,
  however many rows; every existing row is the default caller's, and keeps its key.
- ``request_fingerprint``, ``key_conflict_of``, ``last_replay_at`` are nullable with no default, ``replays``
  has a constant default: catalog-only. Existing rows have no fingerprint: the same key again is a
  replay of them, as it was before.
- The key's unique index ``ux_<table>_key`` (request_id, caller), on the rows that are not refusals, and
  ``ux_<table>_key_conflicts`` (request_id, caller, request_fingerprint) on the refusals, are built
  CONCURRENTLY outside the migration's transaction before the old unique constraint on request_id goes:
  until then the old one keeps the key unique, after it the new one (every row has caller 'default').
- ``jobs.sent_assets`` (nullable: NULL on jobs submitted before; a budget counts what is sent from now on).
- ``jobs.priority`` (constant default 'interactive', with its CHECK added NOT VALID then validated, which
  takes no lock that stops writes) and ``jobs.waiting_since`` (nullable), with the partial index of the
  waiting submissions and (caller, created_at) for usage by caller, built CONCURRENTLY.
- Workers of 0007 insert with ON CONFLICT (request_id), which needs the old constraint: this release is
  deployed with them stopped.
- Downgrade keeps every row: a request_id held by several rows (other callers' keys, refusals) is
  made unique again by suffixing the later rows' ids with their caller and row id.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from models.migrate import create_index_concurrently, outside_the_transaction

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

TABLES = ("jobs", "scored_media")


def _indexes(table: str) -> dict[str, str]:
    return {
        f"ux_{table}_key": f"ON {table} (request_id, caller) WHERE key_conflict_of IS NULL",
        f"ux_{table}_key_conflicts": (
            f"ON {table} (request_id, caller, request_fingerprint) WHERE key_conflict_of IS NOT NULL"
        ),
    }


def upgrade() -> None:
    for table in TABLES:
        op.add_column(table, sa.Column("caller", sa.String(100), server_default=sa.text("'default'"), nullable=False))
        op.add_column(table, sa.Column("request_fingerprint", sa.String(64), nullable=True))
        op.add_column(table, sa.Column("key_conflict_of", sa.UUID(), nullable=True))
        op.add_column(table, sa.Column("replays", sa.Integer(), server_default=sa.text("0"), nullable=False))
        op.add_column(table, sa.Column("last_replay_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("jobs", sa.Column("priority", sa.String(16), server_default=sa.text("'interactive'"), nullable=False))
    op.add_column("jobs", sa.Column("waiting_since", sa.DateTime(timezone=True), nullable=True))
    op.add_column("jobs", sa.Column("sent_assets", sa.Integer(), nullable=True))
    op.execute("ALTER TABLE jobs ADD CONSTRAINT ck_jobs_priority CHECK (priority IN ('interactive', 'bulk')) NOT VALID")
    op.execute("ALTER TABLE jobs VALIDATE CONSTRAINT ck_jobs_priority")
    with outside_the_transaction():
        for table in TABLES:
            for name, definition in _indexes(table).items():
                create_index_concurrently(name, definition, unique=True)
        create_index_concurrently(
            "ix_jobs_waiting", "ON jobs (waiting_since) WHERE waiting_since IS NOT NULL AND state = 'submitting'"
        )
        create_index_concurrently("ix_jobs_caller_created_at", "ON jobs (caller, created_at)")
    for table in TABLES:
        op.drop_constraint(f"uq_{table}_request_id", table, type_="unique")


def downgrade() -> None:
    for table in TABLES:
        # Table names from the constant above, never from input.
        op.execute(
            f"UPDATE {table} t SET request_id = left(t.request_id, 150) || '~' || t.caller || '~' || t.id"  # noqa: S608
            f" WHERE EXISTS (SELECT 1 FROM {table} o WHERE o.request_id = t.request_id"
            " AND (o.created_at, o.id) < (t.created_at, t.id))"
        )
        op.create_unique_constraint(f"uq_{table}_request_id", table, ["request_id"])
        for name in _indexes(table):
            op.drop_index(name, table_name=table)
    op.drop_index("ix_jobs_caller_created_at", table_name="jobs")
    op.drop_index("ix_jobs_waiting", table_name="jobs")
    op.execute("ALTER TABLE jobs DROP CONSTRAINT ck_jobs_priority")
    op.drop_column("jobs", "sent_assets")
    op.drop_column("jobs", "waiting_since")
    op.drop_column("jobs", "priority")
    for table in TABLES:
        for column in ("last_replay_at", "replays", "key_conflict_of", "request_fingerprint", "caller"):
            op.drop_column(table, column)
