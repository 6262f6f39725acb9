"""Redis as the broker, where it is weakest: what a kill -9 of every worker costs the messages they held, and
what a Redis restart does to the workers. A private ``redis-server`` on a free port; each worker runs exactly
the project's Celery configuration (``config/celery.py``, defaults: the visibility timeout derived from what
the design holds unacked, kombu's restore timer every ``APERTURE_UNACKED_RESTORE_INTERVAL_S``) with one task
of this module that records when it starts and then sleeps (a task a worker holds).

``kill``: one worker (prefork ``-c 2``, prefetch 1) takes ``--held`` messages (each running), is killed
with kill -9 with its whole process group (an OOM kill, a lost node), and a second worker starts at once.
Figure: seconds from the kill until each held message runs again on the second worker, against the
visibility timeout in force (the baseline: the delay can be no shorter).

``restart``: one worker running a task (its message unacked; ``--idle``: none) and Redis restarted under it
``--restarts`` times (stop, start on the same port with its append-only file); figure: whether the worker is
still running and still serving a task sent after each restart.

    python bench/bench_redis_held.py kill [--held 2] [--visibility-timeout S]
    python bench/bench_redis_held.py restart [--restarts 3] [--idle]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from celery import Celery

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cli.processes import Process, celery
from config import Settings
from config.celery import celery_config

QUEUE = "bench.held"

app = Celery("held")
if os.environ.get("APERTURE_BROKER_URL"):
    _settings = Settings(broker_url=os.environ["APERTURE_BROKER_URL"])
    assert _settings.broker_url is not None
    app.config_from_object(celery_config(_settings, _settings.broker_url))
    app.conf.task_routes = {"bench.held": {"queue": QUEUE}}


@app.task(name="bench.held", bind=True)
def held(self: object, key: str, seconds: float) -> None:
    """Records its start (the time, and whether the message was redelivered) in Redis, then holds the
    message for ``seconds``."""
    import redis

    client = redis.Redis.from_url(os.environ["APERTURE_BROKER_URL"])
    client.rpush(f"bench:started:{key}", f"{time.time()}")
    client.close()
    time.sleep(seconds)


def worker(env: dict[str, str], root: Path, name: str) -> Process:
    argv = celery("worker", "-l", "INFO", "-Q", QUEUE, "-c", "2", "--without-gossip", "--without-mingle", "-n", name)
    argv[argv.index("-A") + 1] = "bench.bench_redis_held"
    proc = Process(name.split("@")[0], argv, env, root / f"{name.split('@')[0]}.log", cwd=Path(__file__).parent.parent)
    proc.wait_for_log("ready.", timeout=60)
    return proc


def run_kill(held_n: int, visibility_timeout: int | None) -> None:
    import redis

    from chaos.harness import Redis

    root = Path(tempfile.mkdtemp(prefix="aperture-bench-held-"))
    server = Redis(root)
    env = {**os.environ, "APERTURE_BROKER_URL": server.url, "APERTURE_LOG_FORMAT": "text"}
    if visibility_timeout:
        env["APERTURE_VISIBILITY_TIMEOUT_S"] = str(visibility_timeout)
    settings = Settings(broker_url=server.url, visibility_timeout_s=visibility_timeout)
    vt, interval = settings.redis_visibility_timeout_s, settings.unacked_restore_interval_s
    client = redis.Redis.from_url(server.url)
    os.environ["APERTURE_BROKER_URL"] = server.url
    sender = Celery("sender")
    sender.config_from_object(celery_config(settings, server.url))
    sender.conf.task_routes = {"bench.held": {"queue": QUEUE}}
    first = worker(env, root, "first@%h")
    second: Process | None = None
    try:
        keys = [uuid.uuid4().hex[:8] for _ in range(held_n)]
        for key in keys:  # each runs to just below its soft time limit: held until the kill
            sender.send_task("bench.held", kwargs={"key": key, "seconds": settings.task_soft_time_limit_s - 1})
        deadline = time.monotonic() + 30
        while client.llen(QUEUE) > 0 or client.hlen("unacked") < held_n:
            if time.monotonic() > deadline:
                raise SystemExit(f"the worker did not take {held_n} messages: {client.hlen('unacked')} unacked")
            time.sleep(0.05)
        running = sum(client.llen(f"bench:started:{k}") for k in keys)
        first.kill9()
        killed = time.time()
        second = worker(env, root, "second@%h")
        delays: list[float] = []
        deadline = time.monotonic() + vt + 10 * interval + 60
        while len(delays) < held_n and time.monotonic() < deadline:
            starts = [[float(t) for t in client.lrange(f"bench:started:{k}", 0, -1)] for k in keys]
            delays = [max(s) - killed for s in starts if s and max(s) > killed]
            time.sleep(0.5)
        print(f"Redis, kill -9 of the worker holding {held_n} messages ({running} running, the rest prefetched);")
        print(
            f"visibility timeout {vt} s (derived: what the design holds unacked + margin), restore timer {interval} s"
        )
        print("| held | back within | again after kill: min | median | max | max / visibility timeout |")
        print("|---:|---|---:|---:|---:|---:|")
        if delays:
            print(
                f"| {held_n} | {len(delays)} of {held_n} | {min(delays):.1f} s | {statistics.median(delays):.1f} s | "
                f"{max(delays):.1f} s | {max(delays) / vt:.2f} |"
            )
        else:
            print(f"| {held_n} | 0 of {held_n} | - | - | - | - |")
        print(f"Celery's default visibility timeout (3600 s, a scan every ~100 s) is {3600 / vt:.0f}x this one.")
    finally:
        for proc in (first, second):
            if proc is not None:
                proc.stop()
        server.stop()


def run_restart(restarts: int, busy: bool) -> None:
    import redis
    from kombu.exceptions import OperationalError

    from chaos.harness import Redis

    root = Path(tempfile.mkdtemp(prefix="aperture-bench-restart-"))
    server = Redis(root)
    env = {**os.environ, "APERTURE_BROKER_URL": server.url, "APERTURE_LOG_FORMAT": "text"}
    os.environ["APERTURE_BROKER_URL"] = server.url
    settings = Settings(broker_url=server.url)
    sender = Celery("sender")
    sender.config_from_object(celery_config(settings, server.url))
    sender.conf.task_routes = {"bench.held": {"queue": QUEUE}}
    proc = worker(env, root, "restart@%h")
    served = 0
    try:
        for n in range(restarts):
            if busy:  # a task running, its message unacked, when Redis goes away
                busy_key = uuid.uuid4().hex[:8]
                sender.send_task("bench.held", kwargs={"key": busy_key, "seconds": 4})
                client = redis.Redis.from_url(server.url)
                while not client.llen(f"bench:started:{busy_key}"):
                    time.sleep(0.05)
                client.close()
            server.restart()
            key = uuid.uuid4().hex[:8]
            deadline = time.monotonic() + 90
            sent = False
            while time.monotonic() < deadline and proc.alive():
                try:
                    if not sent:
                        sender.send_task("bench.held", kwargs={"key": key, "seconds": 0})
                        sent = True
                    if redis.Redis.from_url(server.url).llen(f"bench:started:{key}"):
                        served += 1
                        break
                except (redis.RedisError, OSError, OperationalError) as exc:  # Redis still coming back
                    print(f"  (Redis not answering yet: {type(exc).__name__})")
                time.sleep(0.5)
            state = "running" if proc.alive() else f"exited ({proc.proc.returncode})"
            print(f"restart {n + 1}: worker {state}, served a task sent after it: {served == n + 1}")
            if not proc.alive():
                print(proc.log()[-3000:])
                break
        print("| Redis restarts | worker still running | tasks served after a restart |\n|---:|---|---:|")
        print(f"| {restarts} | {'yes' if proc.alive() else 'no'} | {served} of {restarts} |")
    finally:
        proc.stop()
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("part", choices=["kill", "restart"])
    parser.add_argument("--held", type=int, default=2, help="at most the concurrency (2): prefetch 1")
    parser.add_argument("--visibility-timeout", type=int, default=None, help="seconds (default: derived)")
    parser.add_argument("--restarts", type=int, default=3)
    parser.add_argument("--idle", action="store_true", help="restart: no task running at each restart")
    args = parser.parse_args()
    if args.part == "kill":
        run_kill(args.held, args.visibility_timeout)
    else:
        run_restart(args.restarts, not args.idle)


if __name__ == "__main__":
    main()
