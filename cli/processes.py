"""The system's own processes (worker, dispatcher, Flower) as child processes: the same
`celery -A workers ...` and `python -m workers.dispatcher` commands an operator runs.

One helper for every caller that starts them: `aperture demo|up`, the tests (tests/conftest.py), the
chaos suite (chaos/harness.py) and the benchmarks (bench/harness.py). Each process is its own process
group (a prefork worker's pool gets the signals too) and writes its output to one log file, which a
restart appends to.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from config.tasks import QueueName

# A worker of every queue, as the embedded system, the tests, the chaos suite and the benchmarks run it.
ALL_QUEUES = ",".join(q.value for q in QueueName)
LOG_TAIL = 3000  # characters of the log an error shows


def interrupt_on_term() -> None:
    """TERM (docker stop, systemd, kill, a timeout) ends this process as Ctrl-C does: KeyboardInterrupt
    through every ``finally`` and ``with``, so the processes it started are stopped, not left running
    (Python's default for TERM exits at once, and each child is a process group of its own, which the
    signal never reaches). Only the main thread may set a handler: elsewhere this does nothing."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


class NotReady(RuntimeError):
    """The process exited, or the timeout passed, before it logged what was waited for."""


class Process:
    """A child process and its log file.

    ``env`` is added to this process's environment, or with ``inherit_environ=False`` is the whole
    environment (the chaos suite builds its own, without the caller's APERTURE_ variables).
    """

    def __init__(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str],
        log_path: Path,
        *,
        cwd: Path | None = None,
        inherit_environ: bool = True,
    ) -> None:
        self.name, self.argv, self.log_path, self.cwd = name, list(argv), Path(log_path), cwd
        self.env = {**os.environ, **env} if inherit_environ else dict(env)
        self._log = open(self.log_path, "wb")
        self._started_at = 0  # where the current run's log begins
        self._spawn()

    def _spawn(self) -> None:
        self.proc = subprocess.Popen(
            self.argv,
            cwd=self.cwd,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        # Cleared once the new process runs: a supervisor (chaos/harness.py) restarts a process that
        # exited unless it was stopped, and must never see the old one exited and not stopped.
        self.stopped = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        """The whole log, every run since the first start."""
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, needle: str, timeout: float = 60) -> None:
        """Until the current run (since the last start or restart) logs ``needle``: a line a previous
        run wrote never counts. Raises NotReady, with the log's tail, if it exits or the time passes."""
        wanted = needle.encode()
        deadline = time.monotonic() + timeout
        while True:
            with open(self.log_path, "rb") as log:
                log.seek(self._started_at)
                if wanted in log.read():
                    return
            if not self.alive():
                code = self.proc.returncode
                raise NotReady(f"{self.name} exited ({code}) before it logged {needle!r}:\n{self._tail()}")
            if time.monotonic() > deadline:
                raise NotReady(f"{self.name} did not log {needle!r} within {timeout:g} s:\n{self._tail()}")
            time.sleep(0.1)

    def _tail(self) -> str:
        return self.log()[-LOG_TAIL:]

    @staticmethod
    def _signal(proc: subprocess.Popen, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):  # the whole group is gone already
            os.killpg(proc.pid, signum)

    def kill9(self) -> None:
        """What an OOM kill or a node loss does: the whole group at once, no warm shutdown, nothing acked."""
        proc = self.proc  # this run: a supervisor may start the next one as soon as it is gone
        self._signal(proc, signal.SIGKILL)
        proc.wait()

    def terminate(self) -> None:
        """TERM, Celery's warm shutdown (running tasks finish, nothing is lost), without waiting: several
        processes shut down at once, then stop() waits for each. It stays down until restart()."""
        self.stopped = True
        if self.alive():
            self._signal(self.proc, signal.SIGTERM)

    def stop(self, timeout: float = 30) -> None:
        """TERM, then KILL if it has not exited within ``timeout`` seconds."""
        self.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._signal(self.proc, signal.SIGKILL)
            self.proc.wait()
        self._log.close()

    def restart(self) -> None:
        """The same command again (stopped first if it still runs), appending to the same log."""
        if self.alive():
            self.stop()
        self._log.close()
        self._log = open(self.log_path, "ab")
        self._started_at = self.log_path.stat().st_size
        self._spawn()


def celery(*args: str) -> list[str]:
    return [sys.executable, "-m", "celery", "-A", "workers", *args]


def worker_argv(node: str, *, concurrency: int = 2, loglevel: str = "INFO", queues: str = ALL_QUEUES) -> list[str]:
    """`celery -A workers worker` as deployed: every queue (or ``queues``), events on (Flower), no gossip or
    mingle (workers never talk to each other). ``node`` is its name, e.g. ``worker@%h``."""
    return celery(
        "worker", "-l", loglevel, "-Q", queues, "-c", str(concurrency), "-E", "--without-gossip",
        "--without-mingle", "-n", node,
    )  # fmt: skip


def start_worker(env: dict[str, str], log_dir: Path, *, concurrency: int = 2, name: str = "worker") -> Process:
    return Process(name, worker_argv(f"{name}@%h", concurrency=concurrency), env, log_dir / f"{name}.log")


def dispatcher(data_dir: Path, name: str = "dispatcher") -> list[str]:
    return [
        sys.executable, "-m", "workers.dispatcher", "-l", "INFO",
        "--heartbeat-file", str(data_dir / f"{name}-heartbeat"),
    ]  # fmt: skip


DISPATCHER_READY = "dispatcher: ready"


def start_dispatcher(env: dict[str, str], log_dir: Path, data_dir: Path, *, name: str = "dispatcher") -> Process:
    return Process(name, dispatcher(data_dir, name), env, log_dir / f"{name}.log")
