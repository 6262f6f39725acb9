"""Storing tags from COMPLETE answers: rows a second through the product's own code, against
PostgreSQL COPY of the same rows, side by side on the same database.

A scratch database (the real migrations, the library's count triggers included) gets ``--jobs``
jobs of ``--assets`` assets; each job's answer carries ``--tags`` tags per asset. The figure:
tag rows a second through ``services.tagging.annotations.store_annotations`` (what a poll that
finds a job COMPLETE runs: one upsert of every row, then the assets' ``tagged_at``), one job per
transaction. The baseline: the same rows with ``COPY tags (asset_id, category, label) FROM STDIN``,
one job per transaction, on a table emptied between the two (so both pay for the same indexes
and triggers). Target: at least 0.5 of COPY.

    python bench/bench_tags.py [--jobs 200] [--assets 20] [--tags 25]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any, cast

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import scratch_database

CATEGORIES = ("object", "scene", "brand", "emotion", "text", "person", "action", "color")


def answer(assets: list[tuple[int, str]], tags: int, seed: int):
    from clients.tags import AssetAnnotation, Tag

    return tuple(
        AssetAnnotation(
            url=url,
            id=None,
            tags=tuple(
                Tag(CATEGORIES[(seed + i) % len(CATEGORIES)], f"label {(seed * 7 + i) % 5000}") for i in range(tags)
            ),
        )
        for _, url in assets
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--assets", type=int, default=20)
    parser.add_argument("--tags", type=int, default=25)
    args = parser.parse_args()
    with scratch_database() as url:
        os.environ["APERTURE_DATABASE_URL"] = url
        from config import get_settings

        get_settings.cache_clear()
        from sqlalchemy import insert, select

        from models import Asset, Job, JobState
        from models.db import get_engine, session_scope
        from models.migrate import upgrade
        from services.tagging.annotations import store_annotations

        upgrade()
        now = dt.datetime.now(dt.UTC)
        jobs: list[tuple[uuid.UUID, list[tuple[int, str]]]] = []
        with session_scope() as s:
            for j in range(args.jobs):
                job_id = s.execute(
                    insert(Job)
                    .values(request_id=f"bench-tags-{j}", state=JobState.POLLING, payload={}, dialect="guide",
                            asset_count=args.assets, deadline_at=now + dt.timedelta(days=1))
                    .returning(Job.id)
                ).scalar_one()  # fmt: skip
                s.execute(
                    insert(Asset),
                    [{"job_id": job_id, "position": i, "url": f"https://cdn.example.com/{j}/{i}.mp4"}
                     for i in range(args.assets)],
                )  # fmt: skip
                rows = s.execute(select(Asset.id, Asset.url).where(Asset.job_id == job_id).order_by(Asset.position))
                jobs.append((job_id, [(r.id, r.url) for r in rows]))
        answers = [answer(assets, args.tags, j) for j, (_, assets) in enumerate(jobs)]
        total = args.jobs * args.assets * args.tags

        started = time.perf_counter()
        for (job_id, _), ans in zip(jobs, answers, strict=True):
            with session_scope() as s:
                store_annotations(s, job_id, ans, now)
        product_s = time.perf_counter() - started

        with get_engine().begin() as conn:
            conn.exec_driver_sql("DELETE FROM tags")  # row by row: the count triggers see it
            conn.exec_driver_sql("UPDATE assets SET tagged_at = NULL")
        raw = get_engine().raw_connection()
        try:
            started = time.perf_counter()
            for (_, assets), ans in zip(jobs, answers, strict=True):
                ids = {url: asset_id for asset_id, url in assets}
                # psycopg's cursor (the engine's driver): SQLAlchemy types it as a bare DB-API one, without COPY.
                with cast(psycopg.Cursor[Any], raw.cursor()) as cur:
                    with cur.copy("COPY tags (asset_id, category, label) FROM STDIN") as copy:
                        for a in ans:
                            for t in a.tags:
                                copy.write_row((ids[a.url], t.category, t.label))
                raw.commit()
            copy_s = time.perf_counter() - started
        finally:
            raw.close()

    product, baseline = total / product_s, total / copy_s
    print(f"tags: {args.jobs:,} COMPLETE answers of {args.assets} assets x {args.tags} tags ({total:,} rows)")
    print(f"  store_annotations (upsert, per job)  {product:10,.0f} rows/s  ({product_s:.1f} s)")
    print(f"  baseline: COPY (per job)             {baseline:10,.0f} rows/s  ({copy_s:.1f} s)")
    print(f"  ratio                                {product / baseline:10.2f}   (target: at least 0.5)")


if __name__ == "__main__":
    main()
