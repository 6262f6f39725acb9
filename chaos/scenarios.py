"""The chaos scenarios: each runs on a fresh system and returns one row of figures.

Sizes come from ``Size`` (``--size smoke`` for CI, ``full`` for the figures in
docs/reliability.md); outages are scaled by ``size.time_scale`` and say so in their notes.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import psycopg

from chaos.failover import ReplicatedPostgres
from chaos.harness import ACTIVE, API_KEY, Postgres, Row, System, system
from config.settings import Settings


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
    node_down_s: float
    partition_s: float
    partition_runs: int
    partition_jobs: int
    partition_db: bool  # also the partition from PostgreSQL
    # The scenarios run on RabbitMQ by default (``--broker both`` or ``rabbitmq`` without ``--only``), None for
    # every one. At smoke size only those where the broker decides what is lost: kill -9 of the workers, a
    # cluster node killed, a partition from the broker; the rest exercise the same code on either broker.
    rabbitmq_scenarios: str | None = None


SIZES = {
    "smoke": Size(
        jobs=30, kills=2, pg_short_s=3, pg_long_s=10, outage_s=6, in_flight=20, hostile_cases=120, timeout_s=120,
        node_down_s=5, partition_s=5, partition_runs=1, partition_jobs=30, partition_db=False,
        rabbitmq_scenarios="a,h,j",
    ),
    "full": Size(
        jobs=1000, kills=5, pg_short_s=20, pg_long_s=300, outage_s=120, in_flight=1000, hostile_cases=10_000,
        timeout_s=900, node_down_s=30, partition_s=60, partition_runs=10, partition_jobs=90, partition_db=True,
    ),
}  # fmt: skip


def label(name: str, broker: str) -> str:
    return f"{name} [{broker}]"


def kill9_workers(size: Size, broker: str) -> Row:
    """a. kill -9 of every worker process, ``size.kills`` times, while jobs are submitted and polled."""
    row = Row(label("a. kill -9 every worker", broker))
    with system(broker=broker) as s:
        ids = s.submit("kill", size.jobs)
        for _ in range(size.kills):
            time.sleep(random.uniform(1.0, 3.0))
            for worker in s.workers:
                worker.kill9()  # the supervisor starts them again, as Kubernetes would
            time.sleep(1.0)
        started = time.monotonic()
        s.settled("kill", size.timeout_s)
        send_again_never_stored(
            s,
            row,
            "kill",
            ids,
            broker,
            size.timeout_s,
            why="taken from Redis by a killed worker before kombu recorded them",
        )
        row.recover_s = time.monotonic() - started
        return s.count(row, "kill", len(ids))


def send_again_never_stored(
    s: System, row: Row, prefix: str, ids: list[str], broker: str, timeout: float, *, why: str
) -> None:
    """Once the system has settled: the requests of ``prefix`` that left no row. kombu's Redis transport
    removes a message with BRPOP and records it as unacked only once the reply has arrived, so a message
    whose worker died (or whose reply a partition dropped) in between is gone: its request was never
    stored. The caller finds no callback and sends it again with the same request id, as the contract
    allows (a replay if it was stored after all), and the note says how many. RabbitMQ keeps a delivered
    message until it is acked: nothing is sent again there, and a request never stored counts as lost."""
    stored = s.states(prefix)
    missing = [i for i in range(len(ids)) if ids[i] not in stored]
    if missing and broker == "rabbitmq":
        row.notes.append(f"{len(missing)} requests never stored (not sent again)")
    elif missing:
        s.submit(prefix, len(ids), only=missing)
        row.notes.append(
            f"{len(missing)} requests {why} (never stored): sent again by the caller with the same request id"
        )
        s.wait_ended(prefix, len(ids), timeout)


def redis_flush_and_restart(size: Size, broker: str) -> Row:
    """b. FLUSHALL mid-run, then a restart of the broker mid-run. On Redis a request that was only in
    Redis when it was flushed was never accepted: it is counted apart (never_accepted), not as lost. On
    RabbitMQ Redis holds only the fleet's rate limit and circuit breaker, so the flush takes no message,
    and the restart is of the RabbitMQ node (its quorum queues on disk)."""
    row = Row(label("b. Redis FLUSHALL + broker restart", broker))
    with system(broker=broker) as s:
        first = s.submit("flush", size.jobs // 2)
        time.sleep(1.5)
        client = s.redis.client()
        waiting = s.queued()
        client.flushall()
        stored_before = len(s.states("flush"))
        row.notes.append(
            f"FLUSHALL with {waiting} messages in the broker; {stored_before} requests were stored by then"
        )
        second = s.submit("flush2", size.jobs // 2)
        time.sleep(1.5)
        if s.rabbitmq is not None:
            node = s.rabbitmq.nodes[0]
            node.stop()
            node.start()
        else:
            s.redis.restart()
        started = time.monotonic()
        s.wait_ended("flush", len(first) if s.rabbitmq else stored_before, size.timeout_s)
        s.wait_ended("flush2", len(second), size.timeout_s)
        row.recover_s = time.monotonic() - started
        stuck = [(r, st) for r, st in {**s.states("flush"), **s.states("flush2")}.items() if st in ACTIVE]
        if stuck:
            row.notes.append(f"not ended: {stuck[:5]}")
        # On Redis, requests flushed before any worker stored them were never accepted.
        if s.rabbitmq is None:
            row.never_accepted = len(first) - len(s.states("flush"))
        s.count(row, "flush", len(first))
        second_row = s.count(Row("b2"), "flush2", len(second))
        row.submitted += second_row.submitted
        row.ended += second_row.ended
        row.lost += second_row.lost
        row.requests = second_row.requests
        return row


def postgres_down(size: Size, broker: str, seconds: float, note: str) -> Row:
    """c. PostgreSQL stopped while requests keep arriving: none may be lost, however long."""
    row = Row(label(f"c. PostgreSQL down {seconds:g} s{note}", broker))
    with system(broker=broker) as s:
        assert isinstance(s.pg, Postgres)
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


def api_faults_and_outage(size: Size, broker: str) -> Row:
    """d. Every kind of fault once, then an outage of every endpoint with jobs in flight: the
    requests made during the outage are bounded (each job backs off on its own)."""
    row = Row(label(f"d. API faults + {size.outage_s:g} s outage", broker))
    with system(broker=broker) as s:
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


def warm_shutdown(size: Size, broker: str) -> Row:
    """e. TERM (warm shutdown) of a worker holding countdown messages, then a new worker."""
    row = Row(label("e. TERM a worker with countdowns", broker))
    # Countdown messages are off by default (every wait is parked in PostgreSQL); this scenario
    # turns them on, as a deployment may, to check what a worker holds survives its TERM.
    countdowns = {"APERTURE_POLL_INTERVAL_S": "3", "APERTURE_POLL_INITIAL_S": "3", "APERTURE_MAX_COUNTDOWN_S": "5"}
    with system(workers=1, env=countdowns, broker=broker) as s:
        ids = s.submit("term", size.jobs)
        time.sleep(2.0)  # first polls are now countdown messages in the worker's memory
        s.workers[0].stop(timeout=60)  # stays down: the supervisor leaves a stopped process alone
        s.workers[0].restart()
        started = time.monotonic()
        s.wait_ended("term", len(ids), size.timeout_s)
        row.recover_s = time.monotonic() - started
        return s.count(row, "term", len(ids))


def end_both(s: System, row: Row, first: tuple[str, int], second: tuple[str, int], since: float, timeout: float) -> Row:
    """Waits until both batches of requests (prefix, how many) ended, then fills ``row`` with both:
    ``recover_s`` from ``since`` (the end of the fault)."""
    for prefix, n in (first, second):
        s.wait_ended(prefix, n, timeout)
    row.recover_s = time.monotonic() - since
    a = s.count(Row("first"), *first)
    s.count(row, *second)
    row.submitted, row.ended, row.lost = a.submitted + row.submitted, a.ended + row.ended, a.lost + row.lost
    return row


def postgres_failover(size: Size, broker: str) -> Row:
    """i. The PostgreSQL primary killed with kill -9 mid-run and its synchronous replica promoted, as a
    managed database fails over: the workers and the dispatcher carry on without a restart (their next
    connection goes to the host that accepts writes), and every row committed before the kill is there."""
    row = Row(label("i. PostgreSQL primary kill -9, replica promoted", broker))
    with system(broker=broker, replicated_db=True) as s:
        assert isinstance(s.pg, ReplicatedPostgres)
        before = s.submit("fo", size.jobs // 2)
        s.wait_ended("fo", len(before) // 3, size.timeout_s)  # some ended, the rest stored or in flight
        committed = s.states("fo")
        promote_s = s.pg.fail_over()
        during = s.submit("fo2", size.jobs // 2)
        end_both(s, row, ("fo", len(before)), ("fo2", len(during)), time.monotonic(), size.timeout_s)
        after = s.states("fo")
        gone = [r for r in committed if r not in after]
        # A job that had ended before the kill must not be running again (its end was committed).
        undone = [r for r, st in committed.items() if st not in ACTIVE and after.get(r) in ACTIVE]
        row.lost += len(gone) + len(undone)
        ended_before = sum(1 for st in committed.values() if st not in ACTIVE)
        row.notes.append(
            f"{len(committed)} requests committed before the kill ({ended_before} ended): {len(gone)} gone, "
            f"{len(undone)} undone after it; replica promoted in {promote_s:.1f} s"
        )
        if s.restarts:
            row.unexpected.append(f"{s.restarts} processes exited and were restarted")
        return row


def rabbitmq_node_killed(size: Size, broker: str) -> list[Row]:
    """h. A 3-node RabbitMQ cluster: the node leading the quorum queues killed with kill -9 while requests
    arrive and jobs are polled, requests sent while it is down, then the node brought back. A confirmed
    message is on a majority of the nodes, so none is lost; the workers reconnect to another node."""
    if broker != "rabbitmq":
        return []  # a scenario of RabbitMQ's own
    row = Row(label("h. RabbitMQ leader node kill -9 (3 nodes)", broker))
    with system(broker=broker, rabbitmq_nodes=3) as s:
        assert s.rabbitmq is not None
        before = s.submit("node", size.jobs // 2)
        time.sleep(2.0)
        leader = s.rabbitmq.wait_for_leader("aperture.poll")
        led = [str(q["name"]) for q in s.rabbitmq.queues() if q["leader"] == leader.name]
        leader.kill9()
        elected = s.rabbitmq.wait_for_leader("aperture.poll")
        during = s.submit("node2", size.jobs // 2)
        time.sleep(size.node_down_s)
        leader.start()
        end_both(s, row, ("node", len(before)), ("node2", len(during)), time.monotonic(), size.timeout_s)
        row.notes.append(
            f"killed {leader.name}, leader of {len(led)} queues ({', '.join(sorted(led)[:4])}...); "
            f"aperture.poll led by {elected.name} next; {len(during)} requests sent while it was down "
            f"{size.node_down_s:g} s"
        )
        return [row]


# A partition from the broker runs with production's task time limits, not the harness's 10 s. During
# the partition a worker's main process is blocked in a broker call (an ack on Redis) and reads no
# results from its pool; a soft limit shorter than the partition then fires, once it runs again, for
# tasks that had finished a minute earlier, and each replaces a pool process. That is the harness's
# fast clock hurting itself, not what a deployed worker (120 s soft limit) does after a 60 s partition.
# The limits are the settings' defaults, and the visibility timeout the one they derive from them
# (longest retry backoff plus the hard limit), not numbers written again here.
_DEFAULTS = Settings.model_construct()
_PRODUCTION_LIMITS = {
    "APERTURE_TASK_SOFT_TIME_LIMIT_S": str(_DEFAULTS.task_soft_time_limit_s),
    "APERTURE_TASK_TIME_LIMIT_S": str(_DEFAULTS.task_time_limit_s),
    "APERTURE_VISIBILITY_TIMEOUT_S": str(_DEFAULTS.redis_visibility_timeout_s),
}


def partitioned(size: Size, broker: str, server: str) -> Row:
    """j. Every packet between the system's processes and ``server`` (the broker, or PostgreSQL)
    dropped for ``size.partition_s``, then let through again: nothing is refused, connections hang. Jobs
    are in flight when it starts, more requests come once it healed. The fleet must be back to full
    speed within 10 s of the heal: the first job ends within 10 s, and every job ends."""
    row = Row(label(f"j. {size.partition_s:g} s partition from {server}", broker))
    from_broker = server == "the broker"
    with system(
        broker=broker,
        partition="broker" if from_broker else "database",
        env=_PRODUCTION_LIMITS if from_broker else None,
    ) as s:
        assert s.partition is not None
        before = s.submit("part", size.partition_jobs * 2 // 3)
        time.sleep(2.0)  # jobs being created and polled
        s.partition.cut()
        time.sleep(size.partition_s)
        s.partition.heal()
        healed = time.monotonic()
        after = s.submit("part2", size.partition_jobs // 3)
        first_end = _first_end_after(s, ["part", "part2"], healed, timeout=size.timeout_s)
        for prefix in ("part", "part2"):
            s.settled(prefix, size.timeout_s)
        send_again_never_stored(
            s,
            row,
            "part",
            before,
            broker,
            size.timeout_s,
            why="taken from Redis (BRPOP) whose reply the partition dropped",
        )
        end_both(s, row, ("part", len(before)), ("part2", len(after)), healed, size.timeout_s)
        row.notes.append(f"first job ended {first_end:.1f} s after the heal; every job {row.recover_s:.1f} s after")
        if first_end > 10:
            row.unexpected.append(f"no job ended for {first_end:.0f} s after the partition healed (at most 10)")
        if s.restarts:
            row.unexpected.append(f"{s.restarts} processes exited and were restarted")
        return row


def _first_end_after(s: System, prefixes: list[str], since: float, timeout: float) -> float:
    """Seconds from ``since`` until a job of ``prefixes`` not ended at ``since`` ends."""

    def ended() -> set[str]:
        done: set[str] = set()
        for prefix in prefixes:
            try:
                done |= {r for r, st in s.states(prefix).items() if st not in ACTIVE}
            except psycopg.OperationalError:
                pass
        return done

    already = ended()
    while time.monotonic() - since < timeout:
        if ended() - already:
            break
        time.sleep(0.2)
    return time.monotonic() - since


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


SCENARIOS: dict[str, Callable[[Size, str], Row | list[Row]]] = {
    "a": kill9_workers,
    "b": redis_flush_and_restart,
    "c": lambda size, broker: [
        postgres_down(size, broker, size.pg_short_s, ""),
        postgres_down(
            size, broker, size.pg_long_s, " (past every retry window)" if size.pg_long_s >= 240 else " (scaled)"
        ),
    ],
    "d": api_faults_and_outage,
    "e": warm_shutdown,
    "h": rabbitmq_node_killed,
    "i": postgres_failover,
    "j": lambda size, broker: [
        *(partitioned(size, broker, "the broker") for _ in range(size.partition_runs)),
        *([partitioned(size, broker, "PostgreSQL")] if size.partition_db else []),
    ],
}


def hostile_and_canary(size: Size, broker: str) -> Row:
    """f + g. Hostile messages (see chaos/hostile.py), then the canary key everywhere."""
    from chaos.hostile import send_hostile

    row = Row(label(f"f. {size.hostile_cases} hostile messages + g. canary", broker))
    with system(broker=broker) as s:
        send_hostile(s, size.hostile_cases, row, timeout=size.timeout_s)
        return canary(s, row)


SCENARIOS["f"] = hostile_and_canary
# Scenarios a to i, in the order they run (f includes g).
ORDER = "a,b,c,d,e,f,h,i,j"
