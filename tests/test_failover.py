"""APERTURE_DATABASE_URL naming a primary and its replica (libpq's multi-host form): what SQLAlchemy
and psycopg make of it, and the process's engine carrying on when the primary dies and the replica is
promoted (the chaos suite's scenario i does the same under the real workers and dispatcher)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from chaos.failover import ReplicatedPostgres
from cli.preflight import check_database
from models.db import get_engine, libpq_url, reset_engine, sqlalchemy_url

MULTI = "postgresql://app:s3cret@db-a:5432,db-b:6432/aperture?target_session_attrs=read-write"


def test_a_multi_host_url_becomes_the_host_list_sqlalchemy_hands_to_libpq():
    url = make_url(sqlalchemy_url(MULTI))
    assert url.drivername == "postgresql+psycopg"
    assert url.database == "aperture"
    assert url.query["host"] == ("db-a:5432", "db-b:6432")
    assert url.query["target_session_attrs"] == "read-write"
    from sqlalchemy import create_engine

    _args, kwargs = create_engine(url).dialect.create_connect_args(url)
    assert (kwargs["host"], kwargs["port"]) == ("db-a,db-b", "5432,6432")
    assert (kwargs["user"], kwargs["password"]) == ("app", "s3cret")
    # A URL of one host is left as it was, but for the driver.
    assert sqlalchemy_url("postgres://u@h:5432/d") == "postgresql+psycopg://u@h:5432/d"
    assert libpq_url("postgresql+psycopg://u@h1:1,h2:2/d") == "postgresql://u@h1:1,h2:2/d"


@pytest.fixture
def replicated(monkeypatch: pytest.MonkeyPatch) -> Iterator[ReplicatedPostgres]:
    from config import get_settings

    pg = ReplicatedPostgres()
    monkeypatch.setenv("APERTURE_DATABASE_URL", pg.url)
    get_settings.cache_clear()
    reset_engine()
    try:
        yield pg
    finally:
        reset_engine()
        get_settings.cache_clear()
        pg.close()


def test_the_engine_reconnects_to_the_promoted_replica_and_every_committed_row_is_there(replicated):
    check_database(replicated.url)  # the start-up check reads the same URL
    engine = get_engine()
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE accepted (n int PRIMARY KEY)"))
        for n in range(50):  # each its own synchronous commit
            conn.execute(text("INSERT INTO accepted VALUES (:n)"), {"n": n})
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO accepted VALUES (50)"))
    assert replicated.replica is not None
    promoted = replicated.replica.port

    replicated.fail_over()

    # The pooled connection went with the primary: the first statement on it fails as a connection
    # error (a task retries it: tasks/base.py) and SQLAlchemy drops the pool ...
    with pytest.raises(OperationalError) as failed, engine.begin() as conn:
        conn.execute(text("SELECT 1"))
    assert failed.value.connection_invalidated
    # ... and the next connection goes to the host that now accepts writes, no restart.
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO accepted VALUES (51)"))
        assert conn.execute(text("SELECT inet_server_port()")).scalar() == promoted
        assert conn.execute(text("SELECT count(*) FROM accepted")).scalar() == 52


def test_a_url_whose_every_host_is_down_is_one_line_at_start_up():
    from chaos.harness import free_port
    from cli.preflight import ConfigurationError

    url = f"postgresql://root@127.0.0.1:{free_port()},127.0.0.1:{free_port()}/test?target_session_attrs=read-write"
    with pytest.raises(ConfigurationError) as refused:
        check_database(url)
    assert refused.value.message.startswith("cannot use PostgreSQL at postgresql://root@/test?host=127.0.0.1")
    assert "\n" not in refused.value.message
