"""Batching: single-asset requests arriving over a minute, with batching on (the
default window) and off (``APERTURE_BATCH_WINDOW_S=0``), side by side in one run.

On a private Redis and a scratch database, with the simulator in this process finishing each job
at its first status check (so what is measured is the wait batching adds, not Vidmob's processing),
one worker on every queue (``-c 2``) and one dispatcher, each side sends ``--requests`` single-asset
``aperture.create_job`` at an even pace over ``--over`` seconds, all with the same client tag, and
waits for every one to end. Figures per side:

- Vidmob jobs created (the simulator's ``/_sim/stats``; target with batching: at most 10 for 1,000
  requests over 60 s), and Vidmob requests of every kind;
- per request, its wait before Vidmob: from its row's creation to the submission of the Vidmob job
  that carried it (its own, or its pack's); and the latency batching added to it, request by request
  (the same request of the same schedule on both sides; target: at most the window);
- per request, its time to an end (creation to COMPLETE stored).

    python bench/bench_batching.py [--requests 1000] [--over 60] [--window 10]
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psycopg
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import FAST, INSTANT, one_row, percentile, system_env, worker_and_dispatcher

CLIENT_TAGS = [{"label": "lifestyle", "description": "Real-life settings"}]

# Per request of the run: its wait before Vidmob (to its own or its pack's submission) and its end.
DELAYS = """
SELECT m.request_id,
       extract(epoch FROM coalesce(p.submitted_at, m.submitted_at) - m.created_at) AS wait_s,
       extract(epoch FROM m.ended_at - m.created_at) AS end_s,
       m.state
FROM jobs m LEFT JOIN jobs p ON p.id = m.packed_in_job_id
WHERE m.request_id LIKE %s
"""


@dataclass
class Side:
    name: str
    created: int
    api_requests: int
    waits: dict[str, float]
    ends: dict[str, float]
    seconds: float


def run_side(env: dict, name: str, window: str, n: int, over: float, timeout: float) -> Side:
    from workers import app

    url, sim_url = env["APERTURE_DATABASE_URL"], env["VIDMOB_API_BASE_URL"]
    side_env = env | {"APERTURE_BATCH_WINDOW_S": window}
    prefix = f"bench-batching-{uuid.uuid4().hex[:8]}"
    with worker_and_dispatcher(side_env):
        # Emptied once the previous side's processes have exited, before this side sends anything.
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("TRUNCATE jobs, assets, tags, api_attempts CASCADE")
        requests.post(f"{sim_url}/_sim/reset", timeout=10).raise_for_status()
        began = time.monotonic()
        with app.producer_or_acquire() as producer:
            for i in range(n):
                time.sleep(max(0.0, began + i * over / n - time.monotonic()))
                kwargs = {
                    "assets": [{"url": f"https://cdn.example.com/{prefix}/lifestyle-{i}.mp4", "id": f"a{i}"}],
                    "client_tags": CLIENT_TAGS,
                    "request_id": f"{prefix}-{i}",
                }
                app.send_task("aperture.create_job", kwargs=kwargs, queue="aperture.submit", producer=producer)
        deadline = time.monotonic() + timeout
        with psycopg.connect(url, autocommit=True) as conn:
            while True:
                (ended,) = one_row(
                    conn,
                    "SELECT count(*) FROM jobs WHERE request_id LIKE %s AND ended_at IS NOT NULL",
                    (f"{prefix}-%",),
                )
                if ended >= n:
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{name}: {ended} of {n} requests ended after {timeout:g}s")
                time.sleep(0.2)
            seconds = time.monotonic() - began
            rows = conn.execute(DELAYS, (f"{prefix}-%",)).fetchall()
    failed = [r[0] for r in rows if r[3] != "complete"]
    if failed:
        raise RuntimeError(f"{name}: {len(failed)} requests did not complete, e.g. {failed[:3]}")
    stats = requests.get(f"{sim_url}/_sim/stats", timeout=10).json()
    key = lambda request_id: request_id.rsplit("-", 1)[1]  # noqa: E731 (the request's index: same on both sides)
    return Side(
        name,
        stats["jobs_created"],
        stats["requests_total"],
        {key(r[0]): float(r[1]) for r in rows},
        {key(r[0]): float(r[2]) for r in rows},
        seconds,
    )


def summary(values: list[float]) -> str:
    return (
        f"mean {sum(values) / len(values):6.2f}  p50 {percentile(values, 0.5):6.2f}  "
        f"p95 {percentile(values, 0.95):6.2f}  max {max(values):6.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--over", type=float, default=60.0, help="seconds over which the requests arrive")
    parser.add_argument("--window", type=float, default=10.0, help="APERTURE_BATCH_WINDOW_S of the batching side")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds a side may take after the last send")
    args = parser.parse_args()
    sides = (("batching on", f"{args.window:g}"), ("baseline, batching off", "0"))
    results = []
    with system_env(INSTANT, **FAST) as env:
        for name, window in sides:
            results.append(run_side(env, name, window, args.requests, args.over, args.timeout))
    on, off = results
    gained = [on.waits[k] - off.waits[k] for k in on.waits]
    print(
        f"batching: {args.requests:,} single-asset requests over {args.over:g} s, one client tag, "
        f"window {args.window:g} s, up to 200 assets a job; instant API, one worker (-c 2), one dispatcher"
    )
    print(f"  {'':<34} {'batching on':>12} {'baseline':>10} {'ratio':>7}")
    ratio = on.created / off.created if off.created else float("nan")
    print(f"  {'Vidmob jobs created':<34} {on.created:>12,} {off.created:>10,} {ratio:>7.3f}  target <= 10 for 1,000")
    ratio = on.api_requests / off.api_requests if off.api_requests else float("nan")
    print(f"  {'Vidmob requests (create + status)':<34} {on.api_requests:>12,} {off.api_requests:>10,} {ratio:>7.3f}")
    print(f"  {'wall seconds, first send to last end':<34} {on.seconds:>12.1f} {off.seconds:>10.1f}")
    print("  seconds from a request's row to its Vidmob job's submission:")
    print(f"    batching on  {summary(list(on.waits.values()))}")
    print(f"    baseline     {summary(list(off.waits.values()))}")
    print(f"    gained       {summary(gained)}   target: at most the window ({args.window:g} s)")
    print("  seconds from a request's row to its end (COMPLETE stored):")
    print(f"    batching on  {summary(list(on.ends.values()))}")
    print(f"    baseline     {summary(list(off.ends.values()))}")


if __name__ == "__main__":
    main()
