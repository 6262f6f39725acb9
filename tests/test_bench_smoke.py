"""`make bench` keeps working: the library benchmark, run at a tiny size, fills its database, times
every question with and without the indexes, prints its table and cleans up after itself.
No timing is asserted (a tiny library says nothing about speed: docs/benchmarks.md has the figures).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import psycopg
import pytest

from tests.conftest import ROOT, _missing

ADMIN_URL = os.environ.get("APERTURE_TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
QUESTIONS = (
    "search 2 tags, common (page of 50)",
    "search 2 tags, rare (page of 50)",
    "count 2 tags, common",
    "top 50 tags, whole library",
    "frequency, largest collection",
    "frequency, median collection",
    "frequency, last day (date range)",
    "frequency, last 7 days (date range)",
    "frequency, scoring jobs (prefix)",
)


def run_bench(*argv: str, timeout: float) -> str:
    """Run a benchmark as `make bench` does; its output, once it exited 0."""
    done = subprocess.run(
        [sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def _database_exists(name: str) -> bool:
    with psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=3) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None


def test_the_library_benchmark_runs_at_a_tiny_size():
    try:
        _database_exists("postgres")
    except psycopg.OperationalError as exc:
        _missing("PostgreSQL", str(exc))  # fails under CI
        pytest.skip(f"the benchmark needs a PostgreSQL server at {ADMIN_URL}: {exc}")

    out = run_bench("bench/bench_library.py", "--assets", "2000", "--runs", "2", "--admin-url", ADMIN_URL, timeout=120)
    assert "filled 2,200 assets" in out and "filled 20,000 tags" in out
    table = out[out.index("library queries, 2 runs indexed / 2 baseline") :]
    for question in QUESTIONS:
        [row] = [line for line in table.splitlines() if line.strip().startswith(question)]
        # answer size, p50, p95, baseline p50, p95, ratio, target
        assert len(row.split()[-7:]) == 7 and row.split()[-1] in ("met", "MISSED"), row
    database = out.split("database ", 1)[1].split()[0]
    assert not _database_exists(database), "the benchmark left its database behind"


def _need_rabbitmq(what: str) -> None:
    """Skip without RabbitMQ installed (private nodes are started from its binaries); under CI, fail."""
    from tests.support import RabbitMQUnavailable, rabbitmqctl

    try:
        rabbitmqctl("status")
    except RabbitMQUnavailable as exc:
        _missing("RabbitMQ", str(exc))  # fails under CI
        pytest.skip(f"{what} needs RabbitMQ installed: {exc}")


def test_the_broker_benchmark_runs_both_brokers_side_by_side_at_a_smoke_size():
    # jobs in flight on Redis (parked) and on a private RabbitMQ node (countdowns in its delay queues), each
    # through a real worker and dispatcher: a row for each, every look due in the window served
    _need_rabbitmq("the broker benchmark")
    out = run_bench(
        "bench/bench_brokers.py", "--jobs", "60", "--measure", "3", "--warm", "20", "--settle", "0.5",
        "--lead", "1", "--breakdown", timeout=300,
    )  # fmt: skip
    rows = {line.split("|")[1].strip(): line for line in out.splitlines() if line.startswith(("| redis", "| rabbitmq"))}
    # Each look's lateness cut in parts from the worker's own task events, every look found there
    for broker in ("redis", "rabbitmq"):
        parts = re.search(rf"{broker}, 60 in flight: lateness by part, p50/p99: (\d+) of (\d+) looks, (.*)", out)
        assert parts and parts[1] == parts[2] and int(parts[1]) > 0, out
        assert "to the worker" in parts[3] and "task to its status call" in parts[3], out
    assert set(rows) == {"redis", "rabbitmq"}, out
    assert "countdown re-enqueue" in rows["rabbitmq"] and "parked" in rows["redis"]
    for row in rows.values():
        served, due = row.rstrip(" |").rsplit("|", 1)[1].split(" of ")
        assert served.strip() == due.strip() and int(due) > 0, row
    assert "RabbitMQ against Redis: worker PSS ratio" in out


@pytest.mark.slow
def test_the_delay_chain_benchmark_runs_at_a_smoke_size():
    # RabbitMQ's delay queues alone, on a private node: every countdown due in the window arrives, and the
    # table says how late
    _need_rabbitmq("the delay chain benchmark")
    out = run_bench("bench/bench_delays.py", "--configs", "quorum:10", "--window", "3", "--lead", "2", timeout=300)
    rows = [line for line in out.splitlines() if line.startswith("| quorum:10 |")]
    assert rows, out
    arrived, due = rows[-1].rstrip(" |").rsplit("|", 1)[1].split(" of ")
    assert arrived.strip() == due.strip() and int(due) > 0, rows[-1]
    assert "lateness p50" in out


def test_the_rate_limit_benchmark_runs_at_a_smoke_size():
    # given the benchmark's own servers (chaos/harness.py): no timing is asserted, only that it
    # runs both sides and prints every figure with its baseline, ratio and target
    out = run_bench("bench/bench_ratelimit.py", "--jobs", "20", "--rate", "10", timeout=240)
    for run in ("fleet limit R=10", "baseline, no limit"):
        [line] = [line for line in out.splitlines() if line.startswith(run)]
        assert line.split()[-3] == "20/20", line  # every job ended
    for figure in (
        "busiest 1 s at Vidmob, tags create",
        "busiest 1 s at Vidmob, tags status",
        "busiest 1 s at Vidmob, all endpoints",
        "creates/s while work was waiting",
    ):
        [row] = [line for line in out.splitlines() if line.startswith(figure)]
        # fleet, baseline, ratio, target: met | MISSED
        assert row.split()[-1] in ("met", "MISSED") and len(row[len(figure) :].split()) >= 5, row


@pytest.mark.slow
def test_the_dispatcher_benchmarks_run_at_a_smoke_size():
    # a burst through one dispatcher beside its baseline, then jobs in flight through a real
    # worker and dispatcher: every figure printed, every look served (both parts in one run, and
    # the waits a large run needs to settle cut to a second)
    out = run_bench(
        "bench/bench_dispatcher.py", "all", "--looks", "500", "--dispatchers", "1",
        "--jobs", "100", "--window", "1", "--measure", "1", "--warm", "50", "--settle", "0.5", "--lead", "0.5",
        timeout=240,
    )  # fmt: skip
    assert "baseline: send_task, no database" in out
    [row] = [line for line in out.splitlines() if "1 dispatcher process" in line]
    assert "looks/s" in row and "ratio to baseline" in row, row
    [looks] = [line for line in out.splitlines() if "looks due in the first" in line]
    assert "due in the first 1 s: 100, served 100;" in looks, looks
    assert "worker PSS idle" in out and "Redis used_memory" in out


@pytest.mark.slow
def test_the_throughput_benchmark_runs_at_a_smoke_size():
    out = run_bench(
        "bench/bench_throughput.py", "--jobs", "30", "--noops", "100", "--pools", "prefork:2,threads:4",
        "--batching", "1", timeout=240,
    )  # fmt: skip
    assert "baseline: Celery no-op tasks" in out
    for pool in ("prefork -c 2", "threads -c 4", "prefork, batching on (1 s window) -c 2"):
        [row] = [line for line in out.splitlines() if f"pipeline, {pool}" in line]
        assert "(30 complete;" in row, row


def test_the_tag_storing_benchmark_runs_at_a_smoke_size():
    out = run_bench("bench/bench_tags.py", "--jobs", "5", "--assets", "3", "--tags", "4", timeout=120)
    assert "(60 rows)" in out
    assert [line.split()[0] for line in out.splitlines()[1:4]] == ["store_annotations", "baseline:", "ratio"]


@pytest.mark.slow
def test_the_reuse_benchmark_runs_at_a_smoke_size():
    # both sides run every phase, each job completes, and every phase prints its figure, baseline
    # and ratio; with reuse off every request is a Vidmob job
    out = run_bench("bench/bench_reuse.py", "--urls", "20", timeout=240)
    assert "Vidmob jobs created, and the assets they carried: reuse on, baseline (APERTURE_REUSE_TTL_S=0)" in out
    for phase, requests in (("first", 20), ("again", 20), ("30% repeat", 20), ("30% repeat, 10 per request", 2)):
        [row] = [line for line in out.splitlines() if line.startswith(f"  {phase}  ")]
        figures = row[len(phase) + 2 :].split()
        # baseline: one job per request, carrying every asset
        assert figures[0] == str(requests) and figures[3] == str(requests) and figures[6] == "20", row
    [again] = [line for line in out.splitlines() if line.startswith("  again  ")]
    assert again.split()[3] == "0" and again.split()[6] == "0", again  # reuse on: nothing sent again
    assert "the reuse lookup of a 10-asset request (EXPLAIN):" in out


def test_the_batching_benchmark_runs_at_a_smoke_size():
    # both sides send every request and see each one complete; with batching off every request is its
    # own Vidmob job, with it on 30 requests in 1 s fit one window's pack (or two: a pack opened late)
    out = run_bench("bench/bench_batching.py", "--requests", "30", "--over", "1", "--window", "2", timeout=240)
    [row] = [line for line in out.splitlines() if line.startswith("  Vidmob jobs created")]
    on, off = (int(v.replace(",", "")) for v in row.split()[3:5])
    assert off == 30 and 1 <= on <= 2, row
    for figure in ("batching on ", "baseline ", "gained "):
        assert any(line.strip().startswith(figure.strip()) and "p95" in line for line in out.splitlines()), figure


@pytest.mark.slow
def test_the_fairness_benchmark_runs_at_a_smoke_size():
    # given a cap of 4 and 0.5 s jobs (B sends one a second: under its share, as at full size): no timing
    # is asserted, only that it runs B alone, the fair order and today's, and prints every figure
    out = run_bench(
        "bench/bench_fairness.py",
        *("--cap", "4", "--job-s", "0.5", "--a-requests", "16", "--b-every", "1"),
        *("--ac-requests", "8", "--b-alone-s", "2", "--concurrency", "2"),
        timeout=240,
    )
    assert "B alone: time to complete (sent to ended) p50" in out
    for figure in ("B's p95 / B alone's p95", "cap busy while work waits", "A's share of slots while A and C wait"):
        [row] = [line for line in out.splitlines() if line.strip().startswith(figure)]
        # fair, today, ratio, target: met | MISSED
        assert row.split()[-1] in ("met", "MISSED"), row
