"""Run Alembic programmatically (`aperture db upgrade`, the test fixtures), and what migrations share."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from alembic import command, op
from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("file_template", "%%(year)d_%%(month).2d_%%(day).2d_%%(rev)s_%%(slug)s")
    return cfg


def upgrade(revision: str = "head") -> None:
    command.upgrade(alembic_config(), revision)


def downgrade(revision: str) -> None:
    command.downgrade(alembic_config(), revision)


# --- For migrations: changes that let workers keep writing ------------------------------------


@contextmanager
def outside_the_transaction() -> Iterator[None]:
    """An autocommit block with no statement timeout, for CREATE INDEX CONCURRENTLY (which cannot run in
    a transaction, and may take minutes on a big table); the connection's timeout is restored after."""
    bind = op.get_bind()
    timeout = bind.execute(sa.text("SELECT current_setting('statement_timeout')")).scalar_one()
    with op.get_context().autocommit_block():
        op.execute("SET statement_timeout = 0")
        try:
            yield
        finally:
            op.execute(sa.text("SELECT set_config('statement_timeout', :timeout, false)").bindparams(timeout=timeout))


def create_index_concurrently(name: str, definition: str, *, unique: bool = False) -> None:
    """``CREATE [UNIQUE] INDEX CONCURRENTLY name definition`` (``definition``: ``ON table (...) [WHERE ...]``), inside
    ``outside_the_transaction()``. An index left INVALID by an interrupted build is dropped and built again.
    Names and definitions come from the migrations' own constants, never from input."""
    invalid = (
        op.get_bind()
        .execute(
            sa.text(
                "SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
                " WHERE c.relname = :name AND NOT i.indisvalid"
            ),
            {"name": name},
        )
        .first()
    )
    if invalid:
        op.execute(f"DROP INDEX CONCURRENTLY {name}")
    op.execute(f"CREATE {'UNIQUE ' if unique else ''}INDEX CONCURRENTLY IF NOT EXISTS {name} {definition}")
