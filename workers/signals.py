"""Worker process hooks."""

from __future__ import annotations

from celery.signals import worker_process_init

from models.db import get_engine


@worker_process_init.connect
def _fresh_pool_after_fork(**_: object) -> None:
    # Never use a connection pool across fork (SQLAlchemy pooling docs): drop the
    # inherited one without closing the parent's sockets, and start a new one.
    get_engine()
