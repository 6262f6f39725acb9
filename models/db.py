"""Engine and session factory: one engine per process, created lazily after fork."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import parse_qsl, urlencode, urlsplit

from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session, sessionmaker

from config import get_settings


class DatabaseNotConfigured(RuntimeError):
    pass


def sqlalchemy_url(url: str) -> str:
    """Accept the URLs people write (postgres://, postgresql://) and pin psycopg 3.

    libpq's multi-host form (``postgresql://user@h1:5432,h2:5432/db?target_session_attrs=read-write``,
    a primary and its replicas: each new connection goes to whichever host accepts writes) is
    rewritten to the form SQLAlchemy parses, one ``host=h:port`` query parameter per host, which its
    psycopg dialect hands back to libpq as the same host list."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            url = "postgresql+psycopg://" + url[len(prefix) :]
            break
    else:
        return url
    parts = urlsplit(url)
    userinfo, _, hostlist = parts.netloc.rpartition("@")
    if "," not in hostlist:
        return url
    hosts = [("host", host) for host in hostlist.split(",")]
    query = urlencode(hosts + parse_qsl(parts.query, keep_blank_values=True), safe=":")
    netloc = f"{userinfo}@" if userinfo else ""
    fragment = f"#{parts.fragment}" if parts.fragment else ""
    return f"{parts.scheme}://{netloc}{parts.path or '/'}?{query}{fragment}"


def libpq_url(url: str) -> str:
    """The URL as libpq reads it (psycopg.connect, psql): ``postgresql://``, multi-host as written."""
    return re.sub(r"^postgres(ql)?(\+\w+)?://", "postgresql://", url)


def database_url() -> str:
    url = get_settings().database_url
    if not url:
        raise DatabaseNotConfigured(
            "APERTURE_DATABASE_URL is not set. Set it, or run through `aperture up`/`aperture demo`, "
            "which start an embedded PostgreSQL and set it for the processes they launch."
        )
    return sqlalchemy_url(url)


_engine: Engine | None = None
_sessions: sessionmaker[Session] | None = None
_engine_pid: int | None = None


def get_engine() -> Engine:
    """The process's engine. After a fork (Celery prefork children), the inherited
    pool is dropped without closing its sockets, which belong to the parent."""
    global _engine, _sessions, _engine_pid
    if _engine is None or _engine_pid != os.getpid():
        if _engine is not None:
            _engine.dispose(close=False)
        settings = get_settings()
        # A statement stuck behind a lock or on an overloaded server fails (and its task is
        # retried) instead of holding a worker; so does a transaction left idle.
        options = (
            f"-c statement_timeout={int(settings.db_statement_timeout_s * 1000)} "
            f"-c lock_timeout={int(settings.db_lock_timeout_s * 1000)} "
            f"-c idle_in_transaction_session_timeout={int(settings.db_statement_timeout_s * 2000)}"
        )
        _engine = create_engine(
            database_url(),
            # No ping before every checkout (a round trip per transaction, the most frequent thing
            # a worker does): after a PostgreSQL restart the first statement on a dead connection
            # fails, SQLAlchemy drops the whole pool, and the task is retried (tasks/base.py).
            pool_pre_ping=False,
            # One connection per thread of a threads pool; a prefork child runs one task at a time.
            pool_size=settings.db_pool_size,
            max_overflow=4,
            pool_timeout=10,
            connect_args={
                "application_name": "aperture",
                # Below the soft time limit too, for the same reason (a connect to a host that drops packets).
                "connect_timeout": int(max(1, min(10.0, settings.task_soft_time_limit_s / 2))),
                "options": options,
                # A connection whose packets are dropped (a network partition; a failed-over address that
                # no longer answers) is a connection error, retried as one, before the task's soft time
                # limit: a step hung on it until then ended as SoftTimeLimitExceeded, which is not retried,
                # and a request not yet stored was lost with its message (chaos scenario j, 60 s from
                # PostgreSQL). Unacknowledged data for half the soft limit (at most 30 s), or an idle
                # connection whose peer stops answering keepalives, fails it.
                "tcp_user_timeout": int(min(30.0, settings.task_soft_time_limit_s / 2) * 1000),
                "keepalives": 1,
                "keepalives_idle": max(1, int(settings.task_soft_time_limit_s / 5)),
                "keepalives_interval": 1,
                "keepalives_count": 2,
            },
        )
        _sessions = sessionmaker(bind=_engine, expire_on_commit=False)
        _engine_pid = os.getpid()
    return _engine


@contextmanager
def session_scope() -> Iterator[Session]:
    """One transaction: commit on success, roll back on any error. Callers own it;
    services take the session and never commit."""
    get_engine()
    assert _sessions is not None
    session = _sessions()
    try:
        with session.begin():
            yield session
    finally:
        session.close()


def reset_engine() -> None:
    """Forget the engine (after the settings changed, e.g. in the CLI)."""
    global _engine, _sessions, _engine_pid
    if _engine is not None and _engine_pid == os.getpid():
        _engine.dispose()
    _engine = _sessions = _engine_pid = None
