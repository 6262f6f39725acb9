"""The broker's delay chain alone: is a countdown on RabbitMQ late before any worker sees it, and why?

Celery's native delayed delivery (kombu ``native_delayed_delivery``) holds a countdown of N seconds in up to 28
queues ``celery_delayed_<k>`` (message TTL 2^k s), one per set bit of N: each expiry dead-letters the message to
the next set bit's queue, the last to ``celery_delayed_delivery`` and on to the destination queue. This bench
starts a private RabbitMQ node (``chaos.rabbitmq.RabbitMQ``) per configuration, declares that topology with
kombu's own function, a destination queue as the project declares its queues (quorum, behind a topic exchange of
its name), and publishes to ``celery_delayed_27`` exactly as Celery does (kombu's ``calculate_routing_key``).
No Celery worker, no database: a kombu consumer on the destination queue acks each message and records when it
came against when it was due (publish time + its whole-second countdown), so what is measured is the broker's
lateness only (Celery's rounding of a countdown to whole seconds is not in it).

Two ways to publish:

- ``upfront`` (what ``bench_brokers.py`` does): every message published at once before the window opens,
  their due times spread evenly over the window at ``rate`` a second (countdowns from ``--lead`` s to
  ``--lead`` + ``--window`` s).
- ``steady`` (what re-enqueueing polls do): ``rate`` messages a second published for ``--lead`` + ``--window``
  s, each with a countdown drawn evenly from ``--min-delay`` to ``--max-delay``; measured are the messages due
  inside the window after the first ``--max-delay`` s.

Every publish waits for its confirm, as the worker's re-enqueues do; ``--no-confirm`` publishes as fast as the
socket takes them (what ``bench_brokers.py`` once did to set up), to show what such a burst does to the chain.

Each configuration is ``queue_type:rate[:key=value,...]``, the keys being settings of RabbitMQ's ``rabbit``
application (advanced.config), e.g. ``quorum:40:dead_letter_worker_consumer_prefetch=512``. With
``--depths`` it samples every queue's length every few seconds (management API) and prints where the messages
waited. Prints lateness p50 / p99 / max per configuration side by side.

    python bench/bench_delays.py [--mode upfront|steady] [--window 60] [--lead 10] \\
        [--configs quorum:10 quorum:40 quorum:100 classic:40 ...] [--depths] [--no-confirm]
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import random
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kombu import Connection, Consumer, Exchange, Producer, Queue
from kombu.transport.native_delayed_delivery import (
    bind_queue_to_native_delayed_delivery_exchange,
    calculate_routing_key,
    declare_native_delayed_delivery_exchanges_and_queues,
    level_name,
)

from bench.harness import percentile
from chaos.rabbitmq import RabbitMQ

DEST = "bench.dest"
# About what a Celery task message of the project weighs (headers and a JSON body of two UUIDs).
PAD = "x" * 700


@dataclass
class Config:
    spec: str
    queue_type: str
    rate: float
    advanced: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, spec: str) -> Config:
        queue_type, rate, *rest = spec.split(":")
        advanced = dict(item.split("=", 1) for item in (rest[0].split(",") if rest else []))
        return cls(spec, queue_type, float(rate), advanced)

    def erlang(self) -> str:
        return ", ".join(f"{{{key}, {value}}}" for key, value in self.advanced.items())


@dataclass
class Result:
    config: Config
    published: int
    publish_s: float
    measured: int
    late: list[float]
    missing: int
    depths: list[tuple[float, dict[str, int]]]

    def row(self) -> str:
        p = (percentile(self.late, 0.5), percentile(self.late, 0.99), max(self.late, default=float("nan")))
        return (
            f"| {self.config.spec} | {self.published:,} in {self.publish_s:.1f} s | {p[0]:.2f} s | {p[1]:.2f} s | "
            f"{p[2]:.2f} s | {len(self.late):,} of {self.measured:,} |"
        )


def queue_depths(rabbit: RabbitMQ) -> dict[str, int]:
    node = rabbit.nodes[0]
    request = urllib.request.Request(f"http://127.0.0.1:{node.management_port}/api/queues?columns=name,messages")
    request.add_header("Authorization", "Basic " + base64.b64encode(b"guest:guest").decode())
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (http://, the private node's own)
        return {q["name"]: int(q.get("messages") or 0) for q in json.load(response)}


def run(
    config: Config, mode: str, window: float, lead: float, min_delay: int, max_delay: int, depths: bool, confirm: bool
) -> Result:
    rabbit = RabbitMQ(management=depths, advanced=config.erlang())
    try:
        url = rabbit.url
        with Connection(url) as conn:
            declare_native_delayed_delivery_exchanges_and_queues(conn, config.queue_type)
            dest = Queue(
                DEST, Exchange(DEST, type="topic"), routing_key=DEST, queue_arguments={"x-queue-type": "quorum"}
            )
            dest.bind(conn.channel()).declare()
            bind_queue_to_native_delayed_delivery_exchange(conn, dest)

        arrivals: dict[int, float] = {}
        stop = threading.Event()

        def consume() -> None:
            with Connection(url) as conn:

                def on_message(body: dict[str, object], message: object) -> None:
                    arrivals[int(str(body["i"]))] = time.time()
                    message.ack()  # type: ignore[attr-defined]  # kombu's Message, untyped

                with Consumer(conn, [dest], callbacks=[on_message], accept=["json"], prefetch_count=200):
                    while not stop.is_set():
                        try:
                            conn.drain_events(timeout=0.5)
                        except TimeoutError:
                            pass

        consumer = threading.Thread(target=consume, daemon=True)
        consumer.start()

        due: dict[int, float] = {}
        opened = time.time()
        if mode == "upfront" and confirm:  # the window opens once every message is published (~150 a second)
            lead = max(lead, 5 + config.rate * window / 150)
        t0 = opened + lead  # the window opens
        sampled: list[tuple[float, dict[str, int]]] = []
        # Confirmed each (``--confirm``, the default, as the worker's re-enqueues are), or not, as bench_brokers.py
        # publishes its countdowns. Unconfirmed, the connection stays open until the end: messages still in the
        # channel when it closes are dropped (seen: two thirds of 1,200 published in half a second never arrived).
        # Flow control may hold a burst of unconfirmed publishes for seconds: a write waits for it.
        publisher = Connection(url, transport_options={"confirm_publish": confirm, "write_timeout": 600})
        conn = publisher
        producer = Producer(conn.channel(), exchange=Exchange(level_name(27), type="topic"), serializer="json")

        def publish(i: int, countdown: int) -> None:
            now = time.time()
            producer.publish(
                {"i": i, "pad": PAD}, routing_key=calculate_routing_key(countdown, DEST), delivery_mode=2, timeout=600,
                declare=[],
            )  # fmt: skip
            due[i] = now + countdown

        started = time.perf_counter()
        if mode == "upfront":
            for i in range(int(config.rate * window)):
                target = t0 + i / config.rate
                publish(i, max(1, math.ceil(target - time.time())))
            publish_s = time.perf_counter() - started
            end = t0 + window
        else:
            rng = random.Random(1)
            end = t0 + window
            i = 0
            next_sample = time.time()
            while (now := time.time()) < end:
                goal = started + i / config.rate
                if time.perf_counter() < goal:
                    time.sleep(goal - time.perf_counter())
                    continue
                publish(i, rng.randint(min_delay, max_delay))
                i += 1
                if depths and now >= next_sample:
                    sampled.append((now - t0, queue_depths(rabbit)))
                    next_sample = now + 5
            publish_s = time.perf_counter() - started
        published = len(due)
        # Measured: the messages due inside the window (steady: after the delay queues filled up).
        first = opened + max_delay if mode == "steady" else t0
        measured = [i for i, d in due.items() if first <= d <= end]
        if mode == "steady" and not measured:
            raise SystemExit("nothing due in the measured part: --lead + --window must exceed --max-delay")
        last_due = max(due[i] for i in measured)
        deadline = last_due + 120
        next_sample = time.time()
        while time.time() < deadline and not all(i in arrivals for i in measured):
            if depths and time.time() >= next_sample:
                sampled.append((time.time() - t0, queue_depths(rabbit)))
                next_sample = time.time() + 5
            time.sleep(0.2)
        stop.set()
        consumer.join(timeout=5)
        publisher.close()
        late = [arrivals[i] - due[i] for i in measured if i in arrivals]
        return Result(config, published, publish_s, len(measured), late, len(measured) - len(late), sampled)
    finally:
        rabbit.close()


def print_depths(result: Result) -> None:
    print(f"\n{result.config.spec}: messages in each queue (s from the window's opening; empty queues left out)")
    for at, depth in result.depths:
        held = {name.replace("celery_delayed_", "L"): n for name, n in sorted(depth.items()) if n}
        print(f"  {at:6.0f} s  {held}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", default=["quorum:10", "quorum:40", "quorum:100", "classic:40"])
    parser.add_argument("--mode", choices=["upfront", "steady"], default="upfront")
    parser.add_argument("--window", type=float, default=60, help="seconds over which the messages fall due")
    parser.add_argument("--lead", type=float, default=10, help="seconds from the first publish to the window")
    parser.add_argument("--min-delay", type=int, default=10, help="steady: shortest countdown (s)")
    parser.add_argument("--max-delay", type=int, default=130, help="steady: longest countdown (s)")
    parser.add_argument("--depths", action="store_true", help="sample every queue's length (management API)")
    parser.add_argument(
        "--confirm", action=argparse.BooleanOptionalAction, default=True, help="wait for a confirm after each publish"
    )
    args = parser.parse_args()
    results = []
    for spec in args.configs:
        result = run(
            Config.parse(spec),
            args.mode,
            args.window,
            args.lead,
            args.min_delay,
            args.max_delay,
            args.depths,
            args.confirm,
        )
        print(f"{spec}: {result.row()}  (missing {result.missing})", flush=True)
        if args.depths:
            print_depths(result)
        results.append(result)
    load = os.getloadavg()
    print(
        f"\nmode {args.mode}, confirm {args.confirm}, window {args.window:g} s, lead {args.lead:g} s; "
        f"load average {load[0]:.2f} {load[1]:.2f}"
    )
    print("| delay queues : due a second [: rabbit settings] | published | lateness p50 | p99 | max | arrived |")
    print("|---|---|---:|---:|---:|---:|")
    for result in results:
        print(result.row())


if __name__ == "__main__":
    main()
