"""A PostgreSQL primary and its synchronous streaming replica, for a scenario that kills the primary
with kill -9 and promotes the replica, as a managed database's failover does.

Both are the system's PostgreSQL binaries (``/usr/lib/postgresql/<version>/bin``: initdb,
pg_basebackup, postgres) on free ports with data directories of their own; as root they run as the
``postgres`` user. The primary waits for the replica to flush every commit
(``synchronous_standby_names = '*'``, ``synchronous_commit = on``), so a commit the system was told
of survives the primary. The replica runs without a synchronous standby of its own, so once promoted
it commits alone. ``url`` names both hosts (libpq's multi-host form with
``target_session_attrs=read-write``): a new connection goes to whichever one accepts writes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

from chaos.harness import free_port
from chaos.servers import ServerProcess, as_user, give_to

USER = "postgres"
READY_TIMEOUT_S = 60


def postgres_bin() -> Path:
    """The newest installed server's bin directory (Debian's layout), or one line saying what is missing."""
    configured = os.environ.get("APERTURE_POSTGRES_BIN")
    found = [Path(configured)] if configured else sorted(Path("/usr/lib/postgresql").glob("*/bin"))
    for candidate in reversed(found):
        if (candidate / "pg_basebackup").exists() and (candidate / "postgres").exists():
            return candidate
    raise SystemExit(
        "PostgreSQL's server binaries are not installed (/usr/lib/postgresql/*/bin/postgres): the failover "
        "scenario starts a primary and a replica of them (apt-get install postgresql, or APERTURE_POSTGRES_BIN)"
    )


def query(url: str, sql: str, *params: Any) -> list[tuple]:
    """One statement in its own connection; its rows (none for a statement that returns none)."""
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        cursor = conn.execute(sql, params or None)
        return cursor.fetchall() if cursor.description else []


class Server(ServerProcess):
    """One postmaster: kill -9 of its process group takes its backends with it, as a lost machine does."""

    def __init__(
        self, bindir: Path, data: Path, port: int, settings: dict[str, str], host: str, prefix: list[str]
    ) -> None:
        self.data, self.port = data, port
        argv = [*prefix, *as_user(USER), str(bindir / "postgres"), "-D", str(data)]
        for key, value in {"port": str(port), "listen_addresses": host, **settings}.items():
            argv += ["-c", f"{key}={value}"]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
        super().__init__(f"postgres-{port}", argv, env, data.parent / f"{port}.log", data.parent)
        self.url = f"postgresql://{USER}@{host}:{port}/postgres"

    def start(self) -> None:
        self.launch(self._accepts, READY_TIMEOUT_S)

    def _accepts(self) -> bool:
        try:
            psycopg.connect(self.url, connect_timeout=2).close()
            return True
        except psycopg.OperationalError:
            return False

    def query(self, sql: str, *params: Any) -> list[tuple]:
        return query(self.url, sql, *params)


# Both servers: small and fast to start, their sockets in their own directory.
COMMON = {"shared_buffers": "32MB", "max_connections": "100", "fsync": "on"}


class ReplicatedPostgres:
    """A primary and a synchronous replica; ``fail_over()`` kills the primary (-9) and promotes the replica.
    With ``replica=False``, the primary alone, listening on ``host`` and run with ``prefix`` before its
    command (a network namespace of chaos/partition.py).

    The same surface as chaos.harness.Postgres (``url``, ``query``, ``running``, ``stop``) so a
    scenario's System can use either.
    """

    def __init__(self, *, replica: bool = True, host: str = "127.0.0.1", prefix: list[str] | None = None) -> None:
        bindir = postgres_bin()
        self.root = Path(tempfile.mkdtemp(prefix="aperture-pg-failover-"))
        primary_dir, replica_dir = self.root / "primary", self.root / "replica"
        give_to(self.root, USER)
        self._run([str(bindir / "initdb"), "-D", str(primary_dir), "-U", USER, "--auth=trust", "-E", "UTF8"])
        with open(primary_dir / "pg_hba.conf", "a") as hba:  # a server of the suite's own, on a private address
            hba.write("host all all samenet trust\nhost replication all samenet trust\n")
        sockets = str(self.root)
        self.primary = Server(
            bindir,
            primary_dir,
            free_port(),
            {
                **COMMON,
                "unix_socket_directories": sockets,
                "wal_level": "replica",
                "max_wal_senders": "5",
                "synchronous_commit": "on",
            },
            host,
            prefix or [],
        )
        self.replica: Server | None = None
        self.url = f"postgresql://{USER}@{host}:{self.primary.port}/aperture?connect_timeout=5"
        try:
            self.primary.start()
            self.primary.query("CREATE DATABASE aperture")
            if replica:
                self._replicate(bindir, replica_dir, sockets)
        except BaseException:
            self.close()
            raise

    def _replicate(self, bindir: Path, replica_dir: Path, sockets: str) -> None:
        source = ["-h", "127.0.0.1", "-p", str(self.primary.port), "-U", USER]
        self._run([str(bindir / "pg_basebackup"), *source, "-D", str(replica_dir), "-R", "-X", "stream", "-c", "fast"])
        settings = {**COMMON, "unix_socket_directories": sockets, "hot_standby": "on", "synchronous_standby_names": ""}
        self.replica = Server(bindir, replica_dir, free_port(), settings, "127.0.0.1", [])
        self.replica.start()
        # Synchronous only now: with no standby yet, every commit (CREATE DATABASE too) would wait.
        self.primary.query("ALTER SYSTEM SET synchronous_standby_names = '*'")
        self.primary.query("SELECT pg_reload_conf()")
        self._wait_sync()
        hosts = f"127.0.0.1:{self.primary.port},127.0.0.1:{self.replica.port}"
        self.url = f"postgresql://{USER}@{hosts}/aperture?target_session_attrs=read-write&connect_timeout=5"

    def _run(self, argv: list[str]) -> None:
        done = subprocess.run([*as_user(USER), *argv], cwd=self.root, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)}: {done.stdout}{done.stderr}")

    def _wait_sync(self) -> None:
        """Until the primary reports the replica as its synchronous standby, streaming."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not self.primary.query("SELECT 1 FROM pg_stat_replication WHERE sync_state = 'sync'"):
            if time.monotonic() > deadline:
                raise RuntimeError("the replica did not become the primary's synchronous standby")
            time.sleep(0.2)

    def fail_over(self) -> float:
        """kill -9 of the primary (postmaster and backends at once), then the replica promoted, as an
        orchestrator (Patroni, a managed database) would. Returns the seconds the promotion took."""
        assert self.replica is not None
        self.primary.kill9()
        started = time.monotonic()
        self.replica.query("SELECT pg_promote(wait => true, wait_seconds => 60)")
        return time.monotonic() - started

    def query(self, sql: str, *params: Any) -> list[tuple]:
        return query(self.url, sql, *params)

    def running(self) -> bool:
        return self.primary.alive() or (self.replica is not None and self.replica.alive())

    def stop(self) -> None:
        for server in (self.primary, self.replica):
            if server is not None:
                server.stop()

    def close(self) -> None:
        self.stop()
        if os.environ.get("CHAOS_KEEP"):
            print(f"    (kept {self.root})")
            return
        shutil.rmtree(self.root, ignore_errors=True)
