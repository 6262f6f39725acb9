"""How cheap is the sweeper's query with a million jobs?

Builds a scratch database with the real migrations, fills it with N jobs (by default
1,000,000: 98% finished, 2% active, a few hundred of those due), then times the
sweeper's own query (services.durable.sweeper.due_looks, rolled back each run) with the
partial index ix_jobs_due, and side by side the same query with index scans turned off
as the baseline. Prints both and the ratio.

    python bench/bench_sweeper.py [--jobs 1000000] [--admin-url postgresql://postgres@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import one_row, scratch_database

FILL = """
INSERT INTO jobs (request_id, state, payload, dialect, asset_count, deadline_at, next_poll_at,
                  poll_token, dispatched_at, created_at, ended_at)
SELECT 'bench-' || g,
       CASE WHEN g %% 50 = 0 THEN (CASE WHEN g %% 100 = 0 THEN 'polling' ELSE 'submitting' END)
            ELSE (CASE WHEN g %% 7 = 0 THEN 'failed' ELSE 'complete' END) END,
       '{}'::jsonb, 'guide', 1, now() + interval '1 day',
       CASE WHEN g %% 50 = 0 THEN now() + ((g %% 3600) - 60) * interval '1 second' END,
       gen_random_uuid(), CASE WHEN g %% 100 = 0 THEN now() - (g %% 3600) * interval '1 second' END,
       now() - (g %% 86400) * interval '1 second',
       CASE WHEN g %% 50 <> 0 THEN now() END
FROM generate_series(1, %(n)s) AS g
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument(
        "--admin-url",
        default=os.environ.get("APERTURE_TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
    )
    args = parser.parse_args()

    with scratch_database(args.admin_url) as url:
        os.environ["APERTURE_DATABASE_URL"] = url
        run(url, args.jobs, args.runs)


def run(url: str, jobs: int, runs: int) -> None:
    from config import get_settings
    from models.db import get_engine
    from models.migrate import upgrade
    from services import tagging
    from services.durable.schedule import utcnow
    from services.durable.sweeper import due_looks

    get_settings.cache_clear()
    upgrade()
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(FILL, {"n": jobs})
        conn.execute("VACUUM ANALYZE jobs")
        active = one_row(conn, "SELECT count(*) FROM jobs WHERE state IN ('submitting', 'polling')")[0]
    print(f"filled {jobs:,} jobs ({active:,} active) in {time.perf_counter() - started:.1f} s")

    settings = get_settings()
    engine = get_engine()

    def timed(baseline: bool) -> tuple[float, int]:
        samples, found = [], 0
        for _ in range(runs):
            with engine.connect() as conn:
                trans = conn.begin()
                if baseline:
                    # Without the partial index (rolled back with the rest).
                    conn.exec_driver_sql("DROP INDEX ix_jobs_due")
                from sqlalchemy.orm import Session

                session = Session(bind=conn)
                t0 = time.perf_counter()
                found = len(
                    due_looks(
                        session, tagging.KIND, settings=settings, now=utcnow(), limit=settings.sweep_batch_size
                    ).messages
                )
                samples.append((time.perf_counter() - t0) * 1000)
                trans.rollback()  # leave the rows as they were for the next run
        return statistics.median(samples), found

    indexed_ms, found = timed(baseline=False)
    baseline_ms, _ = timed(baseline=True)
    print(f"sweeper batch (limit {settings.sweep_batch_size}, {found} due rows claimed), median of {runs}:")
    print(f"  with ix_jobs_due     {indexed_ms:8.2f} ms")
    print(f"  baseline (no index)  {baseline_ms:8.2f} ms")
    print(f"  ratio baseline/index {baseline_ms / indexed_ms:8.1f}x")


if __name__ == "__main__":
    main()
