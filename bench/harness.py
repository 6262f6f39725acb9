"""What the benchmarks share: a scratch database on the machine's PostgreSQL, a private Redis,
the simulator in the benchmark's process, and the system's own processes started as an operator
would start them."""

from __future__ import annotations

import datetime as dt
import os
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg

from cli.processes import DISPATCHER_READY, Process, dispatcher, interrupt_on_term, worker_argv
from config.tasks import QueueName

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "bench-key"
ADMIN_URL = os.environ.get("APERTURE_TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")

# The simulator answering at once (a job is COMPLETE the first time it is looked at), and the system
# looking at once: what the throughput and reuse benchmarks run on.
INSTANT = {"pending_s": 0.0, "processing_s": 0.0}
FAST = {
    "APERTURE_POLL_SCHEDULE": "fixed",
    "APERTURE_POLL_INITIAL_S": "0",
    "APERTURE_POLL_INTERVAL_S": "1",
    "APERTURE_POLL_JITTER": "0",
    "APERTURE_DISPATCH_INTERVAL_S": "0.05",
    "APERTURE_LOG_FORMAT": "text",
    # One Vidmob job per request: the engine's cost per job and reuse's create calls are measured
    # alone (bench/bench_batching.py sets its own window).
    "APERTURE_BATCH_WINDOW_S": "0",
}

FILL = """
INSERT INTO jobs (request_id, state, payload, dialect, asset_count, vidmob_job_id, deadline_at, next_poll_at,
                  poll_token, submitted_at)
SELECT 'bench-' || g, 'polling', '{"assets": [{"url": "https://cdn.example.com/bench.mp4"}]}'::jsonb, 'guide', 1,
       ids.vid, now() + interval '1 day',
       %(start)s::timestamptz + (g - 1) * %(spacing)s * interval '1 second',
       gen_random_uuid(), now()
FROM unnest(%(ids)s::text[]) WITH ORDINALITY AS ids(vid, g)
"""


@contextmanager
def scratch_database(admin_url: str = ADMIN_URL) -> Iterator[str]:
    name = f"aperture_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlsplit(admin_url)._replace(path=f"/{name}").geturl()
    finally:
        from models.db import reset_engine

        reset_engine()
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def system_env(sim_config: dict[str, Any] | None = None, **extra: str) -> Iterator[dict[str, Any]]:
    """A scratch database, a private Redis, the simulator in this process, and the environment
    every process of the system gets."""
    from chaos.harness import Redis
    from simulator import SimulatorConfig, start_simulator

    interrupt_on_term()  # a benchmark stopped from outside still stops what it started
    root = Path(tempfile.mkdtemp(prefix="aperture-bench-"))
    redis_server = Redis(root)
    sim = start_simulator(config=SimulatorConfig(**({"api_key": API_KEY} | (sim_config or {}))))
    try:
        with scratch_database() as url:
            env = {
                "APERTURE_DATABASE_URL": url,
                "APERTURE_BROKER_URL": redis_server.url,
                "VIDMOB_API_BASE_URL": sim.url,
                "VIDMOB_API_KEY": API_KEY,
                "APERTURE_DATA_DIR": str(root),
                "APERTURE_LOG_FORMAT": "text",
                "APERTURE_METRICS_PORT": "0",
                "APERTURE_DISPATCHER_METRICS_PORT": "0",
                **extra,
            }
            os.environ.update(env)
            from config import get_settings
            from models.migrate import upgrade

            get_settings.cache_clear()
            upgrade()
            context = env | {"_root": root, "_sim": sim, "_redis": redis_server, "_retiring": []}
            try:
                yield context
            finally:
                retired(context)
    finally:
        sim.stop()
        redis_server.stop()


def fill(url: str, vidmob_ids: list[str], start: dt.datetime, spacing_s: float) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(FILL, {"ids": vidmob_ids, "start": start, "spacing": spacing_s})
        conn.execute("VACUUM ANALYZE jobs")


def one_row(conn: psycopg.Connection[Any], query: str, params: Any = None) -> tuple[Any, ...]:
    """The row of a query that always returns one (an aggregate: ``count(*)``, ``min``/``max``)."""
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return row


def sim_jobs(sim, n: int) -> list[str]:
    body = {"assets": [{"url": "https://cdn.example.com/bench.mp4"}]}
    return [sim.state.create_guide_job(body)["job_id"] for _ in range(n)]


def memory_kb(pid: int) -> list[tuple[int, int, int]]:
    """(pid, PSS, private dirty) in kB of a process and each of its children (a prefork worker and its
    pool). A pool process's private dirty memory grows as it writes to pages it shares with its parent
    since the fork (copy on write), which raises the sum of PSS without anything more being held."""
    found = []
    for p in [pid, *sorted(_descendants(pid) - {pid})]:
        try:
            text = Path(f"/proc/{p}/smaps_rollup").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        fields = {line.split()[0]: int(line.split()[1]) for line in text.splitlines()[1:] if line.split()}
        found.append((p, fields["Pss:"], fields["Private_Dirty:"]))
    return found


def pss_kb(pid: int) -> int:
    """PSS of a process and its children (a prefork worker and its pool)."""
    return sum(pss for _, pss, _ in memory_kb(pid))


def warm_up(url: str, sim: Any, warm: int, worker_pid: int, settle_s: float) -> tuple[float, float]:
    """``warm`` looks due at once, drained by the running worker and dispatcher: the looks a second the
    worker sustains. Then, the rows cleared and the worker rested for ``settle_s``, its idle PSS (kB): the
    median of 5 samples taken over half as long again. Creates ``bench_due`` (job, due time) for the
    lateness of the looks measured after it."""
    fill(url, sim_jobs(sim, warm), dt.datetime.now(dt.UTC), 0)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE bench_due (job_id uuid PRIMARY KEY, due timestamptz)")
        deadline = time.monotonic() + 300
        while one_row(conn, "SELECT count(*) FROM api_attempts")[0] < warm:
            if time.monotonic() > deadline:
                raise TimeoutError("warm-up looks were not served")
            time.sleep(0.5)
        first, last = one_row(conn, "SELECT min(attempted_at), max(attempted_at) FROM api_attempts")
        sustained = warm / max(0.001, (last - first).total_seconds())
        conn.execute("DELETE FROM api_attempts")
        conn.execute("DELETE FROM jobs")
    time.sleep(settle_s)
    samples = []
    for _ in range(5):
        time.sleep(settle_s / 10)
        samples.append(pss_kb(worker_pid))
    return sustained, statistics.median(samples)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


def start(env: dict[str, Any], name: str, argv: list[str]) -> Process:
    """One of the system's processes, its log in the run's directory (``env["_root"]``): ``name.log``,
    or ``name.2.log`` and so on when a process of that name ran before (it may still be shutting down)."""
    clean = {k: v for k, v in env.items() if not k.startswith("_")}
    log, runs = env["_root"] / f"{name}.log", 1
    while log.exists():
        runs += 1
        log = env["_root"] / f"{name}.{runs}.log"
    return Process(name, argv, clean, log, cwd=ROOT)


def stop(*procs: Process) -> None:
    """Warm shutdowns, all at once (each takes a second or so), then each waited for."""
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.stop()


# A benchmark's sides one after another: a side's processes get TERM when it ends (retire), and the next
# side starts its own during that warm shutdown (a second or so of waiting, not work); it begins its work
# once the previous ones have exited (retired), so no side shares the machine or the queues with another.


def retire(env: dict[str, Any], *procs: Process) -> None:
    """TERM ``procs`` without waiting; the next side (or the end of system_env) waits for them."""
    for proc in procs:
        proc.terminate()
    env["_retiring"].extend(procs)


def retired(env: dict[str, Any]) -> None:
    """Until every retiring process of a previous side has exited."""
    stop(*env["_retiring"])
    env["_retiring"].clear()


def wait_answering(app: Any, timeout: float = 60) -> None:
    """Until a worker of ``app`` answers a ping: it consumes its queues (a worker at WARNING logs no
    "ready." to wait for)."""
    deadline = time.monotonic() + timeout
    while not app.control.ping(timeout=0.25, limit=1):
        if time.monotonic() > deadline:
            raise TimeoutError(f"no worker answered a ping within {timeout:g} s")


# docs/operations.md's deployment: submit workers take intake, admitted submissions and maintenance, poll
# workers only the looks, so a burst of requests never stands between a finished job and its poll.
DEPLOYED = {
    "submit": ",".join(q.value for q in QueueName if q is not QueueName.POLL),
    "poll": QueueName.POLL.value,
}


@contextmanager
def worker_and_dispatcher(env: dict[str, Any], concurrency: int = 2, *, split: bool = False) -> Iterator[None]:
    """One worker on every queue (prefork, ``concurrency``) and one dispatcher, ready, for the block:
    a side of a benchmark. With ``split``, two workers of ``concurrency // 2`` each instead, on the queues
    of docs/operations.md (``DEPLOYED``). The block begins once the previous side's processes have exited,
    and its own are retired at its end."""
    if split:
        workers = []
        for role, queues in DEPLOYED.items():
            argv = worker_argv(f"{role}@%h", concurrency=max(1, concurrency // 2), queues=queues)
            workers.append(start(env, f"worker-{role}", argv))
    else:
        workers = [start(env, "worker", worker_argv("bench@%h", concurrency=concurrency))]
    disp = start(env, "dispatcher", dispatcher(env["_root"]))
    try:
        retired(env)
        for worker in workers:
            worker.wait_for_log("ready.")
        disp.wait_for_log(DISPATCHER_READY)
        yield
    finally:
        retire(env, disp, *workers)


TICK = os.sysconf("SC_CLK_TCK")


def _descendants(pid: int) -> set[int]:
    found, todo = {pid}, [pid]
    while todo:
        children = subprocess.run(["pgrep", "-P", str(todo.pop())], capture_output=True, text=True).stdout.split()
        todo.extend(c for c in map(int, children) if c not in found)
        found.update(map(int, children))
    return found


class CpuMeter:
    """CPU seconds spent over a stretch of a run, by the part of the system that spent them: whether a
    benchmark measured the system or the machine's two cores. ``groups`` names process trees (a worker and its
    pool, the dispatcher); anything else is told apart by its command: PostgreSQL's backends, RabbitMQ's
    Erlang VM, Redis, this process (the benchmark and its simulator's threads). Processes that exit between
    the two readings are not counted."""

    COMMANDS = {"postgres": "postgresql", "beam.smp": "rabbitmq", "redis-server": "redis"}

    def __init__(self, groups: dict[str, int]) -> None:
        self.groups = groups
        self.start = self._read()

    def _read(self) -> tuple[float, dict[int, tuple[str, int]]]:
        owner = {p: name for name, root in self.groups.items() for p in _descendants(root)}
        owner[os.getpid()] = "bench + simulator"
        ticks = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                continue
            comm, rest = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :].split()
            pid = int(entry.name)
            ticks[pid] = (owner.get(pid) or self.COMMANDS.get(comm, "other"), int(rest[11]) + int(rest[12]))
        return time.monotonic(), ticks

    def report(self) -> str:
        """One line: the seconds elapsed, the cores busy on the whole machine, and each part's share."""
        (t0, before), (t1, after) = self.start, self._read()
        spent: dict[str, float] = {}
        for pid, (name, total) in after.items():
            spent[name] = spent.get(name, 0.0) + (total - before.get(pid, (name, 0))[1]) / TICK
        wall = max(0.001, t1 - t0)
        parts = ", ".join(f"{name} {s / wall:.2f}" for name, s in sorted(spent.items(), key=lambda kv: -kv[1]))
        return f"CPU over {wall:.0f} s, cores busy {sum(spent.values()) / wall:.2f} of {os.cpu_count()}: {parts}"
