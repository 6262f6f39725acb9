"""Prometheus metrics of a worker, served by its main process on APERTURE_METRICS_PORT.

Two kinds:
- Counts of jobs by state, in flight and stuck, read from PostgreSQL on each scrape: the rows
  are the truth, so these survive restarts and agree across pods (every pod reports the same
  numbers: aggregate them with max(), not sum()).
- Events seen by this worker's processes: Vidmob API requests by endpoint template and status,
  their latency, retryable attempts, rejected payloads, polls per completed job, the time
  from submission to completion, the fleet rate limiter's waits, deferrals and 429 pauses, and the
  jobs and assets answered by reuse, and requests and assets packed into a shared Vidmob job (both
  counted in the transaction that decides them: one whose commit then fails, rare, is counted again
  when retried).

With the prefork pool, tasks run in child processes and the main process serves: the children
write their values to files in PROMETHEUS_MULTIPROC_DIR (prometheus_client's multiprocess mode)
and the server adds them up. Give each worker its own directory (an emptyDir in a pod). When
the variable is unset, the worker makes a private one at start. Metric objects are created on
first use, after that decision, and never in processes that record nothing (Flower). The dispatcher
serves its own metrics (workers/dispatcher.py).

Recording a metric never fails a task: errors are logged and dropped.
"""

from __future__ import annotations

import datetime as dt
import glob
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, multiprocess, start_http_server, values
from prometheus_client.core import GaugeMetricFamily, Metric

from clients.http import Attempt
from clients.ratelimit import LimiterEvent

if TYPE_CHECKING:  # imported where used: a worker that never serves metrics never loads the database layer
    from services.tagging.reads import JobCounts

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
NO_RESPONSE = "none"  # the status label of an attempt that got no HTTP response (timeout, connection)

API_LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
POLL_BUCKETS = (1, 2, 3, 4, 5, 6, 8, 10, 15, 20, 30, 50, 100)
# Vidmob jobs take minutes to hours; the deadline is a day.
# The fleet rate limiter's waits: mostly none, at most APERTURE_RATE_LIMIT_MAX_WAIT_S.
WAIT_BUCKETS = (0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60)
COMPLETION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 28800, 43200, 86400)


@dataclass(frozen=True)
class Metrics:
    api_requests: Counter
    api_request_seconds: Histogram
    api_retries: Counter
    rejected_payloads: Counter
    job_polls: Histogram
    job_seconds_to_complete: Histogram
    ratelimit_wait_seconds: Histogram
    ratelimit_deferred: Counter
    ratelimit_pauses: Counter
    reused_jobs: Counter
    reused_assets: Counter
    packed_requests: Counter
    packed_assets: Counter


_registry = CollectorRegistry(auto_describe=True)  # ours, not the default one Flower serves
_metrics: Metrics | None = None
_lock = threading.Lock()
_private_dir: str | None = None


def metrics() -> Metrics:
    global _metrics
    if _metrics is None:
        with _lock:
            if _metrics is None:
                _metrics = _create()
    return _metrics


def _create() -> Metrics:
    directory = os.environ.get(MULTIPROC_ENV)
    if directory:
        os.makedirs(directory, exist_ok=True)
    r = _registry
    return Metrics(
        api_requests=Counter(
            "aperture_api_requests",
            "Vidmob API requests, by endpoint (METHOD and path template) and HTTP status ('none': no response).",
            ["endpoint", "status"],
            registry=r,
        ),
        api_request_seconds=Histogram(
            "aperture_api_request_seconds",
            "Latency of Vidmob API requests, by endpoint.",
            ["endpoint"],
            buckets=API_LATENCY_BUCKETS,
            registry=r,
        ),
        api_retries=Counter(
            "aperture_api_retries",
            "Vidmob API attempts whose outcome is retryable (submissions and polls to be tried again), by endpoint.",
            ["endpoint"],
            registry=r,
        ),
        rejected_payloads=Counter(
            "aperture_rejected_payloads", "aperture.create_job payloads rejected for breaking the contract.", registry=r
        ),
        job_polls=Histogram(
            "aperture_job_polls",
            "Status polls a job needed, observed when it completes.",
            buckets=POLL_BUCKETS,
            registry=r,
        ),
        job_seconds_to_complete=Histogram(
            "aperture_job_seconds_to_complete",
            "Seconds from a job's submission (its row) to Vidmob reporting it complete.",
            buckets=COMPLETION_BUCKETS,
            registry=r,
        ),
        ratelimit_wait_seconds=Histogram(
            "aperture_ratelimit_wait_seconds",
            "Seconds a Vidmob request waited for the fleet's rate limit (0 included), by endpoint family.",
            ["family"],
            buckets=WAIT_BUCKETS,
            registry=r,
        ),
        ratelimit_deferred=Counter(
            "aperture_ratelimit_deferred",
            "Vidmob requests not sent because their wait for a slot would pass APERTURE_RATE_LIMIT_MAX_WAIT_S"
            " (their row is looked at again later), by endpoint family.",
            ["family"],
            registry=r,
        ),
        ratelimit_pauses=Counter(
            "aperture_ratelimit_pauses",
            "429 answers with Retry-After that paused an endpoint family for the whole fleet, by family.",
            ["family"],
            registry=r,
        ),
        reused_jobs=Counter(
            "aperture_reused_jobs",
            "Tagging jobs answered from tags PostgreSQL already held (APERTURE_REUSE_TTL_S): no Vidmob call.",
            registry=r,
        ),
        reused_assets=Counter(
            "aperture_reused_assets",
            "Assets whose tags were copied from an earlier job (of those jobs, and of jobs that sent only the rest).",
            registry=r,
        ),
        packed_requests=Counter(
            "aperture_packed_requests",
            "Tagging requests put in a pack, to share one Vidmob job with others (APERTURE_BATCH_WINDOW_S).",
            registry=r,
        ),
        packed_assets=Counter("aperture_packed_assets", "Assets of those requests.", registry=r),
    )


# --- recording (called from services/durable/attempts.py observers and from Celery signals) -------------


def observe_api_attempt(attempt: Attempt) -> None:
    try:
        m = metrics()
        status = str(attempt.status_code) if attempt.status_code is not None else NO_RESPONSE
        m.api_requests.labels(attempt.endpoint, status).inc()
        m.api_request_seconds.labels(attempt.endpoint).observe(max(0.0, attempt.latency_ms) / 1000.0)
        if attempt.outcome == "retryable":
            m.api_retries.labels(attempt.endpoint).inc()
    except Exception:  # a metric must never fail an API call
        log.warning("could not record an API attempt metric", exc_info=True)


def observe_limiter_event(event: LimiterEvent) -> None:
    try:
        m = metrics()
        if event.kind == "waited":
            m.ratelimit_wait_seconds.labels(event.family).observe(max(0.0, event.seconds))
        elif event.kind == "deferred":
            m.ratelimit_deferred.labels(event.family).inc()
        else:
            m.ratelimit_pauses.labels(event.family).inc()
    except Exception:  # a metric must never fail an API call
        log.warning("could not record a rate limiter metric", exc_info=True)


def observe_reuse(assets: int, whole: bool) -> None:
    try:
        m = metrics()
        if whole:
            m.reused_jobs.inc()
        m.reused_assets.inc(assets)
    except Exception:  # a metric must never fail a task
        log.warning("could not record a reuse metric", exc_info=True)


def observe_packing(assets: int) -> None:
    try:
        m = metrics()
        m.packed_requests.inc()
        m.packed_assets.inc(assets)
    except Exception:  # a metric must never fail a task
        log.warning("could not record a batching metric", exc_info=True)


def observe_create_job_result(result: Any) -> None:
    """aperture.create_job returns {"job_id", "state", "created"}: a payload is counted as rejected
    once, by the delivery that created its row."""
    if isinstance(result, dict) and result.get("state") == "rejected" and result.get("created") is True:
        try:
            metrics().rejected_payloads.inc()
        except Exception:  # a metric must never fail a task
            log.warning("could not record a rejected-payload metric", exc_info=True)


def observe_completion(job_id: object, task_started: dt.datetime) -> None:
    """After a poll task: if it completed its job, record the job's polls and duration."""
    try:
        import uuid

        from models.db import session_scope
        from services.tagging.reads import completion_since

        with session_scope() as session:
            done = completion_since(session, uuid.UUID(str(job_id)), task_started)
        if done is not None:
            m = metrics()
            m.job_polls.observe(done.polls)
            m.job_seconds_to_complete.observe(done.seconds_to_complete)
    except Exception:  # a metric must never fail a task
        log.warning("could not record completion metrics for job %s", job_id, exc_info=True)


# --- jobs by state, from PostgreSQL ---------------------------------------------------------


class JobsCollector:
    """Queried on each scrape; a database that does not answer gives aperture_jobs_query_up 0."""

    def describe(self) -> list[Metric]:
        return []  # collected on scrape only, never at registration

    def __init__(self, cache_s: float = 0.0) -> None:
        self._cache_s = cache_s
        self._cached: tuple[float, JobCounts] | None = None

    def _counts(self) -> JobCounts:
        # Every scrape of every pod would otherwise count the whole jobs table.
        now = time.monotonic()
        if self._cached is not None and now - self._cached[0] < self._cache_s:
            return self._cached[1]
        counts = _job_counts()
        self._cached = (now, counts)
        return counts

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("aperture_jobs_query_up", "1 if the job counts below were read from PostgreSQL.")
        try:
            counts = self._counts()
        except Exception:  # the scrape still serves the event metrics
            log.warning("metrics: could not count jobs in PostgreSQL", exc_info=True)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        by_state = GaugeMetricFamily("aperture_jobs", "Jobs by state, from PostgreSQL.", labels=["state"])
        for state, count in sorted(counts.by_state.items()):
            by_state.add_metric([state], count)
        yield by_state
        yield GaugeMetricFamily(
            "aperture_jobs_in_flight", "Jobs submitting to or being polled at Vidmob.", value=counts.in_flight
        )
        yield GaugeMetricFamily(
            "aperture_jobs_open",
            "Vidmob tagging jobs open at once (polled, or being created): what APERTURE_MAX_OPEN_JOBS caps.",
            value=counts.open,
        )
        yield GaugeMetricFamily("aperture_jobs_open_cap", "APERTURE_MAX_OPEN_JOBS (0: no cap).", value=counts.open_cap)
        by_caller = GaugeMetricFamily(
            "aperture_caller_jobs",
            "Active jobs by caller (configured callers and default by name, the rest as other) and state.",
            labels=["caller", "state"],
        )
        for (caller, state), count in sorted(counts.active_by_caller.items()):
            by_caller.add_metric([caller, state], count)
        yield by_caller
        waiting = GaugeMetricFamily(
            "aperture_caller_jobs_waiting",
            "Jobs waiting for a slot under APERTURE_MAX_OPEN_JOBS, by caller (as aperture_caller_jobs).",
            labels=["caller"],
        )
        for caller, count in sorted(counts.waiting_by_caller.items()):
            waiting.add_metric([caller], count)
        yield waiting
        yield GaugeMetricFamily(
            "aperture_jobs_duplicate_risk",
            "Jobs resubmitted after a create call whose outcome was unknown: Vidmob may hold a second job.",
            value=counts.duplicate_risk,
        )
        yield GaugeMetricFamily(
            "aperture_jobs_stuck",
            "Active jobs whose next look is overdue by more than APERTURE_LOST_MESSAGE_AFTER_S,"
            " or past their deadline.",
            value=counts.stuck,
        )


def _job_counts() -> JobCounts:
    from sqlalchemy import text

    from config import get_settings
    from models.db import session_scope
    from services.tagging.reads import job_counts

    with session_scope() as session:
        # A scrape must not hang on a locked or overloaded database.
        session.execute(text("SET LOCAL statement_timeout = 5000"))
        return job_counts(session, now=dt.datetime.now(dt.UTC), settings=get_settings())


def exposition_registry() -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.MultiProcessCollector(registry)
    else:
        registry.register(_AllOf(_registry))
    from config import get_settings

    registry.register(JobsCollector(cache_s=get_settings().metrics_db_cache_s))
    return registry


class _AllOf:
    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterable[Metric]:
        return self._registry.collect()


# --- worker lifecycle (wired in workers/signals.py) ------------------------------------------


def prepare_multiprocess_dir() -> str:
    """In the worker's main process, before the pool forks: make sure children write their values
    where the server reads them, and drop files left by earlier runs (another pid's counters)."""
    global _private_dir
    directory = os.environ.get(MULTIPROC_ENV)
    if not directory:
        directory = _private_dir = tempfile.mkdtemp(prefix="aperture-metrics-")
        os.environ[MULTIPROC_ENV] = directory
        # prometheus_client chose its value class when imported; choose again now the directory is set.
        values.ValueClass = values.get_value_class()
        if _metrics is not None:
            log.warning("metrics were created before %s was set: values from pool processes may be lost", MULTIPROC_ENV)
    os.makedirs(directory, exist_ok=True)
    mine = f"_{os.getpid()}.db"
    for path in glob.glob(os.path.join(directory, "*.db")):
        if not path.endswith(mine):
            try:
                os.remove(path)
            except FileNotFoundError:
                pass
    return directory


def serve(port: int, address: str = "127.0.0.1") -> bool:
    try:
        start_http_server(port, addr=address, registry=exposition_registry())
    except OSError as exc:
        # The worker still does its work; say loudly that it cannot be watched.
        log.error("metrics: cannot serve on port %s (%s); this worker's metrics are not exposed", port, exc)
        return False
    log.info("metrics: serving Prometheus metrics on %s:%s", address, port)
    return True


def process_exited(pid: int) -> None:
    """A pool process ended: its live-gauge files go (counters and histograms stay, so totals
    never go backwards)."""
    if os.environ.get(MULTIPROC_ENV):
        try:
            multiprocess.mark_process_dead(pid)
        except Exception:  # bookkeeping only
            log.debug("mark_process_dead failed", exc_info=True)


def cleanup() -> None:
    global _private_dir
    if _private_dir:
        shutil.rmtree(_private_dir, ignore_errors=True)
        _private_dir = None


__all__ = [
    "JobsCollector",
    "Metrics",
    "cleanup",
    "exposition_registry",
    "metrics",
    "observe_api_attempt",
    "observe_completion",
    "observe_create_job_result",
    "observe_limiter_event",
    "prepare_multiprocess_dir",
    "process_exited",
    "serve",
]
