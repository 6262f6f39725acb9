"""reuse: jobs.fresh, and assets.reused_from_asset_id (the asset whose tagging a reused asset's tags copy)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 10:00:00

Reviewed by hand:
- ``jobs.fresh`` boolean NOT NULL DEFAULT false: a constant default, so a catalog-only change too
  (PostgreSQL 11+ rewrites no row). A column rather than ``payload->'fresh'``: a large payload is
  stored truncated, and a caller's ``fresh: true`` must never be lost.
- ``assets.reused_from_asset_id`` is nullable with no default: a catalog-only change, however many
  assets there are.
- Its foreign key (ON DELETE SET NULL: deleting an original keeps its copies and their tags, which
  then read as their own) is added NOT VALID, then validated in a second statement: adding it
  takes a brief lock, the validation scans under a lock that lets workers keep writing.
- Its partial index (``WHERE reused_from_asset_id IS NOT NULL``: only reused assets) is built
  CONCURRENTLY, outside the migration's transaction, as 0004 builds its indexes; an index left
  INVALID by an interrupted build is dropped and built again. It serves the SET NULL of a delete.
- The reuse lookup itself needs no new index: it is the library's "latest tagging of a URL" probe
  on ``ix_assets_url_tagged_at_id`` (0004), bounded below by the TTL.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from models.migrate import create_index_concurrently, outside_the_transaction

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

INDEX = "ix_assets_reused_from_asset_id"
FK = "fk_assets_reused_from_asset_id_assets"


def upgrade() -> None:
    op.add_column("jobs", sa.Column("fresh", sa.Boolean(), server_default=sa.text("false"), nullable=False))
    op.add_column("assets", sa.Column("reused_from_asset_id", sa.BigInteger(), nullable=True))
    op.execute(
        f"ALTER TABLE assets ADD CONSTRAINT {FK} FOREIGN KEY (reused_from_asset_id)"
        " REFERENCES assets (id) ON DELETE SET NULL NOT VALID"
    )
    op.execute(f"ALTER TABLE assets VALIDATE CONSTRAINT {FK}")
    with outside_the_transaction():
        create_index_concurrently(INDEX, "ON assets (reused_from_asset_id) WHERE reused_from_asset_id IS NOT NULL")


def downgrade() -> None:
    op.drop_index(INDEX, table_name="assets")
    op.drop_constraint(FK, "assets", type_="foreignkey")
    op.drop_column("assets", "reused_from_asset_id")
    op.drop_column("jobs", "fresh")
