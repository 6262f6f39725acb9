"""The library's activity over time, what it cost in Vidmob calls, and who asked: for the HTML report.

Taggings and jobs are counted as they happened (a URL tagged twice counts twice, a failed job
counts), per time bucket sized to the span (seconds for a demo, weeks for a year). A ``Scope``
narrows them as it narrows the library, by the job's collection and request id, and by when the
tagging was stored (for jobs: when the job was created).

Every function takes a Session and only SELECTs. Each reads the rows of its subset: about a
second per million rows on the benchmark machine, fine for a report, not for a dashboard.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Select, desc, func, literal, select
from sqlalchemy.orm import Session

from models import ApiAttempt, Asset, Job
from services.library.records import Scope

# Bucket sizes, smallest first, with the longest span each suits (about 2 to 200 buckets).
UNITS = (
    ("second", dt.timedelta(minutes=3)),
    ("minute", dt.timedelta(hours=3)),
    ("hour", dt.timedelta(days=7)),
    ("day", dt.timedelta(days=200)),
    ("week", dt.timedelta.max),
)


@dataclass(frozen=True)
class Bucket:
    start: dt.datetime  # UTC, truncated to the unit
    series: str  # what is counted: "tagged" for assets, the job's state for jobs
    count: int


@dataclass(frozen=True)
class Activity:
    unit: str  # "second" | "minute" | "hour" | "day" | "week"
    assets: tuple[Bucket, ...]  # assets tagged, series "tagged"
    jobs: tuple[Bucket, ...]  # jobs created, one series per state they are in now


@dataclass(frozen=True)
class JobCalls:
    """The Vidmob calls made for one tagging job, by outcome (ok, retryable, terminal, ...)."""

    job_id: uuid.UUID
    request_id: str
    state: str
    created_at: dt.datetime
    by_outcome: dict[str, int]

    @property
    def calls(self) -> int:
        return sum(self.by_outcome.values())


@dataclass(frozen=True)
class CallsPerJob:
    jobs: int  # jobs of the subset
    calls: int  # their Vidmob calls
    distribution: tuple[tuple[int, int], ...]  # (calls made for a job, how many jobs made that many)
    latest: tuple[JobCalls, ...]  # the latest jobs, oldest first


def _job_scope(scope: Scope) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if scope.collection is not None:
        conditions.append(Job.collection == scope.collection)
    if scope.request_id_prefix is not None:
        conditions.append(Job.request_id.startswith(scope.request_id_prefix, autoescape=True))
    if scope.tagged_since is not None:
        conditions.append(Job.created_at >= scope.tagged_since)
    if scope.tagged_until is not None:
        conditions.append(Job.created_at < scope.tagged_until)
    return conditions


def _taggings(scope: Scope, *columns: Any) -> Select[Any]:
    stmt = select(*columns).select_from(Asset).where(Asset.tagged_at.is_not(None))
    if scope.collection is not None or scope.request_id_prefix is not None:
        stmt = stmt.join(Job, Job.id == Asset.job_id).where(
            *_job_scope(Scope(collection=scope.collection, request_id_prefix=scope.request_id_prefix))
        )
    if scope.tagged_since is not None:
        stmt = stmt.where(Asset.tagged_at >= scope.tagged_since)
    if scope.tagged_until is not None:
        stmt = stmt.where(Asset.tagged_at < scope.tagged_until)
    return stmt


def unit_for(first: dt.datetime | None, last: dt.datetime | None) -> str:
    """The bucket size for a span: the smallest that makes at most about 200 buckets."""
    span = (last - first) if first is not None and last is not None else dt.timedelta(0)
    return next(unit for unit, longest in UNITS if span <= longest)


def activity(session: Session, scope: Scope | None = None) -> Activity:
    """Assets tagged and jobs created per time bucket, in one bucket size for both."""
    scope = scope or Scope()
    first_tagged, last_tagged = session.execute(
        _taggings(scope, func.min(Asset.tagged_at), func.max(Asset.tagged_at))
    ).one()
    first_job, last_job = session.execute(
        select(func.min(Job.created_at), func.max(Job.created_at)).where(*_job_scope(scope))
    ).one()
    firsts = [t for t in (first_tagged, first_job) if t is not None]
    lasts = [t for t in (last_tagged, last_job) if t is not None]
    unit = unit_for(min(firsts, default=None), max(lasts, default=None))

    tagged = func.date_trunc(unit, Asset.tagged_at, "UTC").label("start")
    asset_rows = session.execute(
        _taggings(scope, tagged, literal("tagged").label("series"), func.count()).group_by(tagged).order_by(tagged)
    ).all()
    created = func.date_trunc(unit, Job.created_at, "UTC").label("start")
    job_rows = session.execute(
        select(created, Job.state, func.count())
        # Requests: a pack (services/tagging/packing.py) is the Vidmob job several of them shared.
        .where(*_job_scope(scope), Job.is_pack.is_(False))
        .group_by(created, Job.state)
        .order_by(created, Job.state)
    ).all()
    return Activity(
        unit,
        tuple(Bucket(_utc(r[0]), r[1], r[2]) for r in asset_rows),
        tuple(Bucket(_utc(r[0]), str(getattr(r[1], "value", r[1])), r[2]) for r in job_rows),
    )


def calls_per_job(session: Session, scope: Scope | None = None, *, latest: int = 40) -> CallsPerJob:
    """How many Vidmob calls the subset's tagging jobs made: how many jobs made each number of
    calls, and the ``latest`` jobs' calls by outcome."""
    scope = scope or Scope()
    per_job = (
        select(Job.id, func.count(ApiAttempt.id).label("calls"))
        .outerjoin(ApiAttempt, ApiAttempt.job_id == Job.id)
        .where(*_job_scope(scope))
        .group_by(Job.id)
        .subquery()
    )
    jobs_n = func.count().label("jobs")
    distribution = session.execute(
        select(per_job.c.calls, jobs_n).group_by(per_job.c.calls).order_by(per_job.c.calls)
    ).all()
    recent = (
        select(Job.id, Job.request_id, Job.state, Job.created_at)
        .where(*_job_scope(scope))
        .order_by(desc(Job.created_at), desc(Job.id))
        .limit(latest)
        .subquery()
    )
    rows = session.execute(
        select(recent, ApiAttempt.outcome, func.count(ApiAttempt.id))
        .outerjoin(ApiAttempt, ApiAttempt.job_id == recent.c.id)
        .group_by(recent.c.id, recent.c.request_id, recent.c.state, recent.c.created_at, ApiAttempt.outcome)
    ).all()
    jobs: dict[uuid.UUID, tuple[str, str, dt.datetime]] = {}
    outcomes: dict[uuid.UUID, dict[str, int]] = {}
    for job_id, request_id, state, created_at, outcome, n in rows:
        jobs[job_id] = (request_id, str(getattr(state, "value", state)), created_at)
        if outcome is not None:
            outcomes.setdefault(job_id, {})[outcome] = n
    latest_jobs = [JobCalls(job_id, *facts, outcomes.get(job_id, {})) for job_id, facts in jobs.items()]
    return CallsPerJob(
        jobs=sum(n for _, n in distribution),
        calls=sum(calls * n for calls, n in distribution),
        distribution=tuple((calls, n) for calls, n in distribution),
        latest=tuple(sorted(latest_jobs, key=lambda j: (j.created_at, str(j.job_id)))),
    )


def _utc(value: dt.datetime) -> dt.datetime:
    # date_trunc(unit, timestamptz, 'UTC') gives a timestamp without time zone, in UTC.
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


@dataclass(frozen=True)
class CallerUsage:
    """What one caller's requests of the subset asked of Vidmob, and what reuse answered instead."""

    caller: str
    requests: int
    assets_tagged: int  # tagged by Vidmob for this caller's requests
    assets_reused: int  # answered from earlier tags, with no Vidmob call
    calls: int  # Vidmob API calls made for its jobs (its packs' included)


def usage_by_caller(session: Session, scope: Scope | None = None) -> tuple[CallerUsage, ...]:
    """Per caller, most requests first: requests, assets tagged by Vidmob or reused, Vidmob calls."""
    scope = scope or Scope()
    requests = dict(
        session.execute(
            select(Job.caller, func.count()).where(Job.is_pack.is_(False), *_job_scope(scope)).group_by(Job.caller)
        ).all()
    )
    tagged: dict[str, list[int]] = {}
    reused = Asset.reused_from_asset_id.is_not(None)
    for caller, fresh, copied in session.execute(
        select(Job.caller, func.count().filter(~reused), func.count().filter(reused))
        .join(Asset, Asset.job_id == Job.id)
        .where(Asset.tagged_at.is_not(None), *_job_scope(scope))
        .group_by(Job.caller)
    ):
        tagged[caller] = [fresh, copied]
    calls = dict(
        session.execute(
            select(Job.caller, func.count())
            .join(ApiAttempt, ApiAttempt.job_id == Job.id)
            .where(*_job_scope(scope))
            .group_by(Job.caller)
        ).all()
    )
    usage = []
    for c in set(requests) | set(tagged) | set(calls):
        fresh, copied = tagged.get(c, [0, 0])
        usage.append(CallerUsage(c, requests.get(c, 0), fresh, copied, calls.get(c, 0)))
    return tuple(sorted(usage, key=lambda u: (-u.requests, u.caller)))
