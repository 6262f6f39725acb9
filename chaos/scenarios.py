"""The chaos scenarios: each runs on a fresh system and returns one row of figures.

Sizes come from ``Size`` (``--size smoke`` for CI, ``full`` for the figures in
docs/reliability.md); outages are scaled by ``size.time_scale`` and say so in their notes.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from chaos.harness import ACTIVE, API_KEY, Row, System, system


@dataclass(frozen=True)
class Size:
    jobs: int
    kills: int
    pg_short_s: float
    pg_long_s: float
    outage_s: float
    in_flight: int
    hostile_cases: int
    timeout_s: float


SIZES = {
    "smoke": Size(
        jobs=30, kills=2, pg_short_s=3, pg_long_s=10, outage_s=6, in_flight=20, hostile_cases=120, timeout_s=120
    ),
    "full": Size(
        jobs=1000, kills=5, pg_short_s=20, pg_long_s=300, outage_s=120, in_flight=1000, hostile_cases=10_000,
        timeout_s=900,
    ),
}  # fmt: skip


def kill9_workers(size: Size) -> Row:
    """a. kill -9 of every worker process, ``size.kills`` times, while jobs are submitted and polled."""
    row = Row("a. kill -9 every worker")
    with system() as s:
        ids = s.submit("kill", size.jobs)
        for _ in range(size.kills):
            time.sleep(random.uniform(1.0, 3.0))
            for worker in s.workers:
                worker.kill9()  # the supervisor starts them again, as Kubernetes would
            time.sleep(1.0)
        started = time.monotonic()
        s.settled("kill", size.timeout_s)
        # A message a worker had taken from Redis (BRPOP) but not yet recorded as unacked when it was
        # killed is gone with it (kombu's Redis transport): its request was never stored. The caller
        # finds no callback and sends it again with the same request id, as the contract allows.
        stored = s.states("kill")
        missing = [i for i in range(len(ids)) if ids[i] not in stored]
        if missing:
            s.submit("kill", len(ids), only=missing)
            row.notes.append(
                f"{len(missing)} requests taken from Redis by a killed worker before kombu recorded them "
                f"(never stored): sent again by the caller with the same request id"
            )
            s.wait_ended("kill", len(ids), size.timeout_s)
        row.recover_s = time.monotonic() - started
        return s.count(row, "kill", len(ids))


def redis_flush_and_restart(size: Size) -> Row:
    """b. FLUSHALL mid-run, then a Redis restart mid-run. A request that was only in Redis when
    it was flushed was never accepted: it is counted apart (never_accepted), not as lost."""
    row = Row("b. Redis FLUSHALL + restart")
    with system() as s:
        first = s.submit("flush", size.jobs // 2)
        time.sleep(1.5)
        client = s.redis.client()
        waiting = client.llen("aperture.submit")
        client.flushall()
        stored_before = len(s.states("flush"))
        row.notes.append(f"FLUSHALL with {waiting} requests still queued; {stored_before} were stored by then")
        second = s.submit("flush2", size.jobs // 2)
        time.sleep(1.5)
        s.redis.restart()
        started = time.monotonic()
        s.wait_ended("flush", stored_before, size.timeout_s)
        s.wait_ended("flush2", len(second), size.timeout_s)
        row.recover_s = time.monotonic() - started
        stuck = [(r, st) for r, st in {**s.states("flush"), **s.states("flush2")}.items() if st in ACTIVE]
        if stuck:
            row.notes.append(f"not ended: {stuck[:5]}")
        # Requests flushed before any worker stored them were never accepted.
        stored = len(s.states("flush"))
        row.never_accepted = len(first) - stored
        s.count(row, "flush", len(first))
        second_row = s.count(Row("b2"), "flush2", len(second))
        row.submitted += second_row.submitted
        row.ended += second_row.ended
        row.lost += second_row.lost
        row.requests = second_row.requests
        return row


def postgres_down(size: Size, seconds: float, label: str) -> Row:
    """c. PostgreSQL stopped while requests keep arriving: none may be lost, however long."""
    row = Row(f"c. PostgreSQL down {seconds:g} s{label}")
    with system() as s:
        before = s.submit("pg", size.jobs // 2)
        time.sleep(1.0)
        s.pg.stop()
        during = s.submit("pgdown", size.jobs // 2)
        time.sleep(seconds)
        s.pg.start()
        started = time.monotonic()
        s.wait_ended("pg", len(before), size.timeout_s)
        s.wait_ended("pgdown", len(during), size.timeout_s)
        row.recover_s = time.monotonic() - started
        a = s.count(Row("c1"), "pg", len(before))
        b = s.count(row, "pgdown", len(during))
        row.submitted, row.ended, row.lost = a.submitted + b.submitted, a.ended + b.ended, a.lost + b.lost
        row.notes.append(f"{len(during)} requests arrived while it was down")
        return row


def api_faults_and_outage(size: Size) -> Row:
    """d. Every kind of fault once, then an outage of every endpoint with jobs in flight: the
    requests made during the outage are bounded (each job backs off on its own)."""
    row = Row(f"d. API faults + {size.outage_s:g} s outage")
    with system() as s:
        for fault in (
            {"method": "POST", "path": "/v1/aperture/jobs", "status": 500},
            {"method": "POST", "path": "/v1/aperture/jobs", "status": 503, "retry_after": 1},
            {"method": "POST", "path": "/v1/aperture/jobs", "status": 429, "retry_after": 1},
            {"method": "GET", "path": "/v1/aperture/jobs/{job_id}/status", "body": "garbage"},
            {"method": "GET", "path": "/v1/aperture/jobs/{job_id}/status", "status": 404},
            {"method": "GET", "path": "/v1/aperture/jobs/{job_id}/status", "delay_s": 6},  # over the read timeout
        ):
            s.sim_fault(times=3, **fault)
        ids = s.submit("api", size.in_flight)
        time.sleep(2.0)
        for path in ("/v1/aperture/jobs", "/v1/aperture/jobs/{job_id}/status"):
            s.sim_fault(path=path, status=503, times=-1)
        before = s.sim_stats()["requests_total"]
        time.sleep(size.outage_s)
        during = s.sim_stats()["requests_total"] - before
        s.clear_faults()
        started = time.monotonic()
        s.wait_ended("api", len(ids), size.timeout_s)
        row.recover_s = time.monotonic() - started
        s.count(row, "api", len(ids))
        per_job_min = during / max(1, len(ids)) / (size.outage_s / 60)
        row.notes.append(
            f"outage: {during} requests in {size.outage_s:g} s for {len(ids)} jobs "
            f"({during / size.outage_s:.1f}/s fleet, {per_job_min:.2f} per job per minute); "
            "a 404 for a known job and 3 timeouts failed their jobs as documented"
        )
        return row


def warm_shutdown(size: Size) -> Row:
    """e. TERM (warm shutdown) of a worker holding countdown messages, then a new worker."""
    row = Row("e. TERM a worker with countdowns")
    # Countdown messages are off by default (every wait is parked in PostgreSQL); this scenario
    # turns them on, as a deployment may, to check what a worker holds survives its TERM.
    countdowns = {"APERTURE_POLL_INTERVAL_S": "3", "APERTURE_POLL_INITIAL_S": "3", "APERTURE_MAX_COUNTDOWN_S": "5"}
    with system(workers=1, env=countdowns) as s:
        ids = s.submit("term", size.jobs)
        time.sleep(2.0)  # first polls are now countdown messages in the worker's memory
        s.workers[0].stop(timeout=60)  # stays down: the supervisor leaves a stopped process alone
        s.workers[0].restart()
        started = time.monotonic()
        s.wait_ended("term", len(ids), size.timeout_s)
        row.recover_s = time.monotonic() - started
        return s.count(row, "term", len(ids))


def canary(s: System, row: Row) -> Row:
    """g. The API key appears nowhere: logs, rows, Redis keys and values, simulator-visible errors."""
    found = []
    if API_KEY in s.logs():
        found.append("logs")
    dump = "\n".join(str(r) for r in s.pg.query("SELECT payload::text, coalesce(error, '') FROM jobs"))
    dump += "\n".join(str(r) for r in s.pg.query("SELECT coalesce(error, '') FROM api_attempts"))
    if API_KEY in dump:
        found.append("rows")
    client = s.redis.client()
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        value = client.dump(key) if kind in (b"string", b"list", b"hash", b"zset", b"set") else b""
        if API_KEY.encode() in key or (value and API_KEY.encode() in value):
            found.append(f"redis key {key!r}")
            break
    row.notes.append("canary key found in: " + ", ".join(found) if found else "canary key found nowhere")
    if found:
        row.lost += 1  # fail the row: a leak is a loss
    return row


SCENARIOS: dict[str, Callable[[Size], Row | list[Row]]] = {
    "a": kill9_workers,
    "b": redis_flush_and_restart,
    "c": lambda size: [
        postgres_down(size, size.pg_short_s, ""),
        postgres_down(size, size.pg_long_s, " (past every retry window)" if size.pg_long_s >= 240 else " (scaled)"),
    ],
    "d": api_faults_and_outage,
    "e": warm_shutdown,
}


def hostile_and_canary(size: Size) -> Row:
    """f + g. Hostile messages (see chaos/hostile.py), then the canary key everywhere."""
    from chaos.hostile import send_hostile

    row = Row(f"f. {size.hostile_cases} hostile messages + g. canary")
    with system() as s:
        send_hostile(s, size.hostile_cases, row, timeout=size.timeout_s)
        return canary(s, row)


SCENARIOS["f"] = hostile_and_canary
