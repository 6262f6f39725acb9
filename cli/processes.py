"""Starting the system's own processes (worker, dispatcher, Flower) for `aperture demo|up`:
the same `celery -A workers ...` and `python -m workers.dispatcher` commands an operator
runs, as child processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ALL_QUEUES = "aperture.submit,aperture.poll,aperture.maintenance,celery"


class Child:
    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            argv, env={**os.environ, **env}, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def wait_for_log(self, needle: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle.encode() in self.log_path.read_bytes():
                return True
            if self.proc.poll() is not None:
                return False
            time.sleep(0.2)
        return False

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 30) -> None:
        if self.proc.poll() is None:
            # TERM is Celery's warm shutdown: running tasks finish, nothing is lost.
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()


def celery(*args: str) -> list[str]:
    return [sys.executable, "-m", "celery", "-A", "workers", *args]


def start_worker(env: dict[str, str], log_dir: Path, *, concurrency: int = 2, name: str = "worker") -> Child:
    return Child(
        name,
        celery(
            "worker",
            "-l",
            "INFO",
            "-Q",
            ALL_QUEUES,
            "-c",
            str(concurrency),
            "-E",
            "--without-gossip",
            "--without-mingle",
            "-n",
            f"{name}@%h",
        ),
        env,
        log_dir,
    )


def dispatcher(data_dir: Path, name: str = "dispatcher") -> list[str]:
    return [
        sys.executable, "-m", "workers.dispatcher", "-l", "INFO",
        "--heartbeat-file", str(data_dir / f"{name}-heartbeat"),
    ]  # fmt: skip


DISPATCHER_READY = "dispatcher: ready"


def start_dispatcher(env: dict[str, str], log_dir: Path, data_dir: Path, *, name: str = "dispatcher") -> Child:
    return Child(name, dispatcher(data_dir, name), env, log_dir)
