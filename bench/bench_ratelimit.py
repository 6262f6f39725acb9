"""Does one rate limit hold for the whole fleet?

Starts a whole system as the chaos suite does (chaos/harness.py: its own embedded PostgreSQL and
Redis, the simulator over real HTTP, ``--workers`` separate ``celery worker`` instances of
``-c --concurrency`` processes each, the dispatcher), sends ``--jobs`` tagging requests at once
and waits until every job has ended. Run twice, side by side: with the fleet limit
(``APERTURE_RATE_LIMIT_PER_S=R``) and the baseline without it (what the fleet did before: no
limit shared by its processes), on the same servers, emptied in between, each with its own processes
and a reset simulator. Figures, from the simulator's own clock:

- the most requests it saw in any 1-second window (a moving window over arrival times), per
  endpoint family: target at most R;
- creates per second while work was waiting: every request is queued at the start, so create
  work waits from the first create call to the last; (creates - 1) / (last - first). Target at
  least 0.9 R.

    python bench/bench_ratelimit.py [--jobs 2000] [--rate 20] [--workers 2] [--concurrency 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CREATE = "POST /v1/aperture/jobs"
STATUS = "GET /v1/aperture/jobs/{job_id}/status"
# A job is done 1.5 s after its creation and first polled 2 s after it: one status call per job
# when nothing is late, so the two families carry about the same load.
SIM_TIMINGS = {"pending_s": 0.5, "processing_s": 1.0}
ENV = {
    "APERTURE_POLL_INITIAL_S": "2",
    "APERTURE_POLL_INTERVAL_S": "1",
    "APERTURE_POLL_JITTER": "0.1",
    # A request deferred by the limiter (its wait would pass the cap) is tried again soon.
    "APERTURE_RETRY_BACKOFF_BASE_S": "0.5",
    "APERTURE_RETRY_BACKOFF_MAX_S": "1",
    "APERTURE_RATE_LIMIT_MAX_WAIT_S": "5",
    "APERTURE_LOG_FORMAT": "text",
    # Each job its own Vidmob job: the limiter is measured on 2,000 creates, not on the
    # handful of packs batching would make of them (bench/bench_batching.py measures that).
    "APERTURE_BATCH_WINDOW_S": "0",
}


@dataclass
class Run:
    label: str
    jobs: int
    ended: int
    wall_s: float
    busiest_create: int
    busiest_status: int
    busiest_all: int
    creates_per_s: float
    deferred: int


def wait_ended(fleet, jobs: int, timeout: float) -> int:
    # A count once a second: the simulator shares this process, and its clock is the measure.
    deadline = time.monotonic() + timeout
    ended = 0
    while time.monotonic() < deadline:
        (ended,) = fleet.pg.query("SELECT count(*) FROM jobs WHERE state NOT IN ('submitting', 'packed', 'polling')")[0]
        if ended >= jobs:
            break
        time.sleep(1.0)
    return ended


def side_env(rate: int) -> dict[str, str]:
    return ENV | {"APERTURE_RATE_LIMIT_PER_S": str(rate)}


def run(fleet, label: str, *, jobs: int, rate: int) -> Run:
    """One side on ``fleet``, whose processes run with ``side_env(rate)``."""
    started = time.monotonic()
    fleet.submit("rl", jobs)
    ended = wait_ended(fleet, jobs, timeout=max(120.0, 6.0 * jobs / max(rate, 1)))
    wall_s = time.monotonic() - started
    seen = fleet.sim_stats()["requests_per_second"]
    with fleet.sim.state.lock:
        created = sorted(job.created_at for job in fleet.sim.state.jobs.values())
    (deferred,) = fleet.pg.query("SELECT count(*) FROM api_attempts WHERE outcome = 'not_sent'")[0]
    if ended < jobs:
        print(f"  {label}: only {ended} of {jobs} jobs ended; last worker log lines:\n{fleet.logs()[-3000:]}")
    span = created[-1] - created[0] if len(created) > 1 else 0.0
    return Run(
        label=label,
        jobs=jobs,
        ended=ended,
        wall_s=wall_s,
        busiest_create=seen["max_1s_by_endpoint"].get(CREATE, 0),
        busiest_status=seen["max_1s_by_endpoint"].get(STATUS, 0),
        busiest_all=seen["max_1s"],
        creates_per_s=(len(created) - 1) / span if span > 0 else 0.0,
        deferred=deferred,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--rate", type=int, default=20, help="R: requests/s per endpoint family for the fleet")
    parser.add_argument("--workers", type=int, default=2, help="separate `celery worker` instances")
    parser.add_argument("--concurrency", type=int, default=2, help="processes per worker (-c)")
    args = parser.parse_args()
    os.chdir(ROOT)

    processes = args.workers * args.concurrency
    print(
        f"rate limit: {args.jobs:,} jobs, {args.workers} celery workers x -c {args.concurrency} = {processes} "
        f"processes, R = {args.rate} requests/s per endpoint family"
    )
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, {platform.system()}"
    )
    print(f"load average at start: {' '.join(f'{x:.1f}' for x in os.getloadavg())} (other work on this machine)")
    import requests

    from chaos.harness import system

    # One system for both runs: the baseline gets the same servers, emptied, and its own processes.
    with system(workers=args.workers, concurrency=args.concurrency, env=side_env(args.rate)) as cluster:
        config = SIM_TIMINGS | {"stats_keep_s": 3600}
        requests.post(f"{cluster.sim.url}/_sim/config", json=config, timeout=10).raise_for_status()
        fleet = run(cluster, f"fleet limit R={args.rate}", jobs=args.jobs, rate=args.rate)
        cluster.fresh_run(side_env(0))
        baseline = run(cluster, "baseline, no limit", jobs=args.jobs, rate=0)

    print(f"load average at end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"{'run':<22}{'ended':>12}{'wall s':>9}{'deferred':>10}")
    for r in (fleet, baseline):
        print(f"{r.label:<22}{f'{r.ended:,}/{r.jobs:,}':>12}{r.wall_s:>9.1f}{r.deferred:>10,}")
    print(f"{'figure':<40}{'fleet':>8}{'baseline':>10}{'ratio':>8}   target")

    def row(name: str, mine: float, base: float, target: str, met: bool, fmt: str = "{:.0f}") -> None:
        ratio = f"{mine / base:.2f}" if base else "-"
        verdict = "met" if met else "MISSED"
        print(f"{name:<40}{fmt.format(mine):>8}{fmt.format(base):>10}{ratio:>8}   {target}: {verdict}")

    limit = args.rate
    row("busiest 1 s at Vidmob, tags create", fleet.busiest_create, baseline.busiest_create, f"<= {limit}",
        fleet.busiest_create <= limit)  # fmt: skip
    row("busiest 1 s at Vidmob, tags status", fleet.busiest_status, baseline.busiest_status, f"<= {limit}",
        fleet.busiest_status <= limit)  # fmt: skip
    row("busiest 1 s at Vidmob, all endpoints", fleet.busiest_all, baseline.busiest_all, f"<= {2 * limit} (2 families)",
        fleet.busiest_all <= 2 * limit)  # fmt: skip
    row("creates/s while work was waiting", fleet.creates_per_s, baseline.creates_per_s, f">= {0.9 * limit:g}",
        fleet.creates_per_s >= 0.9 * limit, "{:.1f}")  # fmt: skip
    if fleet.ended < fleet.jobs or baseline.ended < baseline.jobs:
        sys.exit(1)


if __name__ == "__main__":
    main()
