"""One settings class: every knob of the system, read from the environment.

Variable names are part of the public contract (architecture.md). Most are
``APERTURE_*``; the three that describe the remote service keep Vidmob's
names (``VIDMOB_API_BASE_URL``, ``VIDMOB_API_KEY``, ``VIDMOB_TAGS_DIALECT``)
so pointing a deployment at the real API is a change of those three only.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from functools import lru_cache
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from config.tasks import QueueName

# A caller's name: an application, as it names itself on Redis or as its RabbitMQ user.
CALLER_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"
DEFAULT_CALLER = "default"


class CallerSettings(BaseModel):
    """One application's rules (``APERTURE_CALLERS``, a JSON object by caller name)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Its share of the open-jobs cap and of the fleet rate limit while several callers wait: slots go in
    # proportion to weights.
    weight: float = Field(1.0, gt=0, le=1000)
    # Where its callbacks may go. None: a caller's own names only (a queue named like itself or
    # starting "<caller>.", tasks starting "<caller>."); the default caller unconfigured keeps the
    # contract's rules (any queue and task not this system's or the broker's).
    callback_queues: tuple[str, ...] | None = None
    callback_task_prefixes: tuple[str, ...] | None = None
    # Assets sent to Vidmob per UTC day (reused assets do not count); None: no budget. Past it a
    # request is refused ("refuse") or waits for the next day ("wait").
    assets_per_day: int | None = Field(None, ge=0)
    over_budget: Literal["refuse", "wait"] = "refuse"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="APERTURE_", extra="ignore", frozen=True)

    # --- Infrastructure. None means "embedded": only the `aperture` CLI starts
    # embedded servers; a bare `celery -A workers` refuses to guess (see workers/application.py).
    database_url: str | None = None
    # Redis (redis://, the default and `aperture demo`'s) or RabbitMQ (amqp://): config/celery.py.
    broker_url: str | None = None
    # The fleet's rate limit and circuit breaker always live in Redis, whichever broker carries the
    # messages: this URL, or the broker's when that is Redis. Required when the broker is RabbitMQ.
    redis_url: str | None = None
    data_dir: str = ".aperture"  # where embedded PostgreSQL/Redis keep their files

    # --- The remote API.
    vidmob_api_base_url: str = Field("https://public-api.vidmob.com", validation_alias="VIDMOB_API_BASE_URL")
    vidmob_api_key: SecretStr = Field(SecretStr(""), validation_alias="VIDMOB_API_KEY")
    vidmob_tags_dialect: Literal["guide", "media"] = Field("guide", validation_alias="VIDMOB_TAGS_DIALECT")
    http_connect_timeout_s: float = 5.0
    http_read_timeout_s: float = 30.0
    # Signed result downloads are fetched only from the API's own host and these (comma-separated;
    # "*.example.com" matches its subdomains): a body must never send a worker to an internal address.
    download_hosts: str = "*.amazonaws.com,*.vidmob.com"
    # Per endpoint, fleet-wide (clients/circuit.py): after this many failures in a row the fleet
    # sends one probe per interval until the endpoint answers again. 0 turns it off.
    circuit_failure_threshold: int = Field(20, ge=0)
    circuit_probe_interval_s: float = Field(10.0, gt=0)
    # Per endpoint family (tags create, tags status, scoring submit, ...), fleet-wide (clients/ratelimit.py):
    # at most this many requests in any second, 0 for no limit (a 429's Retry-After still pauses the
    # family for the fleet). A request waits at most rate_limit_max_wait_s for its slot (and never more
    # than half the soft time limit), else its row is looked at again later.
    rate_limit_per_s: int = Field(0, ge=0)
    rate_limit_max_wait_s: float = Field(5.0, ge=0)
    # How much longer than a second each slot is held, for the spread of the delays between taking a
    # slot and Vidmob counting the request: at most R in any second at Vidmob while that spread stays
    # under it, at most R / (1 + margin) per second sent.
    rate_limit_margin_s: float = Field(0.05, ge=0, le=0.5)
    # Vidmob tagging jobs open at once (being created or polled), 0 for no cap: a job beyond it waits
    # in PostgreSQL (submitting, parked) and is looked at again after the poll interval.
    max_open_jobs: int = Field(0, ge=0)
    # Which waiting submission a free slot goes to (services/tagging/capacity.py): "fair", weighted
    # fair order across callers, first come first served within one, admitted as soon as a slot is
    # freed; "recheck", each waiting submission looks again after the poll interval, in no order.
    admission: Literal["fair", "recheck"] = "fair"

    # --- Callers (services/callers.py): the applications that send requests, by name, with their
    # weight, callback allowlist and budget. A name not here is accepted as the default caller
    # ("default"), under its own name with the rules of a caller without settings ("accept"), or its
    # request rejected with the reason ("reject").
    callers: dict[str, CallerSettings] = Field(default_factory=dict)
    unknown_caller: Literal["default", "accept", "reject"] = "default"
    # Reuse (services/tagging/reuse.py): a request whose every asset (URL, with the same dialect and
    # set of client tags) was tagged within this many seconds is answered from PostgreSQL, no Vidmob
    # call. 0 turns it off; a request's own `fresh: true` skips it.
    reuse_ttl_s: float = Field(7 * 24 * 3600.0, ge=0)
    # Batching (services/tagging/packing.py): a request of at most batch_max_request_assets assets
    # waits up to batch_window_s in a pack with others of the same dialect and client tags, and the
    # pack goes to Vidmob as ONE job of at most batch_max_assets assets (sooner when full). 0 turns it
    # off; a request's own `batch: false` skips it.
    batch_window_s: float = Field(10.0, ge=0)
    batch_max_assets: int = Field(200, ge=1, le=200)
    batch_max_request_assets: int = Field(20, ge=1, le=200)
    # Every response is read under these caps (a bigger body fails terminally; a slower one retries).
    http_max_response_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    http_max_response_s: float = Field(120.0, gt=0)

    # --- Polling. The Creative Tags guide advises polling every 5 minutes (docs/vidmob-api.md).
    poll_initial_s: float = 300.0
    poll_interval_s: float = 300.0
    poll_jitter: float = 0.1  # +/- fraction, so jobs submitted together do not poll in lockstep
    # Adaptive polling: each job's checks are the plan that minimises E[calls] + E[delay] /
    # poll_delay_per_call_s for its predicted duration (services/durable/checking.py; the model,
    # services/durable/prediction.py). The knob poll_delay_per_call_s is the detection delay one status
    # call is worth, one figure for the fleet: lower = more calls, results sooner. poll_p95_guard keeps
    # the pooled p95 delay no worse than the fixed schedule's. "fixed" keeps poll_initial_s then
    # poll_interval_s, which is also the cold start: a kind and dialect with fewer than
    # poll_model_min_jobs finished is polled on the fixed schedule.
    poll_schedule: Literal["adaptive", "fixed"] = "adaptive"
    poll_delay_per_call_s: float = Field(90.0, gt=0)
    poll_p95_guard: bool = True
    poll_min_interval_s: float = Field(15.0, ge=0)
    # The longest gap between two checks after the first (the first may come later, near the predicted
    # finish): long jobs are best checked every 10-20 minutes around their end.
    poll_max_interval_s: float = Field(1800.0, gt=0)
    # The model learns from the latest poll_model_jobs finished jobs (per kind), re-read from
    # PostgreSQL at most every poll_model_refresh_s by each worker process (a fit and its plans take
    # 0.05-0.3 s): no query per poll.
    poll_model_jobs: int = Field(500, ge=10)
    poll_model_min_jobs: int = Field(20, ge=2)
    poll_model_refresh_s: float = Field(300.0, ge=0)
    # A wait up to this long rides on a countdown message; a longer one is parked in
    # Postgres and the dispatcher enqueues it when due. 0 (the default): every wait is parked,
    # so worker memory does not grow with the jobs in flight (countdown messages sit in worker
    # RAM, at most APERTURE_WORKER_ETA_TASK_LIMIT each; docs/benchmarks.md measures both).
    # On RabbitMQ the default is every wait (RABBITMQ_MAX_COUNTDOWN_S): a countdown waits in the broker's
    # delay queues (native delayed delivery), not in a worker, so a look re-enqueues itself as the
    # specification describes, and the row's next_poll_at is only the dispatcher's net for a lost one.
    max_countdown_s: float = Field(0.0, ge=0)
    job_deadline_s: float = 24 * 3600.0
    # A dispatched message that has not run this long after it was due is presumed lost
    # (kill -9, Redis restart) and re-sent, under the same token, by the dispatcher.
    lost_message_after_s: float = 600.0

    # --- Submission retries (Celery retries first, then the dispatcher keeps trying).
    submit_max_retries: int = 5
    retry_backoff_base_s: float = 2.0
    retry_backoff_max_s: float = 300.0

    # --- The dispatcher (workers/dispatcher.py): a pass every interval, and at once again while
    # passes come back full; a pass takes due looks in batches of sweep_batch_size per kind.
    dispatch_interval_s: float = Field(1.0, gt=0)
    sweep_batch_size: int = Field(500, ge=1)
    # The dispatcher's own Prometheus metrics (0 turns them off), beside the workers' port.
    dispatcher_metrics_port: int = 9809

    # --- Scoring (docs/scoring.md). Vidmob suggests polling every 10-15 minutes; scoring takes 30-60.
    scoring_poll_initial_s: float = 900.0
    scoring_poll_interval_s: float = 600.0
    # NO_DATA_SCORING_BACKLOG: how long to wait before fetching the same round's scores again.
    scoring_backlog_wait_s: float = 600.0
    scoring_round_deadline_s: float = 24 * 3600.0
    # A media flagged for tagging waits this long for others, so one tagging job carries them all.
    tag_batch_window_s: float = 30.0
    tag_batch_max: int = Field(200, ge=1, le=200)
    # Rescores per media before it is marked needs_attention; tagging jobs likewise.
    max_rescores: int = Field(3, ge=0)
    max_tag_attempts: int = Field(3, ge=1)

    # --- What a message may hold (workers/bounded_json.py): a larger or deeper one is stored as
    # rejected with the reason, before it can reach (and crash) the prefork pool.
    max_message_bytes: int = Field(4 * 1024 * 1024, ge=64 * 1024)
    max_message_depth: int = Field(32, ge=8, le=200)

    # --- Timeouts on our own infrastructure: a locked table or a half-open socket must fail a
    # task (which is retried) rather than hold a worker forever.
    db_statement_timeout_s: float = Field(30.0, gt=0)
    # Connections each process keeps (4 more on demand): raise it to the concurrency of a worker
    # that runs the threads pool.
    db_pool_size: int = Field(2, ge=1)
    db_lock_timeout_s: float = Field(5.0, gt=0)
    broker_socket_timeout_s: float = Field(30.0, gt=0)
    broker_connect_timeout_s: float = Field(5.0, gt=0)
    # RabbitMQ only: AMQP heartbeats, so a connection to a node that is gone (a partition, a lost host) is
    # noticed within about two intervals and its unacked messages requeued by the broker. 0 turns them off.
    broker_heartbeat_s: float = Field(30.0, ge=0)
    # RabbitMQ only: the type of the broker's delay queues (Celery's native delayed delivery). quorum:
    # replicated, at-least-once between levels; classic: faster hops, but a wait on a lost node is lost (the
    # dispatcher then re-sends the look from its row, APERTURE_LOST_MESSAGE_AFTER_S after it was due).
    rabbitmq_delay_queue_type: Literal["quorum", "classic"] = "quorum"

    # --- Celery limits.
    task_soft_time_limit_s: int = 120
    task_time_limit_s: int = 150
    # Redis only: an unacked message is handed to another worker this long after it was taken. Unset, it
    # is the longest a message is held unacked by design plus a margin (``redis_visibility_timeout_s``):
    # minutes, so a worker killed with kill -9 delays what it held by minutes, not Celery's hour.
    visibility_timeout_s: int | None = Field(None, gt=0)
    # Redis only: how often each worker's timer restores messages whose visibility timeout passed
    # (kombu >= 5.7 ``unacked_restore_interval``; its scan runs every time, throttle 1).
    unacked_restore_interval_s: int = Field(10, ge=1)
    worker_eta_task_limit: int = 2000
    # Messages each worker process holds beyond the one it runs (Celery's ``worker_prefetch_multiplier``).
    # Unset: 1 on Redis, where a prefetched message taken by a worker that is killed waits out the
    # visibility timeout. On RabbitMQ, which hands a dead consumer's messages back at once, a quorum
    # queue sends a consumer its next message only once the last one's ack is committed, so a consumer
    # serves at most its prefetch per commit cycle: 4 a process, and 16 for a worker that serves
    # aperture.poll (``prefetch_multiplier_for``), whose looks are short and many and where 4 fell behind
    # with 100,000 countdowns in the broker (docs/benchmarks.md "The prefetch of the poll workers").
    worker_prefetch_multiplier: int | None = Field(None, ge=1)

    # --- Observability. A worker's main process serves Prometheus metrics on this port
    # (0 turns it off); logs are one JSON object per line unless "text".
    metrics_port: int = 9808
    # Only this host by default: a pod sets 0.0.0.0 (deploy/) so Prometheus can reach it.
    metrics_bind: str = "127.0.0.1"
    # Job counts come from PostgreSQL; a scrape reads them at most this often (per worker).
    metrics_db_cache_s: float = Field(15.0, ge=0)
    log_format: Literal["json", "text"] = "json"
    # On TERM, after running tasks finished: how long to keep going before the countdown
    # messages this worker holds are handed back to the broker (Celery >= 5.5 soft shutdown).
    worker_soft_shutdown_timeout_s: float = 10.0

    @property
    def broker_is_rabbitmq(self) -> bool:
        return is_rabbitmq_url(self.broker_url)

    @property
    def fleet_redis_url(self) -> str | None:
        """The Redis of the fleet's rate limit and circuit breaker (None: not known yet, embedded)."""
        if self.redis_url:
            return self.redis_url
        return self.broker_url if is_redis_url(self.broker_url) else None

    @model_validator(mode="before")
    @classmethod
    def _broker_defaults(cls, data: Any) -> Any:
        # A default that depends on the broker: on RabbitMQ every wait rides on a countdown message.
        if isinstance(data, dict) and "max_countdown_s" not in data and is_rabbitmq_url(data.get("broker_url")):
            data = {**data, "max_countdown_s": RABBITMQ_MAX_COUNTDOWN_S}
        return data

    @model_validator(mode="after")
    def _check_invariants(self) -> Settings:
        if self.task_soft_time_limit_s >= self.task_time_limit_s:
            raise ValueError("APERTURE_TASK_SOFT_TIME_LIMIT_S must be below APERTURE_TASK_TIME_LIMIT_S")
        if self.broker_url and not (is_redis_url(self.broker_url) or self.broker_is_rabbitmq):
            scheme = urlsplit(self.broker_url).scheme or self.broker_url
            raise ValueError(
                "APERTURE_BROKER_URL must be a Redis (redis://host:6379/0) or RabbitMQ "
                f"(amqp://user:password@host:5672/vhost) URL, not {scheme!r}"
            )
        if self.redis_url and not is_redis_url(self.redis_url):
            raise ValueError(
                f"APERTURE_REDIS_URL must be a Redis URL (redis://host:6379/0), not "
                f"{urlsplit(self.redis_url).scheme or self.redis_url!r}: "
                "the fleet rate limit and circuit breaker live in Redis"
            )
        if self.broker_is_rabbitmq and not self.redis_url:
            raise ValueError(
                "APERTURE_REDIS_URL is not set: with RabbitMQ as APERTURE_BROKER_URL, the fleet rate limit and "
                "circuit breaker still need a Redis (e.g. APERTURE_REDIS_URL=redis://localhost:6379/0)"
            )
        for name in self.callers:
            if not re.match(CALLER_PATTERN, name):
                raise ValueError(f"APERTURE_CALLERS: {name!r} is not a caller name ({CALLER_PATTERN})")
        if self.broker_is_rabbitmq:
            return self  # no visibility timeout: RabbitMQ requeues what a lost connection held unacked
        # Redis redelivers an unacked message after visibility_timeout: a countdown
        # longer than that, or one that then runs to the hard limit, would run twice.
        longest = self.longest_unacked_s
        if self.visibility_timeout_s is not None and self.visibility_timeout_s <= longest:
            raise ValueError(
                f"APERTURE_VISIBILITY_TIMEOUT_S ({self.visibility_timeout_s}) must exceed the longest "
                f"countdown plus the task time limit ({longest:g} s)"
            )
        return self

    def caller(self, name: str) -> CallerSettings | None:
        return self.callers.get(name)

    @property
    def longest_unacked_s(self) -> float:
        """The longest a worker holds a message unacknowledged by design: the longest countdown that rides
        on a message (a wait up to ``max_countdown_s``, or a transient retry's) and then the task's run, up
        to its hard time limit. Every other wait is parked in PostgreSQL."""
        return max(self.max_countdown_s, TRANSIENT_RETRY_MAX_S) + self.task_time_limit_s

    @property
    def prefetch_multiplier(self) -> int:
        """A worker's prefetch multiplier before it knows its queues (Celery's configuration)."""
        if self.worker_prefetch_multiplier is not None:
            return self.worker_prefetch_multiplier
        return RABBITMQ_PREFETCH_MULTIPLIER if self.broker_is_rabbitmq else 1

    def prefetch_multiplier_for(self, queues: Iterable[str]) -> int:
        """The multiplier of a worker that consumes ``queues``: more on RabbitMQ for one that serves the
        polls, unless APERTURE_WORKER_PREFETCH_MULTIPLIER says otherwise."""
        if self.worker_prefetch_multiplier is None and self.broker_is_rabbitmq and QueueName.POLL.value in queues:
            return RABBITMQ_POLL_PREFETCH_MULTIPLIER
        return self.prefetch_multiplier

    @property
    def redis_visibility_timeout_s(self) -> int:
        if self.visibility_timeout_s is not None:
            return self.visibility_timeout_s
        return math.ceil(self.longest_unacked_s + VISIBILITY_MARGIN_S)


# The longest backoff of a task's own retry on a transient error (a database that restarted): a
# countdown message (tasks/base.py).
TRANSIENT_RETRY_MAX_S = 60
# Above the longest a message is held unacked: a worker slow to ack after its time limit (a prefork child
# being replaced) is not taken for dead.
VISIBILITY_MARGIN_S = 30

# A day: longer than any wait a job or a scoring round has (each is timed out at its deadline).
RABBITMQ_MAX_COUNTDOWN_S = 24 * 3600.0

# A worker's prefetch multiplier on RabbitMQ, and that of a worker serving aperture.poll.
RABBITMQ_PREFETCH_MULTIPLIER = 4
RABBITMQ_POLL_PREFETCH_MULTIPLIER = 16


def is_rabbitmq_url(url: str | None) -> bool:
    return bool(url) and urlsplit(url or "").scheme in ("amqp", "amqps", "pyamqp")


def is_redis_url(url: str | None) -> bool:
    return bool(url) and urlsplit(url or "").scheme in ("redis", "rediss", "unix")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def describe_invalid(error: ValidationError) -> str:
    """One line for an operator: each invalid variable by its environment name, and why."""

    def variable(loc: tuple[int | str, ...]) -> str:
        name = str(loc[0]).upper() if loc else "SETTINGS"
        return name if name.startswith("VIDMOB_") else f"APERTURE_{name}"

    def problem(e: Any) -> str:
        # A check across variables (the model's own validator) names its variables in its message.
        if not e["loc"]:
            return str(e["msg"]).removeprefix("Value error, ")
        return f"{variable(e['loc'])}: {e['msg']}"

    problems = "; ".join(problem(e) for e in error.errors(include_url=False))
    return f"the configuration is invalid: {problems}"
