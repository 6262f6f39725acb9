"""Fair admission: several applications share a capped fleet, today's order and the fair one side by side.

On a private Redis and a scratch database, with the simulator in this process taking ``--job-s`` per
job, one worker on every queue and one dispatcher, ``APERTURE_MAX_OPEN_JOBS=--cap``. Each side:

1. application A sends ``--a-requests`` at once, while application B sends one every ``--b-every``
   seconds, for as long as A's requests wait for slots;
2. once everything has ended, A and C each send ``--ac-requests`` at once (A's first), equal weights
   (0: no second phase, a diagnostic run of the first alone).

Sides: ``fair`` (``APERTURE_ADMISSION=fair``: weighted fair order across callers, a freed slot given
at once; each caller sends to its own intake queue, ``aperture.submit.<caller>``, which the worker
takes from in turn with the others, so B's requests never wait behind A's burst) and ``today``
(``APERTURE_ADMISSION=recheck``: what main did, each waiting submission looks again after the poll
interval, in no order; every caller sending to ``aperture.submit``), both with the same poll settings
(first look at 1.05 x the job's time, then every half of it), and a third run of B alone (its
requests at the same pace, to its own queue, nothing else sent), the baseline of B's times. Figures,
from the rows' own times:

- B's time to complete (sent to its end stored, as B sees it): p50 and p95 of each side; p95 / B
  alone's p95, target at most 1.5; and the p95 from its row's creation, which leaves out the time B's
  message waited in the broker before a worker took it in;
- how busy the cap is while work waits: the mean of open jobs / cap over the time some submission
  waits (a job is open from its Vidmob job's creation to its end stored); target at least 95%;
- A's share of the slots while A and C both wait in phase 2 (submissions of each in the time both
  have work waiting); target 50% +- 5%.

    python bench/bench_fairness.py [--cap 20] [--job-s 5] [--a-requests 2000] [--b-every 2] [--ac-requests 1000]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import FAST, one_row, percentile, system_env, worker_and_dispatcher
from config.tasks import QueueName, caller_queue

CALLERS: dict[str, dict[str, Any]] = {"A": {}, "B": {}, "C": {}}
ROWS = """
SELECT caller, request_id, extract(epoch FROM created_at), extract(epoch FROM submitted_at),
       extract(epoch FROM ended_at), state
FROM jobs WHERE NOT is_pack AND request_id LIKE %s
"""


@dataclass
class Row:
    caller: str
    request_id: str
    created: float
    submitted: float
    ended: float


@dataclass
class Side:
    name: str
    b_p50: float
    b_p95: float
    b_p95_stored: float
    busy: float
    a_share: float
    a_c_submissions: int
    seconds: float


def env_for(env: dict[str, Any], admission: str, cap: int, job_s: float) -> dict[str, Any]:
    return env | {
        "APERTURE_ADMISSION": admission,
        "APERTURE_MAX_OPEN_JOBS": str(cap),
        "APERTURE_CALLERS": json.dumps(CALLERS),
        "APERTURE_POLL_SCHEDULE": "fixed",
        "APERTURE_POLL_INITIAL_S": f"{1.05 * job_s:g}",
        "APERTURE_POLL_INTERVAL_S": f"{job_s / 2:g}",
        "APERTURE_POLL_JITTER": "0.05",
    }


def send(app: Any, producer: Any, caller: str, request_id: str, prefix: str, *, own_queue: bool) -> None:
    """A caller's create_job, to its own intake queue (``own_queue``) or the shared ``aperture.submit``."""
    kwargs = {
        "assets": [{"url": f"https://cdn.example.com/{prefix}/{request_id}.mp4"}],
        "request_id": request_id,
        "caller": caller,
    }
    queue = caller_queue(caller) if own_queue else QueueName.SUBMIT.value
    app.send_task("aperture.create_job", kwargs=kwargs, queue=queue, producer=producer)


def count(conn: psycopg.Connection[Any], prefix: str, condition: str) -> int:
    (n,) = one_row(conn, f"SELECT count(*) FROM jobs WHERE request_id LIKE %s AND {condition}", (f"{prefix}%",))  # noqa: S608
    return int(n)


def wait_ended(conn: psycopg.Connection[Any], prefix: str, n: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while count(conn, prefix, "ended_at IS NOT NULL") < n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{prefix}: not every request ended after {timeout:g} s")
        time.sleep(0.2)


def rows(conn: psycopg.Connection[Any], prefix: str) -> list[Row]:
    found = conn.execute(ROWS, (f"{prefix}%",)).fetchall()
    bad = [r[1] for r in found if r[5] != "complete"]
    if bad:
        raise RuntimeError(f"{len(bad)} requests did not complete, e.g. {bad[:3]}")
    return [Row(r[0], r[1], float(r[2]), float(r[3]), float(r[4])) for r in found]


def run_b(prefix: str, every: float, until: Any, *, own_queue: bool) -> dict[str, float]:
    """B's requests, one every ``every`` seconds while ``until()`` is false (at least one): when each
    was sent (epoch seconds, as the rows' times are), by request id."""
    from workers import app

    began, sent = time.monotonic(), dict[str, float]()
    with app.producer_or_acquire() as producer:
        while not sent or not until():
            time.sleep(max(0.0, began + len(sent) * every - time.monotonic()))
            request_id = f"{prefix}b-{len(sent)}"
            sent[request_id] = time.time()
            send(app, producer, "B", request_id, prefix, own_queue=own_queue)
    return sent


def b_times(b_rows: list[Row], sent: dict[str, float]) -> tuple[float, float, float]:
    """B's p50 and p95 time to complete from its send, and its p95 from its row's creation."""
    from_send = [r.ended - sent[r.request_id] for r in b_rows]
    from_stored = [r.ended - r.created for r in b_rows]
    return percentile(from_send, 0.5), percentile(from_send, 0.95), percentile(from_stored, 0.95)


def busy_while_waiting(all_rows: list[Row], cap: int) -> float:
    """The mean of min(open, cap) / cap over the time at least one submission waits."""
    events: list[tuple[float, int, int]] = []  # (time, d_open, d_waiting)
    for r in all_rows:
        events += [(r.created, 0, 1), (r.submitted, 1, -1), (r.ended, -1, 0)]
    events.sort()
    opened = waiting = 0
    busy = waited = 0.0
    for (t, d_open, d_wait), (t_next, _, _) in zip(events, [*events[1:], events[-1]], strict=True):
        opened += d_open
        waiting += d_wait
        if waiting > 0:
            busy += min(opened, cap) / cap * (t_next - t)
            waited += t_next - t
    return busy / waited if waited else float("nan")


def a_share(phase2: list[Row]) -> tuple[float, int]:
    """A's share of the submissions made while A and C both had work waiting."""
    a = [r for r in phase2 if r.caller == "A"]
    c = [r for r in phase2 if r.caller == "C"]
    start = max(min(r.created for r in a), min(r.created for r in c))
    end = min(max(r.submitted for r in a), max(r.submitted for r in c))
    a_n = sum(start <= r.submitted <= end for r in a)
    c_n = sum(start <= r.submitted <= end for r in c)
    return (a_n / (a_n + c_n) if a_n + c_n else float("nan")), a_n + c_n


def run_side(env: dict[str, Any], name: str, admission: str, args: argparse.Namespace) -> Side:
    """One side; ``fair`` and ``B alone`` send each caller's requests to its own intake queue (unless
    ``--shared-queue``), ``today`` all of them to ``aperture.submit``, as callers did before."""
    from workers import app

    url, sim_url = env["APERTURE_DATABASE_URL"], env["VIDMOB_API_BASE_URL"]
    prefix = f"fair-{uuid.uuid4().hex[:6]}-"
    with worker_and_dispatcher(
        env_for(env, admission, args.cap, args.job_s), concurrency=args.concurrency, split=args.split
    ):
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("TRUNCATE jobs, assets, tags, api_attempts CASCADE")
            requests.post(f"{sim_url}/_sim/reset", timeout=10).raise_for_status()
            own = name != "today" and not args.shared_queue
            began = time.monotonic()
            if name == "B alone":
                b = run_b(prefix, args.b_every, lambda: time.monotonic() - began >= args.b_alone_s, own_queue=own)
                wait_ended(conn, prefix, len(b), args.timeout)
                nan = float("nan")
                return Side(name, *b_times(rows(conn, prefix), b), nan, nan, 0, 0.0)
            with app.producer_or_acquire() as producer:
                for i in range(args.a_requests):
                    send(app, producer, "A", f"{prefix}a1-{i}", prefix, own_queue=own)
            # B goes on while any of A's requests has not reached Vidmob yet.
            b = run_b(
                prefix,
                args.b_every,
                lambda: count(conn, f"{prefix}a1-", "submitted_at IS NOT NULL") >= args.a_requests,
                own_queue=own,
            )
            wait_ended(conn, prefix, args.a_requests + len(b), args.timeout)
            phase2 = f"{prefix}p2-"
            if args.ac_requests:
                with app.producer_or_acquire() as producer:
                    for caller in ("A", "C"):
                        for i in range(args.ac_requests):
                            send(app, producer, caller, f"{phase2}{caller.lower()}-{i}", prefix, own_queue=own)
                wait_ended(conn, phase2, 2 * args.ac_requests, args.timeout)
            seconds = time.monotonic() - began
            everything = rows(conn, prefix)
            second = rows(conn, phase2)
    if args.dump:
        Path(f"{args.dump}.{name}.json").write_text(json.dumps([vars(r) for r in everything]))
    share, both = a_share(second) if second else (float("nan"), 0)
    return Side(
        name,
        *b_times([r for r in everything if r.caller == "B"], b),
        busy_while_waiting(everything, args.cap),
        share,
        both,
        seconds,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cap", type=int, default=20)
    parser.add_argument("--job-s", type=float, default=5.0, help="the simulator's time per job")
    parser.add_argument("--a-requests", type=int, default=2000)
    parser.add_argument("--b-every", type=float, default=2.0)
    parser.add_argument("--ac-requests", type=int, default=1000)
    parser.add_argument("--b-alone-s", type=float, default=60.0, help="how long B sends alone, for its baseline")
    parser.add_argument("--concurrency", type=int, default=4, help="the worker's processes")
    parser.add_argument(
        "--split",
        action="store_true",
        help="two workers of half the processes each, submit and poll queues apart (docs/operations.md)",
    )
    parser.add_argument(
        "--no-today", action="store_true", help="skip today's order (a diagnostic run: make bench runs both)"
    )
    parser.add_argument(
        "--dump", help="write the fair and today sides' row times to DUMP.<side>.json, to look at a run's timeline"
    )
    parser.add_argument(
        "--shared-queue",
        action="store_true",
        help="the fair side's callers send to aperture.submit, as today's do, not each to its own intake queue",
    )
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds a phase may take after its sends")
    args = parser.parse_args()
    sim = {"pending_s": 0.1 * args.job_s, "processing_s": 0.9 * args.job_s}
    sides = (("B alone", "fair"), ("fair", "fair"), ("today", "recheck"))[: 2 if args.no_today else 3]
    results = {}
    with system_env(sim, **(FAST | {"APERTURE_BATCH_WINDOW_S": "0"})) as env:
        for name, admission in sides:
            results[name] = run_side(env, name, admission, args)
            print(f"  ({name}: done)", flush=True)
    alone, fair = results["B alone"], results["fair"]
    today = results.get("today", Side("today", *(float("nan"),) * 5, 0, float("nan")))
    print(
        f"fair admission: cap {args.cap} open Vidmob jobs, {args.job_s:g} s jobs; A sends {args.a_requests:,} at once "
        f"while B sends one every {args.b_every:g} s; then A and C {args.ac_requests:,} each at once, equal weights; "
        + (
            f"two workers (-c {max(1, args.concurrency // 2)} each, submit and poll queues apart), one dispatcher"
            if args.split
            else f"one worker (-c {args.concurrency}), one dispatcher"
        )
    )
    queues = "aperture.submit" if args.shared_queue else "each caller its own intake queue (aperture.submit.<caller>)"
    print(f"  fair and B alone send to {queues}; today to aperture.submit")
    print(
        f"  B alone: time to complete (sent to ended) p50 {alone.b_p50:.2f} s, p95 {alone.b_p95:.2f} s"
        f" (stored to ended p95 {alone.b_p95_stored:.2f} s)"
    )
    print(f"  {'':<42} {'fair':>9} {'today':>9} {'ratio':>7}")
    for label, f_value, t_value, target in (
        ("B's p50 time to complete, s", fair.b_p50, today.b_p50, ""),
        ("B's p95 time to complete, s", fair.b_p95, today.b_p95, ""),
        ("  (B's p95 from its row's creation, s)", fair.b_p95_stored, today.b_p95_stored, ""),
        ("B's p95 / B alone's p95", fair.b_p95 / alone.b_p95, today.b_p95 / alone.b_p95, "<= 1.5"),
        ("cap busy while work waits", fair.busy, today.busy, ">= 0.95"),
        ("A's share of slots while A and C wait", fair.a_share, today.a_share, "0.45..0.55"),
        ("wall seconds, both phases", fair.seconds, today.seconds, ""),
    ):
        ratio = f_value / t_value if t_value else float("nan")
        verdict = ""
        if target:
            ok = {
                "<= 1.5": f_value <= 1.5,
                ">= 0.95": f_value >= 0.95,
                "0.45..0.55": 0.45 <= f_value <= 0.55,
            }[target]
            verdict = f"  target {target}: {'met' if ok else 'MISSED'}" if not math.isnan(f_value) else "  (not run)"
        print(f"  {label:<42} {f_value:>9.3f} {t_value:>9.3f} {ratio:>7.3f}{verdict}")
    print(f"  (A and C submissions while both waited: fair {fair.a_c_submissions}, today {today.a_c_submissions})")


if __name__ == "__main__":
    main()
