"""Servers the suite starts from the system's packages (RabbitMQ, PostgreSQL) refuse to run as root,
or keep their files as their own user: as root, each runs as that user, on directories given to it."""

from __future__ import annotations

import os
import pwd
import time
from collections.abc import Callable
from pathlib import Path

from cli.processes import Process


def as_user(user: str) -> list[str]:
    """The prefix that runs a command as ``user`` when this process is root (nothing otherwise: then
    the servers run as whoever runs the suite). The environment is kept as given."""
    if os.geteuid() != 0:
        return []
    return ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups"]


def give_to(path: Path, user: str) -> None:
    """``chown -R user:user path`` when root (nothing otherwise)."""
    if os.geteuid() != 0:
        return
    entry = pwd.getpwnam(user)
    for dirpath, _dirs, files in os.walk(path):
        os.chown(dirpath, entry.pw_uid, entry.pw_gid)
        for name in files:
            os.chown(os.path.join(dirpath, name), entry.pw_uid, entry.pw_gid)


class ServerProcess:
    """A server of the system's packages as a child process group (cli.processes.Process): kill -9 takes
    every process of it at once, as a lost machine does; ``start()`` again runs it on the same data."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path, cwd: Path) -> None:
        self.name, self.argv, self.env, self.log_path, self.cwd = name, argv, env, log_path, cwd
        self.process: Process | None = None

    def launch(self, ready: Callable[[], bool], timeout: float) -> None:
        """Starts it (again, appending to its log) and waits until ``ready()`` is true, or raises with
        the log's tail if it exits or the time passes first."""
        if self.process is None:
            self.process = Process(self.name, self.argv, self.env, self.log_path, cwd=self.cwd, inherit_environ=False)
        else:
            self.process.restart()
        deadline = time.monotonic() + timeout
        while not ready():
            if not self.process.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not start:\n{self.process.log()[-3000:]}")
            time.sleep(0.3)

    def alive(self) -> bool:
        return self.process is not None and self.process.alive()

    def kill9(self) -> None:
        """The whole process group at once, nothing flushed; it stays down until ``start()``."""
        assert self.process is not None
        self.process.kill9()
        self.process.stopped = True

    def stop(self) -> None:
        if self.process is not None and self.process.alive():
            self.process.stop(timeout=30)
