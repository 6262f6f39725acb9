"""Jobs in flight on both brokers, side by side in one run: RabbitMQ, where every look re-enqueues itself on a
countdown held by the broker (the default there), against Redis, where every wait is parked in PostgreSQL and
the dispatcher sends each look when due (the default there).

Each side gets a scratch database, the simulator in this process (it never finishes a job, and the next look is an
hour later), a private Redis (the fleet's rate limit and circuit breaker, and on its side the broker), and on the
RabbitMQ side a private RabbitMQ node (the chaos suite's ``chaos.rabbitmq.RabbitMQ``: its own ports and data
directory, so its memory and disk are this run's alone), one real worker on every queue (``-c 2``, prefork) and
one real dispatcher. As in ``bench_dispatcher.py inflight``: ``--warm`` looks due at once are drained first to
measure what the worker sustains and to warm it up; then N jobs in flight, their next looks spread over a window
that makes them fall due at ``--load`` (0.6) times that rate. On Redis the looks are parked rows; on RabbitMQ each
is a countdown message already in the broker's delay queues (published before the window opens, each under its
row's token, the row marked sent: what a poll that re-enqueued itself leaves behind). Measured over the first
``--measure`` seconds: the worker's PSS (summed over its processes) against the same worker idle, the broker's
memory (Redis ``used_memory``; the RabbitMQ node's Erlang memory) and disk (Redis's append-only file; the node's
data directory), and the lateness of each look from its due time to its status call at the simulator.

    python bench/bench_brokers.py [--jobs 10000 100000] [--load 0.6] [--measure 180] [--warm 2000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import re
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from kombu import Producer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_dispatcher import NEVER, ONE_LOOK, looked_at
from bench.harness import (
    CpuMeter,
    fill,
    memory_kb,
    one_row,
    percentile,
    pss_kb,
    sim_jobs,
    start,
    stop,
    system_env,
    warm_up,
)
from chaos.rabbitmq import RabbitMQ
from cli.processes import DISPATCHER_READY, worker_argv
from cli.processes import dispatcher as dispatcher_argv


@dataclass
class Side:
    broker: str
    design: str
    jobs: int
    window_s: float
    sustained: float
    publish_s: float
    pss_idle_kb: float
    pss_peak_kb: float
    samples: int
    memory_idle: int
    memory_peak: int
    disk: int
    due: int
    late: list[float]

    def row(self) -> str:
        return (
            f"| {self.broker} | {self.design} | {self.jobs:,} | {self.pss_idle_kb / 1024:.1f} MB | "
            f"{self.pss_peak_kb / 1024:.1f} MB | {self.pss_peak_kb / self.pss_idle_kb:.3f} | "
            f"{self.memory_idle / 1e6:.1f} → {self.memory_peak / 1e6:.1f} MB | {self.disk / 1e6:.1f} MB | "
            f"{percentile(self.late, 0.5):.2f} s | {percentile(self.late, 0.99):.2f} s | "
            f"{max(self.late, default=float('nan')):.2f} s | {len(self.late):,} of {self.due:,} |"
        )


class Broker:
    """What a side measures of its broker."""

    def __init__(self, env: dict[str, Any], rabbit: RabbitMQ | None) -> None:
        self.redis, self.rabbit = env["_redis"], rabbit

    def memory(self) -> int:
        if self.rabbit is not None:
            return self.rabbit.memory_bytes()
        return int(self.redis.client().info("memory")["used_memory"])

    def disk(self) -> int:
        if self.rabbit is not None:
            return self.rabbit.disk_bytes()
        return sum(p.stat().st_size for p in Path(self.redis.dir).rglob("*") if p.is_file())


UNCONFIRMED = 200
CONCURRENCY = 2  # the worker's pool processes (``-c``), one per core of this machine


def project_app(name: str, env: dict[str, Any]) -> Any:
    """A Celery client of the side's broker with the project's configuration (``celery.Celery``)."""
    from celery import Celery

    from config import Settings
    from config.celery import celery_config

    app = Celery(name)
    app.config_from_object(celery_config(Settings(), env["APERTURE_BROKER_URL"]))
    return app


def publish_countdowns(env: dict[str, Any], url: str, hold_s: float | None = None) -> float:
    """Every parked row becomes what a poll that re-enqueued itself leaves: marked sent, and a countdown
    message under its token in the broker, due at its ``next_poll_at``. Returns the seconds it took.

    With ``hold_s``, each message is published ``hold_s`` (less up to a second) before it is due: at the rate
    they will fall due, each with about the same countdown, as a fleet in its steady state re-enqueues them
    (every look of a job polled every ``hold_s``). Without, all of them as fast as the broker confirms
    them: quicker, but each delay level they pass then expires them in the same burst, later, while the looks
    are measured."""
    from tasks.base import whole_seconds

    app = project_app("bench-brokers", env)
    # Setting up the benchmark, not measured, so not a confirm waited for after each message as the worker's
    # re-enqueues are (ten minutes for 100,000), but never more than ``UNCONFIRMED`` in flight: a burst of
    # publishes without confirms is taken off the socket faster than the quorum queues enqueue it, and a
    # countdown's TTL starts only once its queue has enqueued it, so each look would then be late by however
    # far the broker had fallen behind (bench/bench_delays.py --no-confirm; docs/benchmarks.md).
    app.conf.broker_transport_options = {"confirm_publish": False}
    # One publish per countdown on the channel, so that its delivery tags count them: no task-sent event.
    app.conf.task_send_sent_event = False
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "UPDATE jobs SET dispatched_at = now() WHERE dispatched_at IS NULL RETURNING id, poll_token, next_poll_at"
        ).fetchall()
    started = time.perf_counter()
    with app.connection_for_write() as connection:
        # py-amqp's Channel (kombu types it as the transport-neutral StdChannel, without confirms or events).
        channel: Any = connection.default_channel
        channel.confirm_select()
        # RabbitMQ confirms in publishing order: the highest delivery tag answered is how many were.
        answered, refused = [0], [0]

        def on_ack(delivery_tag: int, multiple: bool) -> None:
            answered[0] = max(answered[0], delivery_tag)

        def on_nack(delivery_tag: int, multiple: bool) -> None:
            answered[0] = max(answered[0], delivery_tag)
            refused[0] += 1

        channel.events["basic_ack"].add(on_ack)
        channel.events["basic_nack"].add(on_nack)
        producer = Producer(channel)
        # Each held up to a second less than ``hold_s``, at random, and published in that order: a poll
        # decides its next look at any moment, so the whole-second rounding of its countdown is anywhere in
        # (-0.5, 0.5] s, not the same for all.
        fraction = random.Random(0)
        plan = sorted(
            ((row[2] - dt.timedelta(seconds=(hold_s or 0) - fraction.random()), row) for row in rows),
            key=lambda planned: planned[0],
        )
        for sent, (publish_at, (job_id, token, due)) in enumerate(plan, 1):
            if hold_s is not None:
                time.sleep(max(0.0, (publish_at - dt.datetime.now(dt.UTC)).total_seconds()))
            countdown = max(1, whole_seconds((due - dt.datetime.now(dt.UTC)).total_seconds()))
            app.send_task(
                "aperture.poll_job", kwargs={"job_id": str(job_id), "token": str(token)}, countdown=countdown,
                producer=producer,
            )  # fmt: skip
            while sent - answered[0] > UNCONFIRMED:
                connection.drain_events(timeout=60)
        while answered[0] < len(rows):
            connection.drain_events(timeout=60)
    if refused[0]:
        raise RuntimeError(f"RabbitMQ refused {refused[0]} of the {len(rows):,} countdown messages")
    app.close()
    return time.perf_counter() - started


# Each quorum queue's own counts (rabbit_fifo's overview): ready, delivered to a consumer and not yet acked,
# expired and waiting for the dead-letter worker, and handed to it but not yet confirmed by the next queue.
# ``rabbitmqctl list_queues`` counts only the first two.
QUORUM_OVERVIEW = """
[{Q, [maps:get(K, O) || K <- [num_ready_messages, num_checked_out, num_discarded, num_discard_checked_out]]}
 || {Q, {ok, {_, O}, _}} <- [{Q, ra:local_query({binary_to_atom(<<"%2F_", Q/binary>>), node()},
                                                fun rabbit_fifo:overview/1)}
                             || Q <- [<<"aperture.poll">> | [<<"celery_delayed_", (integer_to_binary(L))/binary>>
                                                            || L <- lists:seq(0, 11)]]]].
"""


def by_time(rows: list[tuple[dt.datetime, dt.datetime]], t0: dt.datetime, slice_s: float = 30) -> str:
    """p50 / p99 of lateness per ``slice_s`` of the window: late by a constant (bursts, rounding) or falling
    further behind (the worker, or the broker, serving less than falls due)."""
    slices: dict[int, list[float]] = {}
    for due_at, called in rows:
        slices.setdefault(int((due_at - t0).total_seconds() // slice_s), []).append((called - due_at).total_seconds())
    return "; ".join(
        f"{k * slice_s:.0f}-{(k + 1) * slice_s:.0f} s {percentile(v, 0.5):.2f}/{percentile(v, 0.99):.2f} s"
        for k, v in sorted(slices.items())
    )


class WorkerEvents:
    """When each look reached the worker and when its task started, from the worker's own task events (the
    ones Flower reads: ``task-received``, stamped by the worker, with the message's ``eta`` and kwargs, and
    ``task-started``), captured in a thread of this process from the side's broker from its start.

    With the row's due time and the status call that ``looked_at`` reads, they cut each look's lateness in
    four: the message's own due time after the row's (RabbitMQ's whole seconds; none on Redis, where the
    message has no ``eta``), from then to the worker (the delay queues or the dispatcher's pass, then the
    wait in ``aperture.poll`` for the consumer's prefetch), in the worker before its task starts, and the
    task up to its status call."""

    JOB_ID = re.compile(r"'job_id': '([0-9a-f-]{36})'")

    def __init__(self, env: dict[str, Any]) -> None:
        self.app = project_app("bench-brokers-events", env)
        self.received: dict[str, tuple[str, float, float | None]] = {}  # task id -> job id, when, eta
        self.started: dict[str, float] = {}
        self.runtime: dict[str, float] = {}  # task id -> seconds the pool process ran it
        self._listening = threading.Event()
        self._receiver: Any = None
        self._thread = threading.Thread(target=self._capture, name="worker-events", daemon=True)
        self._thread.start()
        if not self._listening.wait(30):
            raise RuntimeError("the task events receiver did not start within 30 s")

    def _capture(self) -> None:
        with self.app.connection_for_read() as connection:
            handlers = {
                "task-received": self._on_received,
                "task-started": self._on_started,
                "task-succeeded": self._on_succeeded,
            }
            self._receiver = self.app.events.Receiver(connection, handlers=handlers)
            self._listening.set()
            self._receiver.capture(limit=None, timeout=None, wakeup=False)

    def _on_received(self, event: dict[str, Any]) -> None:
        if job := self.JOB_ID.search(event.get("kwargs") or ""):
            eta = dt.datetime.fromisoformat(event["eta"]).timestamp() if event.get("eta") else None
            self.received.setdefault(event["uuid"], (job.group(1), event["timestamp"], eta))

    def _on_started(self, event: dict[str, Any]) -> None:
        self.started.setdefault(event["uuid"], event["timestamp"])

    def _on_succeeded(self, event: dict[str, Any]) -> None:
        if event.get("runtime") is not None:
            self.runtime.setdefault(event["uuid"], float(event["runtime"]))

    def busy(self, start: dt.datetime, end: dt.datetime, concurrency: int) -> float:
        """The share of the pool's time between ``start`` and ``end`` spent running tasks (every task, the
        looks' re-enqueues and the dispatcher's sweeps too), by the tasks that started in it."""
        # Copies (each made in one step under the GIL): the events thread goes on adding to both.
        started, runtime = dict(self.started), dict(self.runtime)
        ran = sum(
            runtime.get(task_id, 0.0)
            for task_id, when in started.items()
            if start.timestamp() <= when < end.timestamp()
        )
        return ran / (concurrency * (end - start).total_seconds())

    def close(self) -> None:
        if self._receiver is not None:
            self._receiver.should_stop = True
        self._thread.join(10)
        self.app.close()

    def parts(self, looks: list[tuple[str, dt.datetime, dt.datetime]]) -> str:
        """p50/p99 of each part of the lateness of ``looks`` (job id, due, status call), each job's first
        look since listening began."""
        first: dict[str, tuple[float, float | None, float]] = {}
        received, began = dict(self.received), dict(self.started)  # as in busy: the events thread adds on
        for task_id, (job_id, when, eta) in sorted(received.items(), key=lambda kv: kv[1][1]):
            if job_id not in first and task_id in began:
                first[job_id] = (when, eta, began[task_id])
        names = ["message due after row due", "to the worker", "in the worker", "task to its status call"]
        parts: list[list[float]] = [[] for _ in names]
        for job_id, due, called in looks:
            if job_id not in first:
                continue
            when, eta, started = first[job_id]
            message_due = eta if eta is not None else due.timestamp()
            values = (message_due - due.timestamp(), when - message_due, started - when, called.timestamp() - started)
            for part, value in zip(parts, values, strict=True):
                part.append(value)
        shown = (
            f"{name} {percentile(v, 0.5):.2f}/{percentile(v, 0.99):.2f} s" for name, v in zip(names, parts, strict=True)
        )
        return f"{len(parts[0]):,} of {len(looks):,} looks, " + "; ".join(shown)


def served(url: str) -> int:
    """Looks the worker has made (each leaves an ``api_attempts`` row)."""
    with psycopg.connect(url, autocommit=True) as conn:
        return int(one_row(conn, "SELECT count(*) FROM api_attempts")[0])


def quorum_depths(rabbit: RabbitMQ) -> str:
    """``queue=ready/unacked/expired/dead-lettering`` for each of aperture.poll and the delay queues 0-11
    that holds anything."""
    out = rabbit.ctl("eval", " ".join(QUORUM_OVERVIEW.split()))
    held = []
    for name, counts in re.findall(r'<<"([^"]+)">>,\s*\[([\d,\s]+)\]', out):
        numbers = [int(c) for c in counts.split(",")]
        if any(numbers):
            held.append(f"{name.replace('celery_delayed_', 'L')}={'/'.join(map(str, numbers))}")
    return " ".join(held)


def side(
    broker: str,
    n: int,
    load: float,
    measure_s: float,
    warm: int,
    settle_s: float,
    lead_s: float,
    depths: bool = False,
    trace: bool = False,
    breakdown: bool = False,
    burst: bool = False,
) -> Side:
    with system_env(NEVER, **ONE_LOOK) as base:
        rabbit = RabbitMQ() if broker == "rabbitmq" else None
        env = dict(base)
        if rabbit is not None:
            env |= {"APERTURE_BROKER_URL": rabbit.url, "APERTURE_REDIS_URL": base["_redis"].url}
            os.environ.update({k: env[k] for k in ("APERTURE_BROKER_URL", "APERTURE_REDIS_URL")})
            from config import get_settings

            get_settings.cache_clear()
        measured = Broker(env, rabbit)
        events: WorkerEvents | None = None
        url, sim = env["APERTURE_DATABASE_URL"], env["_sim"]
        worker = start(env, "worker", worker_argv("brokers@%h", concurrency=CONCURRENCY))
        disp = start(env, "dispatcher", dispatcher_argv(env["_root"]))
        try:
            worker.wait_for_log("ready.")
            disp.wait_for_log(DISPATCHER_READY)

            warming = CpuMeter({"worker": worker.pid, "dispatcher": disp.pid})
            sustained, idle = warm_up(url, sim, warm, worker.pid, settle_s)
            print(f"  {broker}, warm-up ({warm:,} looks due at once, then {settle_s:.0f} s idle): {warming.report()}")
            memory_idle = measured.memory()

            if breakdown:  # listening before the first countdown is published: any of them may be early
                events = WorkerEvents(env)
            window = n / (load * sustained)
            # On RabbitMQ the countdowns are in the broker before the window opens. Steady: each is published
            # ``hold`` (a window and a little) before it falls due (``publish_countdowns``), after the rows are
            # filled (n / 2,000 s is room for that); a burst of them takes about n / 300 s here.
            lead = lead_s + ((n / 100 if burst else window + n / 2000) if rabbit is not None else 0)
            vidmob_ids = sim_jobs(sim, n)  # before t0 is set: the window opens ``lead`` after they exist
            t0 = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=lead)
            fill(url, vidmob_ids, t0, window / n)
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("INSERT INTO bench_due SELECT id, next_poll_at FROM jobs")
            hold = None if burst else (t0 - dt.datetime.now(dt.UTC)).total_seconds()
            publish_s = publish_countdowns(env, url, hold) if rabbit is not None else 0.0
            if (behind := (dt.datetime.now(dt.UTC) - t0).total_seconds()) > 0:
                print(f"  warning: filling (and publishing, {publish_s:.0f} s) ended {behind:.0f} s into the window")
            samples, memory_peak = [], memory_idle
            cpu: CpuMeter | None = None  # from the window's opening: what the looks cost the machine
            end = t0 + dt.timedelta(seconds=min(measure_s, window))
            while (now := dt.datetime.now(dt.UTC)) < end:
                if cpu is None and now >= t0:
                    cpu = CpuMeter({"worker": worker.pid, "dispatcher": disp.pid})
                samples.append(pss_kb(worker.pid))
                memory_peak = max(memory_peak, measured.memory())
                if depths and rabbit is not None:  # where the looks wait: the delay queues or the worker's queue
                    print(f"  {(now - t0).total_seconds():5.0f} s {quorum_depths(rabbit)}")
                if trace:  # where the worker's memory is: its main process or its pool, held or copied on write
                    parts = " ".join(f"{pss / 1024:.1f}/{dirty / 1024:.1f}" for _, pss, dirty in memory_kb(worker.pid))
                    print(
                        f"  {(now - t0).total_seconds():5.0f} s  PSS/private dirty MB, main then pool: {parts}; "
                        f"looks served {served(url)}",
                        flush=True,
                    )
                time.sleep(min(5.0, (end - now).total_seconds()))
            if cpu is not None:
                print(f"  {broker}, {n:,} in flight: {cpu.report()}", flush=True)
            disk = measured.disk()
            due = sum(1 for i in range(n) if i * window / n <= (end - t0).total_seconds())
            deadline = time.monotonic() + 120
            while True:
                looks = [r for r in looked_at(url, t0 - dt.timedelta(seconds=1)) if r[1] <= end]
                if len(looks) >= due or time.monotonic() > deadline:
                    break
                time.sleep(1)
            rows = [(due_at, called) for _, due_at, called in looks]
            late = [(called - due_at).total_seconds() for due_at, called in rows]
            print(f"  {broker}, {n:,} in flight: lateness by when the look fell due, {by_time(rows, t0)}")
            if events is not None:
                print(
                    f"  {broker}, {n:,} in flight: lateness by part, p50/p99: {events.parts(looks)}; the pool "
                    f"busy {events.busy(t0, end, CONCURRENCY):.0%} of the window",
                    flush=True,
                )
        finally:
            if events is not None:
                events.close()
            stop(disp, worker)
            if rabbit is not None:
                rabbit.close()
    design = "countdown re-enqueue" if rabbit is not None else "parked, dispatcher sends"
    return Side(
        broker, design, n, window, sustained, publish_s, idle, max(samples, default=idle), len(samples),
        memory_idle, memory_peak, disk, due, late,
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--load", type=float, default=0.6)
    parser.add_argument("--measure", type=float, default=180)
    parser.add_argument("--warm", type=int, default=2000)
    parser.add_argument("--settle", type=float, default=5)
    parser.add_argument("--lead", type=float, default=10)
    parser.add_argument("--brokers", nargs="+", default=["redis", "rabbitmq"], choices=["redis", "rabbitmq"])
    parser.add_argument("--depths", action="store_true", help="RabbitMQ: print each queue's length every sample")
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="cut each look's lateness in parts, from the worker's task events: the message's due time, the broker, "
        "the worker, the task",
    )
    parser.add_argument(
        "--trace",
        action="store_true",
        help="print the worker's memory, process by process, and the looks served, every sample",
    )
    parser.add_argument(
        "--burst",
        action="store_true",
        help="RabbitMQ: put the countdowns in the broker as fast as it confirms them (runs before 2026-12-04), "
        "not at the rate they fall due",
    )
    args = parser.parse_args()
    sides: list[Side] = []
    for n in args.jobs:
        for broker in args.brokers:  # Redis first: the baseline, today's design
            s = side(
                broker, n, args.load, args.measure, args.warm, args.settle, args.lead, args.depths, args.trace,
                args.breakdown, args.burst,
            )  # fmt: skip
            print(
                f"{broker}: {n:,} in flight over {s.window_s:.0f} s (the worker sustains {s.sustained:.0f} looks/s"
                + (f"; {n:,} countdown messages published in {s.publish_s:.0f} s" if s.publish_s else "")
                + f"); {s.samples} samples"
            )
            sides.append(s)
    print()
    print("| broker | design | in flight | worker PSS idle | in flight (max) | ratio | broker memory | broker disk "
          "| lateness p50 | p99 | max | looks served |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|")
    for s in sides:
        print(s.row())
    for n in args.jobs if len(args.brokers) == 2 else []:
        redis_side, rabbit_side = (s for s in sides if s.jobs == n)
        ratio = (rabbit_side.pss_peak_kb / rabbit_side.pss_idle_kb) / (redis_side.pss_peak_kb / redis_side.pss_idle_kb)
        p99 = percentile(rabbit_side.late, 0.99), percentile(redis_side.late, 0.99)
        print(
            f"{n:,} in flight, RabbitMQ against Redis: worker PSS ratio {ratio:.3f}, lateness p99 {p99[0]:.2f} s "
            f"against {p99[1]:.2f} s (targets on RabbitMQ: PSS within 10% of idle, p99 at most 2 s)"
        )


if __name__ == "__main__":
    main()
