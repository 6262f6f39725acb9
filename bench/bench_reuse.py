"""Reuse: Vidmob create calls with reuse on, against the same workloads with reuse
off (``APERTURE_REUSE_TTL_S=0``), side by side in one run.

On a private Redis and a scratch database, with the simulator in this process answering at once,
one worker on every queue (``-c 2``) and one dispatcher, each side runs, in order:

1. ``first``: ``--urls`` URLs never seen, one single-asset ``aperture.create_job`` each;
2. ``again``: the same URLs again (create calls: none should be needed);
3. ``30% repeat``: as many single-asset requests, 30% of them for URLs of (1), 70% new;
4. ``30% repeat, 10 per request``: the same mix of assets, in requests of 10: a request is answered
   whole only when all 10 of its assets are known; otherwise its known assets are answered and only the
   rest go to Vidmob (partial reuse), so the saving shows in assets sent rather than jobs created.

Every request carries the same client tag; the figures of each phase are the simulator's counts of
Vidmob jobs created and of the assets they carried (its ``/_sim/stats``), with the wall time from the
first send to the last job ended. Batching is off on both sides (one Vidmob job per request that
needs one), so jobs created count requests sent to Vidmob. The end prints the plan PostgreSQL chose
for the reuse lookup of a 10-asset request.

    python bench/bench_reuse.py [--urls 1000]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psycopg
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import FAST, INSTANT, one_row, system_env, worker_and_dispatcher

CLIENT_TAGS = [{"label": "lifestyle", "description": "Real-life settings"}]
REPEAT_SHARE = 0.3
PER_REQUEST = 10
SIDES = (("reuse on", "604800"), ("baseline, reuse off", "0"))


@dataclass
class Phase:
    name: str
    requests: int
    assets: int
    created: int
    assets_sent: int
    seconds: float


def workloads(n: int, seed: int = 9) -> list[tuple[str, list[list[str]]]]:
    """(phase, requests as lists of URLs): the same for both sides."""
    rng = random.Random(seed)
    run = uuid.uuid4().hex[:8]
    first = [f"https://cdn.example.com/{run}/first-{i}.mp4" for i in range(n)]

    def mix(tag: str) -> list[str]:
        repeats = rng.sample(first, round(n * REPEAT_SHARE))
        urls = repeats + [f"https://cdn.example.com/{run}/{tag}-{i}.mp4" for i in range(n - len(repeats))]
        rng.shuffle(urls)
        return urls

    single = mix("new")
    grouped = mix("grouped")
    return [
        ("first", [[u] for u in first]),
        ("again", [[u] for u in first]),
        (f"{REPEAT_SHARE:.0%} repeat", [[u] for u in single]),
        (
            f"{REPEAT_SHARE:.0%} repeat, {PER_REQUEST} per request",
            [grouped[i : i + PER_REQUEST] for i in range(0, n, PER_REQUEST)],
        ),
    ]


def jobs_created(sim_url: str) -> tuple[int, int]:
    """Vidmob jobs created so far, and the assets they carried."""
    stats = requests.get(f"{sim_url}/_sim/stats", timeout=10).json()
    return stats["jobs_created"], stats["assets_created"]


def run_phase(env: dict, name: str, batches: list[list[str]], timeout: float) -> Phase:
    from workers import app

    url, sim_url = env["APERTURE_DATABASE_URL"], env["VIDMOB_API_BASE_URL"]
    prefix = f"bench-reuse-{uuid.uuid4().hex[:8]}"
    before = jobs_created(sim_url)
    started = time.perf_counter()
    with app.producer_or_acquire() as producer:
        for i, urls in enumerate(batches):
            kwargs = {"assets": [{"url": u} for u in urls], "client_tags": CLIENT_TAGS, "request_id": f"{prefix}-{i}"}
            app.send_task("aperture.create_job", kwargs=kwargs, queue="aperture.submit", producer=producer)
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        while True:
            ended, complete = one_row(
                conn,
                "SELECT count(*), count(*) FILTER (WHERE state = 'complete') FROM jobs"
                " WHERE request_id LIKE %s AND ended_at IS NOT NULL",
                (f"{prefix}-%",),
            )
            if ended >= len(batches):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name}: {ended} of {len(batches)} jobs ended after {timeout:g}s")
            time.sleep(0.1)
    if complete != len(batches):
        raise RuntimeError(f"{name}: {len(batches) - complete} jobs did not complete")
    seconds = time.perf_counter() - started
    after = jobs_created(sim_url)
    return Phase(name, len(batches), sum(map(len, batches)), after[0] - before[0], after[1] - before[1], seconds)


def run_side(env: dict, ttl: str, phases: list[tuple[str, list[list[str]]]], timeout: float) -> list[Phase]:
    side_env = env | {"APERTURE_REUSE_TTL_S": ttl}
    with worker_and_dispatcher(side_env):
        # Emptied once the previous side's processes have exited, before this side sends anything.
        with psycopg.connect(env["APERTURE_DATABASE_URL"], autocommit=True) as conn:
            conn.execute("TRUNCATE jobs, assets, tags, api_attempts CASCADE")
        requests.post(f"{env['VIDMOB_API_BASE_URL']}/_sim/reset", timeout=10).raise_for_status()
        return [run_phase(side_env, name, batches, timeout) for name, batches in phases]


def lookup_plan() -> str:
    """EXPLAIN of the reuse lookup (services/tagging/reuse.py) for the last 10-asset request."""
    import datetime as dt

    from sqlalchemy import text

    from models.db import session_scope
    from services.tagging.reuse import SOURCES

    with session_scope() as session:
        session.execute(text("ANALYZE assets"))
        session.execute(text("ANALYZE jobs"))
        job_id = session.execute(
            text("SELECT id FROM jobs WHERE asset_count = :n ORDER BY created_at DESC LIMIT 1"), {"n": PER_REQUEST}
        ).scalar_one()
        since = dt.datetime.now(dt.UTC) - dt.timedelta(days=7)
        plan = session.execute(text(f"EXPLAIN {SOURCES.text}"), {"job_id": job_id, "since": since}).scalars()
        return "\n".join(f"    {line}" for line in plan)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--urls", type=int, default=1000)
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds a phase may take")
    args = parser.parse_args()
    if args.urls % PER_REQUEST:
        parser.error(f"--urls must be a multiple of {PER_REQUEST}")
    phases = workloads(args.urls)
    results = {}
    with system_env(INSTANT, **FAST) as env:
        for side, ttl in SIDES:
            results[side] = run_side(env, ttl, phases, args.timeout)
        plan = lookup_plan()
    on, off = (results[side] for side, _ in SIDES)
    print(f"reuse: {args.urls:,} URLs, one client tag, instant API, one worker (-c 2) and one dispatcher")
    print("  Vidmob jobs created, and the assets they carried: reuse on, baseline (APERTURE_REUSE_TTL_S=0), ratio")
    head = f"{'phase':<28} {'requests':>8} {'assets':>7} {'jobs on':>8} {'baseline':>9} {'ratio':>6}"
    print(f"  {head} {'assets on':>10} {'baseline':>9} {'ratio':>6}")
    for a, b in zip(on, off, strict=True):
        jobs = f"{a.created / b.created:.2f}" if b.created else "-"
        sent = f"{a.assets_sent / b.assets_sent:.2f}" if b.assets_sent else "-"
        target = "  target 0 jobs" if a.name == "again" else ""
        print(
            f"  {a.name:<28} {a.requests:>8,} {a.assets:>7,} {a.created:>8,} {b.created:>9,} {jobs:>6}"
            f" {a.assets_sent:>10,} {b.assets_sent:>9,} {sent:>6}{target}"
        )
    print("  wall seconds, first send to last job ended (reuse on / off):")
    for a, b in zip(on, off, strict=True):
        print(f"    {a.name:<26} {a.seconds:7.1f} / {b.seconds:7.1f}")
    print("  the reuse lookup of a 10-asset request (EXPLAIN):")
    print(plan)


if __name__ == "__main__":
    main()
