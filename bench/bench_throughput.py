"""Throughput per core: jobs a second end to end, against Celery's own no-op limit, side by side.

On a private Redis and a scratch database, with the simulator answering at once (a job is
COMPLETE the first time it is looked at):

1. the baseline: ``--noops`` no-op tasks (``bench/noop_app.py``: the project's Celery
   configuration, nothing else) through one ``celery worker -c 2``; tasks a second;
2. the pipeline: ``--jobs`` ``aperture.create_job`` (one asset each) through one worker on every
   queue (``-c 2``) and one dispatcher; jobs a second from the first send to the last COMPLETE
   stored. Each job is its own Vidmob job (batching off), for each pool of ``--pools``; then once
   more with batching on (``--batching``, the default window): the product as configured, where
   requests share Vidmob jobs of up to 200 assets (one task a request, and a few per pack).

A job is at least two tasks (create_job, which stores and submits it, then poll_job, which
stores its tags), so the engine's limit is half the no-op rate; the figure is the pipeline's
rate over that limit (the target set for it: at least 0.35, docs/benchmarks.md).

    python bench/bench_throughput.py [--jobs 5000] [--noops 10000] [--profile out.txt]

``--profile`` records the worker's pool processes with py-spy during the pipeline run (py-spy
must be installed: ``pip install py-spy``) and writes the top functions by own and total time.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import FAST, INSTANT, one_row, retire, retired, start, system_env, wait_answering
from cli.processes import DISPATCHER_READY, dispatcher, worker_argv


def drained(client, queue: str) -> bool:
    return client.llen(queue) == 0 and client.hlen("unacked") == 0


def noop_rate(env: dict, n: int) -> float:
    client = env["_redis"].client()
    argv = [sys.executable, "-m", "celery", "-A", "bench.noop_app", "worker", "-Q", "bench.noop", "-c", "2"]
    argv += ["--without-gossip", "--without-mingle", "-l", "WARNING"]  # as the pipeline worker logs
    worker = start(env, "noop", argv)
    try:
        # (at WARNING it does not say when it is ready: the warm-up below waits for it)
        from bench.noop_app import app

        with app.producer_or_acquire() as producer:
            for _ in range(200):  # warm-up
                app.send_task("bench.noop", producer=producer)
        while not drained(client, "bench.noop"):
            time.sleep(0.05)
        started = time.perf_counter()
        with app.producer_or_acquire() as producer:
            for _ in range(n):
                app.send_task("bench.noop", producer=producer)
        while not drained(client, "bench.noop"):
            time.sleep(0.02)
        return n / (time.perf_counter() - started)
    finally:
        retire(env, worker)


def pipeline_rate(
    env: dict, n: int, pool: str, concurrency: int, profile: Path | None, batch_window: float = 0.0
) -> tuple[float, int]:
    url = env["APERTURE_DATABASE_URL"]
    env = env | {"APERTURE_BATCH_WINDOW_S": f"{batch_window:g}"}
    argv = [*worker_argv("pipeline@%h", concurrency=concurrency, loglevel="WARNING"), "-P", pool]
    # A threads pool runs `concurrency` tasks in one process: one connection each.
    worker = start(env | {"APERTURE_DB_POOL_SIZE": str(max(2, concurrency))}, "worker", argv)
    disp = start(env, "dispatcher", dispatcher(env["_root"]))
    spy = None
    try:
        from workers import app

        retired(env)  # the previous run's worker has exited: this one has the machine alone
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("TRUNCATE jobs, assets, tags, api_attempts CASCADE")
        disp.wait_for_log(DISPATCHER_READY)
        wait_answering(app)

        run = uuid.uuid4().hex[:8]
        started = time.perf_counter()
        with app.producer_or_acquire() as producer:
            for i in range(n):
                kwargs = {"assets": [{"url": f"https://cdn.example.com/{run}/{i}.mp4"}], "request_id": f"{run}-{i}"}
                app.send_task("aperture.create_job", kwargs=kwargs, queue="aperture.submit", producer=producer)
        if profile is not None:
            spy = subprocess.Popen(
                ["py-spy", "record", "--pid", str(worker.pid), "--subprocesses", "--format", "raw",
                 "--output", str(profile.with_suffix(".raw")), "--rate", "50"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
        # The requests only (a pack is a row too, when batching is on).
        mine = (f"{run}-%",)
        with psycopg.connect(url, autocommit=True) as conn:
            while True:
                (done,) = one_row(
                    conn, "SELECT count(*) FROM jobs WHERE request_id LIKE %s AND state = 'complete'", mine
                )
                if done >= n:
                    break
                (ended,) = one_row(
                    conn, "SELECT count(*) FROM jobs WHERE request_id LIKE %s AND ended_at IS NOT NULL", mine
                )
                if ended >= n:
                    break
                time.sleep(0.2)
        elapsed = time.perf_counter() - started
        return n / elapsed, done
    finally:
        if spy is not None:
            spy.send_signal(2)
            spy.wait(60)
        retire(env, disp, worker)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--noops", type=int, default=10000)
    parser.add_argument(
        "--pools",
        default="prefork:2,prefork:8,threads:8,threads:16",
        help="worker pools to run the pipeline with, as pool:concurrency (the baseline is always prefork:2)",
    )
    parser.add_argument("--profile", type=Path, default=None, help="py-spy profile of the first pool's run")
    parser.add_argument(
        "--batching",
        type=float,
        default=10.0,
        metavar="WINDOW_S",
        help="one more run, prefork -c 2 with batching on at this window (the default); 0 for none",
    )
    args = parser.parse_args()
    pools = [(p.split(":")[0], int(p.split(":")[1])) for p in args.pools.split(",")]
    rows = []
    with system_env(INSTANT, **FAST) as env:
        noop = noop_rate(env, args.noops)
        for i, (pool, concurrency) in enumerate(pools):
            profile = args.profile if i == 0 else None
            rows.append((pool, concurrency, *pipeline_rate(env, args.jobs, pool, concurrency, profile)))
        if args.batching:
            batched = pipeline_rate(env, args.jobs, "prefork", 2, None, batch_window=args.batching)
            rows.append((f"prefork, batching on ({args.batching:g} s window)", 2, *batched))
    limit = noop / 2
    print(f"throughput: {args.jobs:,} jobs of one asset, instant API, one worker on every queue and one dispatcher")
    baseline = "baseline: Celery no-op tasks, prefork -c 2"
    print(f"  {baseline:<58}  {noop:8.1f} tasks/s  (two tasks a job: {limit:.1f} jobs/s)")
    for pool, concurrency, rate, complete in rows:
        label = f"pipeline, {pool} -c {concurrency}"
        print(f"  {label:<58}  {rate:8.1f} jobs/s   ratio {rate / limit:5.2f}  ({complete:,} complete; target 0.35)")


if __name__ == "__main__":
    main()
