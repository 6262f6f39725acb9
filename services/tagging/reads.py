"""Read-only questions about jobs, for operators (`aperture jobs ...`) and for metrics.

Nothing here writes: every function takes a Session and only SELECTs.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from dataclasses import dataclass, field

from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.orm import Session, selectinload

from config import Settings
from models import ACTIVE_JOB_STATES, LOOKED_AT_JOB_STATES, ApiAttempt, Asset, Job, JobState
from services.callers import metric_label
from services.tagging.capacity import open_jobs


class UnknownJob(LookupError):
    pass


def stuck_condition(now: dt.datetime, settings: Settings) -> ColumnElement[bool]:
    """Active jobs nobody is looking after: the look they wait for (its due time, its message's
    send, or its holder's lease, whichever is latest) is overdue by more than the time after which a
    message counts as lost (the dispatcher should have re-sent it), or they are past their deadline
    and still not ended."""
    overdue = now - dt.timedelta(seconds=settings.lost_message_after_s)
    awaited = func.greatest(Job.next_poll_at, Job.dispatched_at, Job.leased_until)
    looked_at = Job.state.in_(LOOKED_AT_JOB_STATES) & or_(
        Job.next_poll_at.is_(None), awaited < overdue, Job.deadline_at < now
    )
    # A request in a pack is moved by its pack's end: past its own deadline, the pack is stuck.
    return looked_at | ((Job.state == JobState.PACKED) & (Job.deadline_at < now))


def list_jobs(
    session: Session,
    *,
    now: dt.datetime,
    settings: Settings,
    states: tuple[str, ...] = (),
    older_than: dt.timedelta | None = None,
    stuck: bool = False,
    caller: str | None = None,
    limit: int = 50,
) -> list[Job]:
    """Newest first."""
    query = select(Job)
    if caller is not None:
        query = query.where(Job.caller == caller)
    if states:
        query = query.where(Job.state.in_(states))
    if older_than is not None:
        query = query.where(Job.created_at < now - older_than)
    if stuck:
        # Flagged jobs too: Vidmob may hold a second, paid job for them; a person should look.
        query = query.where(stuck_condition(now, settings) | Job.duplicate_risk)
    return list(session.execute(query.order_by(Job.created_at.desc()).limit(limit)).scalars())


# The start of a job id (at least 6 hex digits, hyphens as in the id): `aperture jobs list` shows 8.
_ID_PREFIX = re.compile(r"^(?=(?:-*[0-9a-fA-F]){6})[0-9a-fA-F-]{6,35}$")


def find_job(session: Session, ident: str) -> Job:
    """By job id, request id or the start of a job id (unique), with its assets and their tags loaded."""
    assets = selectinload(Job.assets)
    options = (assets.selectinload(Asset.tags), assets.selectinload(Asset.reused_from))
    job = None
    try:
        job_id = uuid.UUID(ident)
    except ValueError:
        pass
    else:
        job = session.execute(select(Job).where(Job.id == job_id).options(*options)).scalar_one_or_none()
    if job is None:
        # A request id is a key per caller, and a reused one has refusals beside it: the key's holder,
        # when one caller holds it.
        holders = select(Job).where(Job.request_id == ident, Job.key_conflict_of.is_(None)).options(*options)
        found = session.execute(holders.limit(2)).scalars().all()
        if len(found) > 1:
            raise UnknownJob(f"several callers use request id {ident!r}: give the job id (`aperture jobs list`)")
        job = found[0] if found else None
    if job is None and _ID_PREFIX.match(ident):
        # The start of a job id, as `aperture jobs list` shows it: a range on the primary key.
        digits = ident.replace("-", "").lower()
        low, high = uuid.UUID(digits.ljust(32, "0")), uuid.UUID(digits.ljust(32, "f"))
        ids = session.execute(select(Job.id).where(Job.id.between(low, high)).limit(2)).scalars().all()
        if len(ids) > 1:
            raise UnknownJob(f"several jobs have an id starting with {ident!r}: give more of it")
        if ids:
            job = session.execute(select(Job).where(Job.id == ids[0]).options(*options)).scalar_one()
    if job is None:
        raise UnknownJob(f"no job with id or request id {ident!r}")
    return job


@dataclass(frozen=True)
class PackView:
    """Batching (services/tagging/packing.py), as `aperture jobs show` tells it: for a request, the
    pack whose Vidmob job served (or serves) it; for a pack, its members."""

    pack_id: uuid.UUID
    state: str
    vidmob_job_id: str | None
    submitted_at: dt.datetime | None
    error: str | None
    members: int
    assets: int
    member_request_ids: tuple[str, ...] = ()  # of a pack: the first ones, oldest first


def pack_view(session: Session, job: Job, *, list_members: int = 20) -> PackView | None:
    """None for a request never packed."""
    pack_id = job.id if job.is_pack else job.packed_in_job_id
    if pack_id is None:
        return None
    pack = session.execute(
        select(Job.state, Job.vidmob_job_id, Job.submitted_at, Job.error, Job.asset_count).where(Job.id == pack_id)
    ).first()
    if pack is None:  # deleted since
        return None
    members = select(Job.request_id).where(Job.packed_in_job_id == pack_id)
    count = session.execute(select(func.count()).select_from(members.subquery())).scalar_one()
    firsts: tuple[str, ...] = ()
    if job.is_pack:
        firsts = tuple(session.execute(members.order_by(Job.created_at).limit(list_members)).scalars())
    return PackView(
        pack_id, pack.state, pack.vidmob_job_id, pack.submitted_at, pack.error, count, pack.asset_count, firsts
    )


def attempts_of(session: Session, job_id: uuid.UUID, limit: int = 200) -> list[ApiAttempt]:
    return list(
        session.execute(
            select(ApiAttempt).where(ApiAttempt.job_id == job_id).order_by(ApiAttempt.id).limit(limit)
        ).scalars()
    )


# --- for metrics ------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobCounts:
    by_state: dict[str, int]
    stuck: int
    duplicate_risk: int = 0
    open: int = 0  # Vidmob jobs open at once (services/tagging/capacity.py)
    open_cap: int = 0
    # Active jobs by (caller, state), and those waiting for a slot by caller: configured callers and
    # ``default`` by name, every other caller as ``other`` (metrics keep a bounded set of labels).
    active_by_caller: dict[tuple[str, str], int] = field(default_factory=dict)
    waiting_by_caller: dict[str, int] = field(default_factory=dict)

    @property
    def in_flight(self) -> int:
        return sum(self.by_state.get(s.value, 0) for s in ACTIVE_JOB_STATES)


def job_counts(session: Session, *, now: dt.datetime, settings: Settings) -> JobCounts:
    by_state = {state.value: 0 for state in JobState}
    for state, count in session.execute(select(Job.state, func.count()).group_by(Job.state)):
        by_state[JobState(state).value] = count
    # Served by the partial index on active jobs: cheap however many finished jobs there are.
    stuck = session.execute(select(func.count()).select_from(Job).where(stuck_condition(now, settings))).scalar_one()
    flagged = session.execute(select(func.count()).select_from(Job).where(Job.duplicate_risk)).scalar_one()
    opened = open_jobs(session, settings=settings, now=now)
    active: dict[tuple[str, str], int] = {}
    waiting: dict[str, int] = {}
    rows = session.execute(
        select(Job.caller, Job.state, Job.waiting_since.is_not(None), func.count())
        .where(Job.state.in_(ACTIVE_JOB_STATES))
        .group_by(Job.caller, Job.state, Job.waiting_since.is_not(None))
    )
    for caller, state, is_waiting, count in rows:
        label = metric_label(caller, settings)
        key = (label, JobState(state).value)
        active[key] = active.get(key, 0) + count
        if is_waiting and state == JobState.SUBMITTING:
            waiting[label] = waiting.get(label, 0) + count
    return JobCounts(by_state, stuck, flagged, opened, settings.max_open_jobs, active, waiting)


@dataclass(frozen=True)
class Completion:
    polls: int
    seconds_to_complete: float


def completion_since(session: Session, job_id: uuid.UUID, since: dt.datetime) -> Completion | None:
    """The job's figures if it completed at or after ``since`` (when the caller's task began):
    so a task that completed a job counts it once, and a duplicate message that found the job
    already complete does not count it again."""
    row = session.execute(
        select(Job.poll_count, Job.created_at, Job.completed_at).where(
            Job.id == job_id, Job.state == JobState.COMPLETE, Job.completed_at >= since
        )
    ).first()
    if row is None:
        return None
    return Completion(row.poll_count, max(0.0, (row.completed_at - row.created_at).total_seconds()))


# --- usage by caller (aperture callers) ---------------------------------------------------------


@dataclass
class Usage:
    """What one caller used since a time, and what it has now."""

    caller: str
    requests: int = 0
    rejected: int = 0
    assets_sent: int = 0  # carried by its Vidmob jobs (its packs' included)
    assets_reused: int = 0  # answered from earlier tags, no Vidmob call
    vidmob_jobs: int = 0
    api_calls: int = 0
    waiting: int = 0  # for a slot under the open-jobs cap, now


def usage_by_caller(session: Session, *, since: dt.datetime, settings: Settings) -> dict[str, Usage]:
    """Every caller with a request since ``since`` or waiting now, by name (the (caller, created_at)
    index bounds the rows read: a job is submitted within its deadline of its creation)."""
    found: dict[str, Usage] = {}

    def of(caller: str) -> Usage:
        return found.setdefault(caller, Usage(caller))

    recent = Job.created_at >= since
    for caller, requests, rejected in session.execute(
        select(Job.caller, func.count(), func.count().filter(Job.state == JobState.REJECTED))
        .where(recent, Job.is_pack.is_(False))
        .group_by(Job.caller)
    ):
        of(caller).requests, of(caller).rejected = requests, rejected
    submitted = and_(Job.created_at >= since - dt.timedelta(seconds=settings.job_deadline_s), Job.submitted_at >= since)
    for caller, jobs, sent in session.execute(
        select(Job.caller, func.count(), func.coalesce(func.sum(Job.sent_assets), 0))
        .where(submitted)
        .group_by(Job.caller)
    ):
        of(caller).vidmob_jobs, of(caller).assets_sent = jobs, int(sent or 0)
    for caller, reused in session.execute(
        select(Job.caller, func.count())
        .join(Asset, Asset.job_id == Job.id)
        .where(recent, Asset.reused_from_asset_id.is_not(None))
        .group_by(Job.caller)
    ):
        of(caller).assets_reused = reused
    for caller, calls in session.execute(
        select(Job.caller, func.count())
        .join(ApiAttempt, ApiAttempt.job_id == Job.id)
        .where(
            Job.created_at >= since - dt.timedelta(seconds=settings.job_deadline_s), ApiAttempt.attempted_at >= since
        )
        .group_by(Job.caller)
    ):
        of(caller).api_calls = calls
    for caller, waiting in session.execute(
        select(Job.caller, func.count())
        .where(Job.waiting_since.is_not(None), Job.state == JobState.SUBMITTING)
        .group_by(Job.caller)
    ):
        of(caller).waiting = waiting
    return found
