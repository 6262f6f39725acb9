"""Liveness of a worker pod, without the broker: a heartbeat file and a probe that reads it.

Why not `celery inspect ping`: it goes through Redis, so a Redis outage would fail the probe of
every worker pod at once and Kubernetes would restart them all, interrupting running tasks, for
an outage a restart cannot fix. A file on the pod's own disk answers the question a liveness
probe asks ("is this process wedged?") and nothing else.

Who touches the file (see `install_heartbeat`):
- the worker's event loop, through its timer, while the worker is consuming. The loop is the
  part that wedges in practice (a socket read that never returns); when it stops turning, the
  file ages and the probe fails;
- a small thread, while the loop is legitimately not turning: the worker is starting, waiting
  for the broker to come back, or shutting down (draining running tasks on TERM, which is bounded
  by the task time limit and terminationGracePeriodSeconds).

With the prefork pool (what the deployments run) tasks run in child processes and never hold
the loop. With `-P solo` they run on the loop's own thread, so a long task ages the file: there,
keep `--max-age` above the task time limit.

The probe: `python -m workers.health --max-age 60 [--file PATH]` exits 0 when the file was
touched less than `--max-age` seconds ago, 1 otherwise, and prints one line saying why. The
dispatcher (workers/dispatcher.py) touches its own file after every pass and is probed the same
way, with `--file`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from celery import Celery

log = logging.getLogger(__name__)

HEARTBEAT_FILE_ENV = "APERTURE_HEARTBEAT_FILE"
DEFAULT_HEARTBEAT_FILE = "/tmp/aperture-worker-heartbeat"  # noqa: S108  (an emptyDir in the pod)
DEFAULT_INTERVAL_S = 10.0


def default_heartbeat_file() -> Path:
    return Path(os.environ.get(HEARTBEAT_FILE_ENV) or DEFAULT_HEARTBEAT_FILE)


def touch_heartbeat(path: str | os.PathLike[str]) -> None:
    """Set the file's modification time to now, creating it (and its folder) if needed."""
    file = Path(path)
    file.parent.mkdir(parents=True, exist_ok=True)
    file.touch(exist_ok=True)  # an existing file gets its modification time set to now


def check_heartbeat(path: str | os.PathLike[str], max_age_s: float, now: float | None = None) -> tuple[bool, str]:
    """(alive, one-line reason) for the heartbeat file at `path`."""
    try:
        touched = os.stat(path).st_mtime
    except FileNotFoundError:
        return False, f"no heartbeat file at {path}: the worker has not started, or writes elsewhere"
    except OSError as exc:
        return False, f"cannot read heartbeat file {path}: {exc.strerror}"
    age = max(0.0, (time.time() if now is None else now) - touched)
    if age > max_age_s:
        # "event loop": a worker's, or the dispatcher's loop of passes.
        return False, f"heartbeat {age:.0f}s old (max {max_age_s:g}s) at {path}: the process's event loop is stuck"
    return True, f"heartbeat {age:.1f}s old (max {max_age_s:g}s)"


class _Heartbeat:
    """Shared by the two bootsteps: who beats depends on whether the event loop is running."""

    def __init__(self, path: Path, interval_s: float) -> None:
        self.path = path
        self.interval_s = interval_s
        self.consuming = False  # True from the consumer's start to its stop: the loop must beat
        self._thread: threading.Thread | None = None
        self._failing = False

    def beat(self) -> None:
        try:
            touch_heartbeat(self.path)
        except OSError as exc:
            if not self._failing:  # once, not every interval: the probe will say the rest
                log.warning("cannot touch heartbeat file %s: %s", self.path, exc)
            self._failing = True
        else:
            self._failing = False

    def start_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="aperture-heartbeat", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        # Daemon thread, never stopped: it must keep beating through a warm shutdown that
        # drains running tasks, and dies with the process.
        while True:
            if not self.consuming:
                self.beat()
            time.sleep(self.interval_s)


def install_heartbeat(
    app: Celery, path: str | os.PathLike[str] | None = None, interval_s: float = DEFAULT_INTERVAL_S
) -> None:
    """Make every worker of `app` touch the heartbeat file every `interval_s` seconds.

    Call once, before the worker starts (at import of the module that builds the app). It only
    registers bootsteps: the dispatcher, Flower and the probe import the same app and are unaffected.
    """
    from celery import bootsteps

    heartbeat = _Heartbeat(Path(path) if path else default_heartbeat_file(), interval_s)

    class WorkerHeartbeat(bootsteps.StartStopStep):
        """Beats from a thread while the worker is not consuming (start-up, broker outage, shutdown)."""

        name = "aperture.heartbeat.worker"
        requires = ("celery.worker.components:Timer",)

        def start(self, worker: Any) -> None:
            heartbeat.beat()
            heartbeat.start_thread()

        def stop(self, worker: Any) -> None:
            heartbeat.consuming = False

        def terminate(self, worker: Any) -> None:
            self.stop(worker)

    class ConsumerHeartbeat(bootsteps.StartStopStep):
        """Beats from the event loop's timer while connected; started again after each reconnect."""

        name = "aperture.heartbeat.consumer"
        requires = ("celery.worker.consumer.connection:Connection",)

        def __init__(self, consumer: Any, **kwargs: Any) -> None:
            super().__init__(consumer, **kwargs)
            self.entry: Any = None

        def start(self, consumer: Any) -> None:
            heartbeat.consuming = True
            heartbeat.beat()
            self.entry = consumer.timer.call_repeatedly(interval_s, heartbeat.beat)

        def stop(self, consumer: Any) -> None:
            # Connection lost (the consumer reconnects, out of its loop) or shutting down.
            heartbeat.consuming = False
            if self.entry is not None:
                self.entry.cancel()
                self.entry = None

        def terminate(self, consumer: Any) -> None:
            self.stop(consumer)

        shutdown = stop

    app.steps["worker"].add(WorkerHeartbeat)
    app.steps["consumer"].add(ConsumerHeartbeat)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m workers.health",
        description="Liveness probe: is the worker's heartbeat file fresh? Never contacts the broker.",
    )
    parser.add_argument("--max-age", type=float, default=60.0, help="seconds (default: 60)")
    parser.add_argument(
        "--file",
        type=Path,
        default=None,
        help=f"heartbeat file (default: ${HEARTBEAT_FILE_ENV}, else {DEFAULT_HEARTBEAT_FILE})",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    alive, reason = check_heartbeat(args.file or default_heartbeat_file(), args.max_age)
    print(("ok: " if alive else "FAIL: ") + reason)
    return 0 if alive else 1


if __name__ == "__main__":
    sys.exit(main())
