"""Alembic environment: migrations run with lock and statement timeouts, so a
migration that waits on a busy table fails fast instead of queueing every query
behind its lock."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, text

import models
from models.db import database_url

config = context.config
target_metadata = models.Base.metadata


def run_migrations_offline() -> None:
    context.configure(url=database_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = create_engine(database_url())
    with engine.connect() as connection:
        connection.execute(text("SET lock_timeout = '4s'"))
        connection.execute(text("SET statement_timeout = '60s'"))
        # Several pods may run `aperture db upgrade` at once: one at a time.
        connection.execute(text("SELECT pg_advisory_lock(727274)"))
        connection.commit()
        try:
            context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)
            with context.begin_transaction():
                context.run_migrations()
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(727274)"))
            connection.commit()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
