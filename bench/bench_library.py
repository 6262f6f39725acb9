"""How fast does the library answer with a million assets and ten million tags?

Builds a scratch database with the real migrations and fills it with set-based SQL: ``--assets``
tagged assets (default 1,000,000) in jobs of 100 (and 200 in two jobs still polling), with
``--tags-per-asset`` tags each (default 10, so 10,000,000 tags), drawn zipf-like from ~330 labels
over 6 categories (the most frequent label of each slot on ~20% of assets, the rarest on ~0.3%);
40 collections of zipf-like sizes, 10% of jobs from the scoring loop (request id
``aperture-scoring-tags:...``, no collection), 10% with no collection, client tags asked for by a
third of the jobs and found on half of their assets, and the last 5% of the taggings re-tagging
URLs tagged before (so the library holds ~950,000 URLs). Then VACUUM ANALYZE, and the library's
counts rebuilt.

It times the library's own service functions (services/library/), each call in its own
transaction, ``--runs`` times after one warm-up call: p50 and p95. Then the baseline: the same
calls with migration 0004's indexes dropped and its maintained counts switched off (so every
count is made from the rows), inside a transaction that is rolled back. Prints both and the
ratio of the medians.

    python bench/bench_library.py [--assets 1000000] [--tags-per-asset 10] [--runs 20] [--explain]
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import psycopg

# What the baseline takes away: migration 0004's indexes (the tables keep those of 0001-0003).
INDEXES = ("ix_tags_label_category_asset_id", "ix_assets_url_tagged_at_id", "ix_assets_tagged_at", "ix_jobs_collection")
CLIENT_LABELS = "ARRAY['product-forward', 'lifestyle', 'humor', 'ugc', 'seasonal', 'premium', 'eco', 'family']"
CATEGORIES = "ARRAY['visual', 'people', 'brand', 'audio', 'text']"
LABELS_PER_SLOT = 32
START = "timestamptz '2026-01-01 00:00+00'"
SPAN = "interval '330 days'"

# A uniform number in [0, 1) from (asset id, slot, salt): deterministic, no volatile function.
U = "((hashint8extended(a.id * 64 + s, {salt}) & 4503599627370495)::float8 / 4503599627370496)"

FILL_JOBS = f"""
INSERT INTO jobs (id, request_id, state, payload, dialect, asset_count, deadline_at, created_at, submitted_at,
                  completed_at, ended_at, collection, client_tags)
SELECT md5('job' || j)::uuid,
       CASE WHEN j %% 10 = 0 THEN 'aperture-scoring-tags:' || md5('job' || j)::uuid ELSE 'bench-' || j END,
       CASE WHEN j > %(tagged_jobs)s THEN 'polling' ELSE 'complete' END,
       '{{}}'::jsonb, 'guide', 100, t0 + interval '400 days', t0, t0,
       CASE WHEN j <= %(tagged_jobs)s THEN t0 + interval '10 minutes' END,
       CASE WHEN j <= %(tagged_jobs)s THEN t0 + interval '10 minutes' END,
       CASE WHEN j %% 10 IN (0, 5) THEN NULL
            ELSE 'campaign-' || lpad(floor(exp(((hashint8extended(j, 7) & 4503599627370495)::float8
                                                 / 4503599627370496) * ln(41)))::int::text, 2, '0') END,
       CASE WHEN j %% 3 = 0 AND j %% 10 <> 0
            THEN (SELECT jsonb_agg(jsonb_build_object('label', l)) FROM unnest({CLIENT_LABELS}) AS l)
            ELSE '[]'::jsonb END
FROM generate_series(1, %(jobs)s) AS j,
     LATERAL (SELECT {START} + (j::float8 / %(jobs)s) * {SPAN} AS t0) AS t
"""  # noqa: S608 (constants of this module only)

# Asset g is in job (g - 1) / 100 + 1; the last 5% of the tagged ones re-tag URLs of the first 95%
# (later: they are the latest tagging of those URLs). 200 more, in two jobs still polling: not tagged.
FILL_ASSETS = f"""
INSERT INTO assets (job_id, position, url, external_id, tagged_at, created_at)
SELECT md5('job' || x.j)::uuid, (g - 1) %% 100, 'https://cdn.example.com/library/' || x.u || '.mp4', 'asset-' || x.u,
       CASE WHEN g <= %(tagged)s THEN {START} + (x.j::float8 / %(jobs)s) * {SPAN} + interval '10 minutes' END,
       {START} + (x.j::float8 / %(jobs)s) * {SPAN}
FROM generate_series(1, %(assets)s) AS g,
     LATERAL (SELECT (g - 1) / 100 + 1 AS j,
                     CASE WHEN g <= %(originals)s THEN g ELSE (g::bigint * 7919) %% %(originals)s + 1 END AS u) AS x
"""  # noqa: S608

# Slot s of an asset draws its label from its own 32 (zipf-like: rank r with probability ~ 1/r),
# so an asset never gets the same tag twice; the last slot is a client tag on half of the assets
# whose job asked for client tags.
FILL_TAGS = f"""
INSERT INTO tags (asset_id, category, label, created_at)
SELECT a.id, v.category, v.label, a.tagged_at
FROM assets a
JOIN jobs j ON j.id = a.job_id
CROSS JOIN generate_series(1, %(tags)s) AS s
CROSS JOIN LATERAL (
    SELECT floor(exp({U.format(salt=1)} * ln({LABELS_PER_SLOT + 1})))::int AS rank,
           {U.format(salt=2)} AS coin,
           floor(exp({U.format(salt=3)} * ln(9)))::int AS client_rank
) AS r
CROSS JOIN LATERAL (
    SELECT s = %(tags)s AND j.client_tags <> '[]'::jsonb AND r.coin < 0.5 AS is_client
) AS c
CROSS JOIN LATERAL (
    SELECT CASE WHEN c.is_client THEN 'client' ELSE ({CATEGORIES})[(s - 1) %% 5 + 1] END AS category,
           CASE WHEN c.is_client THEN ({CLIENT_LABELS})[r.client_rank]
                ELSE ({CATEGORIES})[(s - 1) %% 5 + 1] || ' ' || s || '-' || r.rank END AS label
) AS v
WHERE a.tagged_at IS NOT NULL
"""  # noqa: S608


@dataclass
class Case:
    name: str
    call: Callable[..., Any]  # (session) or, with a setup, (session, what the setup returned)
    size: Callable[[Any], int]  # what the answer held, for the table
    setup: Callable[[Any], Any] | None = None  # run in the same transaction, not timed
    is_read: bool = True  # the target (p95 < 100 ms) is for the questions


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--assets", type=int, default=1_000_000)
    parser.add_argument("--tags-per-asset", type=int, default=10)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--baseline-runs", type=int, default=None, help="default: --runs")
    parser.add_argument("--explain", action="store_true", help="print EXPLAIN (ANALYZE, BUFFERS) of each query")
    parser.add_argument("--keep", action="store_true", help="keep the database (to profile it), print its URL")
    parser.add_argument(
        "--admin-url",
        default=os.environ.get("APERTURE_TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
    )
    args = parser.parse_args()

    name = f"aperture_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = urlsplit(args.admin_url)._replace(path=f"/{name}").geturl()
    print(f"database {name}", flush=True)
    os.environ["APERTURE_DATABASE_URL"] = url
    os.environ["APERTURE_DB_STATEMENT_TIMEOUT_S"] = "900"  # the baseline's counts take seconds
    try:
        fill(url, args.assets, args.tags_per_asset)
        run(args.runs, args.baseline_runs or args.runs, args.explain)
    finally:
        from models.db import reset_engine

        reset_engine()
        if args.keep:
            print(f"kept: {url}")
        else:
            with psycopg.connect(args.admin_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def fill(url: str, assets: int, tags: int) -> None:
    from config import get_settings
    from models.migrate import upgrade

    get_settings.cache_clear()
    upgrade()
    params = {
        "tagged": assets,
        "assets": assets + 200,
        "tagged_jobs": -(-assets // 100),
        "jobs": -(-(assets + 200) // 100),
        "originals": max(1, int(assets * 0.95)),
        "tags": tags,
    }
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET statement_timeout = 0")
        conn.execute("SET session_replication_role = replica")  # bulk load: no FK checks, no triggers
        for what, sql in (("jobs", FILL_JOBS), ("assets", FILL_ASSETS), ("tags", FILL_TAGS)):
            started = time.perf_counter()
            n = conn.execute(sql, params).rowcount
            print(f"filled {n:,} {what} in {time.perf_counter() - started:.1f} s", flush=True)
        conn.execute("SET session_replication_role = origin")
        started = time.perf_counter()
        conn.execute("VACUUM ANALYZE")
        print(f"VACUUM ANALYZE in {time.perf_counter() - started:.1f} s", flush=True)
        started = time.perf_counter()
        conn.execute("SELECT library_rebuild_counts()")
        conn.execute("VACUUM ANALYZE library_tag_counts, library_collection_sizes")
        print(f"library_rebuild_counts() in {time.perf_counter() - started:.1f} s", flush=True)
        sizes = conn.execute(
            "SELECT pg_size_pretty(pg_total_relation_size('tags')), pg_size_pretty(pg_total_relation_size('assets'))"
        ).fetchone()
        assert sizes is not None
        print(f"tags {sizes[0]} with indexes, assets {sizes[1]}", flush=True)


def cases(session: Any) -> list[Case]:
    """The questions timed, with parameters read from the data (so any --assets works)."""
    from sqlalchemy import func, select

    from clients.tags import AssetAnnotation
    from clients.tags import Tag as ApiTag
    from config import get_settings
    from services import library
    from services.durable.intake import accept
    from services.library import AssetQuery, Scope, TagMatch
    from services.library.views import library_assets
    from services.tagging.annotations import store_annotations
    from services.tagging.intake import INTAKE

    everything = library.tag_frequency(session, top=None)
    total = everything.total_assets
    common = [t for t in everything.tags if t.category != "client"][:2]
    # Two tags each on about 1% of the library, of different categories.
    around_1pct = sorted(everything.tags, key=lambda t: abs(t.share - 0.01))
    rare = [around_1pct[0], next(t for t in around_1pct if t.category != around_1pct[0].category)]
    biggest = next(c for c in library.list_collections(session) if c.collection is not None)
    median = sorted((c for c in library.list_collections(session) if c.collection), key=lambda c: c.assets)
    median_collection = median[len(median) // 2]
    last = session.execute(select(func.max(library_assets.c.tagged_at))).scalar_one()
    week = Scope(tagged_since=last - dt.timedelta(days=7), tagged_until=last + dt.timedelta(seconds=1))
    day = Scope(tagged_since=last - dt.timedelta(days=1), tagged_until=last + dt.timedelta(seconds=1))
    scoring = Scope(request_id_prefix="aperture-scoring-tags:")

    # A job completing: 200 assets (150 new URLs, 50 already in the library, whose counts move to
    # it), 10 tags each, accepted by the intake and stored by the annotations code, as in production.
    retagged = list(
        session.execute(select(library_assets.c.url).order_by(library_assets.c.asset_id).limit(50)).scalars()
    )
    vocabulary = [ApiTag(t.category, t.label) for t in everything.tags]

    def accept_a_job(s: Any) -> tuple[Any, tuple[Any, ...], dt.datetime]:
        now = dt.datetime.now(dt.UTC)
        urls = [f"https://cdn.example.com/new/{uuid.uuid4()}.mp4" for _ in range(150)] + retagged
        payload = {"assets": [{"url": u} for u in urls], "collection": biggest.collection}
        accepted = accept(s, INTAKE, payload, task_id=str(uuid.uuid4()), settings=get_settings(), now=now)
        annotations = tuple(
            AssetAnnotation(u, None, tuple(vocabulary[(i * 7 + k * 31) % len(vocabulary)] for k in range(10)))
            for i, u in enumerate(urls)
        )
        return accepted.row_id, annotations, now

    def store_its_tags(s: Any, job: tuple[Any, tuple[Any, ...], dt.datetime]) -> int:
        return store_annotations(s, *job)

    def two(tags: list[Any]) -> AssetQuery:
        return AssetQuery(all_of=tuple(TagMatch(t.category, t.label) for t in tags))

    def pct(t: Any) -> str:
        return f"{t.label} {t.share:.0%}"

    print(
        f"library: {total:,} assets; common pair {pct(common[0])} + {pct(common[1])};"
        f" rare pair {pct(rare[0])} + {pct(rare[1])}; largest collection {biggest.collection}"
        f" ({biggest.assets:,} assets), median {median_collection.collection} ({median_collection.assets:,})"
    )
    return [
        Case("search 2 tags, common (page of 50)", lambda s: library.search_assets(s, two(common), limit=50), len),
        Case("search 2 tags, rare (page of 50)", lambda s: library.search_assets(s, two(rare), limit=50), len),
        Case("count 2 tags, common", lambda s: library.count_assets(s, two(common)), int),
        Case("top 50 tags, whole library", lambda s: library.tag_frequency(s, top=50), lambda f: f.total_assets),
        Case(
            f"frequency, largest collection ({biggest.collection})",
            lambda s: library.tag_frequency(s, Scope(collection=biggest.collection), top=50),
            lambda f: f.total_assets,
        ),
        Case(
            f"frequency, median collection ({median_collection.collection})",
            lambda s: library.tag_frequency(s, Scope(collection=median_collection.collection), top=50),
            lambda f: f.total_assets,
        ),
        Case(
            "frequency, last day (date range)",
            lambda s: library.tag_frequency(s, day, top=50),
            lambda f: f.total_assets,
        ),
        Case(
            "frequency, last 7 days (date range)",
            lambda s: library.tag_frequency(s, week, top=50),
            lambda f: f.total_assets,
        ),
        Case(
            "frequency, scoring jobs (prefix)",
            lambda s: library.tag_frequency(s, scoring, top=50),
            lambda f: f.total_assets,
        ),
        Case("write: a 200-asset job's tags stored", store_its_tags, int, setup=accept_a_job, is_read=False),
    ]


def timed(case: Case, runs: int, prepare: Callable[[Any], None] | None = None) -> tuple[float, float, int]:
    """(p50 ms, p95 ms, answer size); each call in a transaction of its own, rolled back. One call
    first, not counted: it reads the pages the question needs into memory (right after the fill,
    or after another question evicted them), as a question asked often finds them there."""
    from sqlalchemy.orm import Session

    from models.db import get_engine

    samples: list[float] = []
    size = 0
    for _ in range(runs + 1):
        with get_engine().connect() as conn:
            trans = conn.begin()
            session = Session(bind=conn)
            if prepare:
                prepare(session)
            args = (case.setup(session),) if case.setup else ()
            started = time.perf_counter()
            answer = case.call(session, *args)
            samples.append((time.perf_counter() - started) * 1000)
            size = case.size(answer)
            trans.rollback()
    samples = samples[1:]  # the warm-up
    return statistics.median(samples), percentile(samples, 95), size


def percentile(samples: list[float], p: int) -> float:
    """Nearest rank: the smallest sample that p% of the samples do not exceed."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def without_indexes(session: Any) -> None:
    """The baseline: 0004's indexes dropped, its counts switched off (rolled back after)."""
    from sqlalchemy import text

    for index in INDEXES:
        session.execute(text(f"DROP INDEX {index}"))
    session.execute(text("UPDATE library_counts_state SET valid = false"))


def explain(case: Case) -> None:
    """EXPLAIN (ANALYZE, BUFFERS) of every statement the call runs."""
    from sqlalchemy import event
    from sqlalchemy.orm import Session

    from models.db import get_engine

    statements: list[tuple[str, Any]] = []

    def capture(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith(("SELECT", "WITH")) and "library_counts_state" not in statement:
            statements.append((statement, parameters))

    engine = get_engine()
    with engine.connect() as conn:
        session = Session(bind=conn)
        event.listen(engine, "before_cursor_execute", capture)
        try:
            case.call(session)
        finally:
            event.remove(engine, "before_cursor_execute", capture)
        print(f"\n--- {case.name}")
        for statement, parameters in statements:
            plan = conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters).scalars().all()
            print("\n".join(plan))


def run(runs: int, baseline_runs: int, show_plans: bool) -> None:
    from models.db import session_scope

    with session_scope() as session:
        questions = cases(session)
    results = []
    for case in questions:
        indexed = timed(case, runs)
        print(f"  {case.name}: p50 {indexed[0]:.1f} ms, p95 {indexed[1]:.1f} ms", flush=True)
        results.append((case, indexed))
    if show_plans:
        for case in questions:
            if case.is_read:
                explain(case)
    print("\nbaseline (0004's indexes dropped, counts made from the rows):", flush=True)
    table = []
    for case, indexed in results:
        baseline = timed(case, baseline_runs, prepare=without_indexes)
        print(f"  {case.name}: p50 {baseline[0]:.1f} ms, p95 {baseline[1]:.1f} ms", flush=True)
        table.append((case, indexed, baseline))

    print(f"\nlibrary queries, {runs} runs indexed / {baseline_runs} baseline (ms; target: p95 < 100 ms):")
    header = (
        f"  {'query':<46} {'answer':>9} {'p50':>9} {'p95':>9} {'base p50':>10} {'base p95':>10} {'ratio':>8}  target"
    )
    print(header)
    for case, (p50, p95, size), (b50, b95, _) in table:
        ok = ("met" if p95 < 100 else "MISSED") if case.is_read else "n/a"
        print(
            f"  {case.name:<46} {size:>9,} {p50:>9.1f} {p95:>9.1f} {b50:>10.1f} {b95:>10.1f} {b50 / p50:>7.1f}x  {ok}"
        )


if __name__ == "__main__":
    main()
