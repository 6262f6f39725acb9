"""The dispatcher: PostgreSQL is the only timer, and this process reads it continuously.

Every wait of every durable row is a row with ``next_poll_at`` (``APERTURE_MAX_COUNTDOWN_S=0``,
the default): no countdown message sits in a worker's RAM, so a worker's memory does not grow
with the jobs in flight. The dispatcher runs passes (``services/durable/sweeper.py``): each takes
the due looks of every kind in batches with FOR UPDATE SKIP LOCKED, marks them sent in the same
statement, commits, and then sends one message each; it also re-sends lost looks under their
token and the callbacks still owed. A pass starts every ``APERTURE_DISPATCH_INTERVAL_S``, and at
once again while passes come back full, so a burst of due looks is drained as fast as PostgreSQL
and Redis allow and a look waits at most about one interval when the fleet keeps up.

Several dispatchers run safely together (SKIP LOCKED: each due look is taken by one of them), so a
deployment runs two for availability. If the broker is away the rows stay marked sent and are sent
again after ``APERTURE_LOST_MESSAGE_AFTER_S``; if PostgreSQL is away the pass fails, is logged in
one line, and the next is tried after a backoff.

Run it as ``python -m workers.dispatcher`` (deploy/) or through ``aperture up|demo``. Liveness:
a heartbeat file touched after every pass, failed ones too (``python -m workers.health --file
...``), and metrics on ``APERTURE_DISPATCHER_METRICS_PORT``: passes, looks sent, lateness of each look when sent, the
time of the last pass that reached PostgreSQL.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from config import Settings, get_settings
from services.durable.messages import Message, Outcome
from workers.health import touch_heartbeat

if TYPE_CHECKING:
    from celery import Celery

log = logging.getLogger(__name__)
# The longest pause between failed passes. A failed pass costs one connection attempt of one process, so
# trying every few seconds through an outage costs nothing, while the pause bounds how long the fleet
# stays idle once PostgreSQL is back: every look of every parked row waits for the next pass (a pause
# of 30 s here kept the fleet idle for 28 s after a partition from PostgreSQL healed).
FAILED_PASS_PAUSE_MAX_S = 5.0

DEFAULT_HEARTBEAT_FILE = "/tmp/aperture-dispatcher-heartbeat"  # noqa: S108  (an emptyDir in the pod)
LATENESS_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 600, 1800)


@dataclass(frozen=True)
class DispatcherMetrics:
    passes: Counter
    looks: Counter
    callbacks: Counter
    lateness: Histogram
    pass_seconds: Histogram
    last_pass: Gauge
    failures: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> DispatcherMetrics:
        return cls(
            passes=Counter(
                "aperture_dispatcher_passes", "Dispatcher passes that reached PostgreSQL.", registry=registry
            ),
            looks=Counter("aperture_dispatcher_looks", "Due looks the dispatcher sent as messages.", registry=registry),
            callbacks=Counter(
                "aperture_dispatcher_callbacks", "Owed callbacks the dispatcher sent again.", registry=registry
            ),
            lateness=Histogram(
                "aperture_dispatcher_lateness_seconds",
                "How late each look was (from next_poll_at) when the dispatcher sent it.",
                buckets=LATENESS_BUCKETS,
                registry=registry,
            ),
            pass_seconds=Histogram(
                "aperture_dispatcher_pass_seconds",
                "Duration of a dispatcher pass, sends included.",
                buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
                registry=registry,
            ),
            last_pass=Gauge(
                "aperture_dispatcher_last_pass_timestamp_seconds",
                "Unix time of the last pass that reached PostgreSQL: alert when it is old.",
                registry=registry,
            ),
            failures=Counter(
                "aperture_dispatcher_failed_passes",
                "Passes that failed (PostgreSQL unreachable...).",
                registry=registry,
            ),
        )


class Dispatcher:
    def __init__(self, app: Celery, settings: Settings, *, heartbeat: Path | None = None) -> None:
        self.app = app
        # Thousands of looks a second at a burst: a task-sent event for each would double the Redis
        # writes, and Flower learns of each look from the worker's task-received event anyway.
        app.conf.task_send_sent_event = False
        self.settings = settings
        self.heartbeat = heartbeat
        self.stopping = threading.Event()
        self._callbacks_checked = float("-inf")
        self.registry = CollectorRegistry(auto_describe=True)
        self.metrics = DispatcherMetrics.create(self.registry)

    def run_pass(self) -> bool:
        """One pass: returns True when it was full (more is due: run the next one at once)."""
        from services.domains import KINDS
        from services.durable.sweeper import not_sent, sweep
        from tasks.base import send_after_commit

        started = time.monotonic()
        # Owed callbacks are a rarity (a send lost between commit and broker): looked for every
        # few seconds, not on every pass.
        callbacks_too = started - self._callbacks_checked >= min(5.0, self.settings.lost_message_after_s / 2)
        if callbacks_too:
            self._callbacks_checked = started
        result = sweep(KINDS, settings=self.settings, max_batches=1, callbacks_too=callbacks_too)
        sent = self._send(result.messages)
        if sent == len(result.messages):
            send_after_commit(Outcome(callbacks=result.callbacks))
        else:
            not_sent(KINDS, result.messages[sent:])
        m = self.metrics
        m.passes.inc()
        m.last_pass.set_to_current_time()
        m.looks.inc(sent)
        m.callbacks.inc(len(result.callbacks))
        for late in result.lateness_s:
            m.lateness.observe(late)
        m.pass_seconds.observe(time.monotonic() - started)
        if result.lost or result.callbacks:
            # Not the normal path: a message was lost (kill -9, a Redis flush) or only very late.
            log.warning(
                "re-sent %d looks whose message was lost or late and %d owed callbacks",
                result.lost,
                len(result.callbacks),
            )
        return result.full

    def _send(self, messages: list[Message]) -> int:
        """Send the pass's looks on one producer, up to the first the broker refuses: the broker
        is away (each further send would wait out kombu's publish retries), so that one and the rest
        are parked again (run_pass), and the next pass tries them again under their tokens."""
        from tasks.base import send

        with self.app.producer_or_acquire() as producer:
            for i, message in enumerate(messages):
                try:
                    send(message, producer)
                except Exception as exc:  # noqa: BLE001  (whatever the broker raised: one line, not a traceback each)
                    log.error(
                        "could not send %d of %d looks (%s: %s); the next pass tries them again",
                        len(messages) - i, len(messages), type(exc).__name__, exc,
                    )  # fmt: skip
                    return i
        return len(messages)

    def run(self) -> None:
        """Passes until stopped; a failed pass is tried again after a pause that doubles up to
        ``FAILED_PASS_PAUSE_MAX_S``."""
        failures = 0
        while not self.stopping.is_set():
            started = time.monotonic()
            try:
                full = self.run_pass()
            except Exception as exc:  # noqa: BLE001  (PostgreSQL away, a lock timeout: say so in one line, back off, go on)
                failures += 1
                self.metrics.failures.inc()
                pause = min(FAILED_PASS_PAUSE_MAX_S, self.settings.dispatch_interval_s * 2**failures)
                log.error("dispatcher pass failed (%s: %s); next try in %.1f s", type(exc).__name__, exc, pause)
                self._alive()
                self.stopping.wait(pause)
                continue
            if failures:
                log.info("dispatcher pass succeeded after %d failed passes", failures)
            failures = 0
            self._alive()
            if not full:
                self.stopping.wait(max(0.0, self.settings.dispatch_interval_s - (time.monotonic() - started)))

    def _alive(self) -> None:
        """The loop turned (a pass ran, or failed and will be tried again): the liveness probe's
        file. A PostgreSQL outage is not a reason to restart the dispatcher; a wedged loop is."""
        if self.heartbeat is not None:
            touch_heartbeat(self.heartbeat)

    def stop(self, *_: object) -> None:
        self.stopping.set()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m workers.dispatcher",
        description="Send the looks PostgreSQL says are due, continuously (several may run together).",
    )
    parser.add_argument(
        "--heartbeat-file", type=Path, default=Path(DEFAULT_HEARTBEAT_FILE), help="touched after every pass"
    )
    parser.add_argument("-l", "--loglevel", default="INFO")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    from workers import app  # the Celery app: refuses to start, in one line, when misconfigured
    from workers.application import ConfigurationError
    from workers.logging import configure

    configure(args.loglevel)
    settings = get_settings()
    if not settings.database_url:
        raise ConfigurationError(
            "APERTURE_DATABASE_URL is not set: the dispatcher reads the due looks from PostgreSQL "
            "(e.g. postgresql://user@host:5432/aperture)."
        )
    dispatcher = Dispatcher(app, settings, heartbeat=args.heartbeat_file)
    signal.signal(signal.SIGTERM, dispatcher.stop)
    signal.signal(signal.SIGINT, dispatcher.stop)
    if settings.dispatcher_metrics_port:
        try:
            start_http_server(
                settings.dispatcher_metrics_port, addr=settings.metrics_bind, registry=dispatcher.registry
            )
        except OSError as exc:
            log.error("cannot serve metrics on port %s (%s)", settings.dispatcher_metrics_port, exc)
    log.info(
        "dispatcher: ready, a pass every %.2f s, batches of %d", settings.dispatch_interval_s, settings.sweep_batch_size
    )
    dispatcher.run()
    log.info("dispatcher: stopped")


if __name__ == "__main__":
    main()
