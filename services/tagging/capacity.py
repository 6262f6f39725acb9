"""A cap on Vidmob tagging jobs open at once (``APERTURE_MAX_OPEN_JOBS``), and who gets a free slot.

Open means Vidmob holds the job or is about to: rows in ``polling``, and rows in ``submitting``
whose create call is under way (an intent attempt of unknown outcome, younger than a lease).
A submission that finds no slot for it is not sent: its row stays ``submitting``, parked in
PostgreSQL (never a message in the broker), with ``waiting_since`` set. Every submission's check and
its intent row, and every admission, are taken under one transaction-level advisory lock, so
concurrent workers never overshoot the cap.

Admission (``APERTURE_ADMISSION``):

- ``fair`` (the default): the waiting submissions, and the one being checked, are ranked in weighted
  fair order across callers. A caller's k-th waiting submission (``interactive`` before ``bulk``, then
  first come first served) ranks at (its open jobs + k) / its weight (``APERTURE_CALLERS``, 1 by
  default): a caller with fewer slots in use than its share goes first, so an application sending a
  few requests is not queued behind another's thousands, and two that both wait get the slots in
  proportion to their weights. With ``free`` slots, the first ``free`` of that order may go. A slot
  freed (a job's end, in the transaction that ends it; a create call that failed and will be tried
  again later) makes the next waiting submissions due at once: the dispatcher's next pass sends them.
  A waiting submission also looks again by itself after ``APERTURE_LOST_MESSAGE_AFTER_S`` (or the
  poll interval, if longer): a safety net only, for a slot freed in a way nothing announces (an
  intent that outlived its lease, a cap raised), never what admits work in the ordinary course.
- ``recheck``: each waiting submission looks again after the poll interval, in no particular order
  (the behaviour before admission had an order, kept to measure against: bench/bench_fairness.py).

A pack counts as one job of its caller: requests of different callers never share a pack
(services/tagging/packing.py).
"""

from __future__ import annotations

import datetime as dt
import uuid
import zlib
from dataclasses import dataclass

from sqlalchemy import ColumnElement, and_, exists, func, literal_column, or_, select, text, update
from sqlalchemy.orm import Session

from config import Settings, get_settings
from models import ApiAttempt, Job, JobState
from services.durable import lifecycle
from services.durable.messages import Outcome
from services.durable.schedule import jittered, lease_until
from services.tagging.claims import SubmitClaim
from services.tagging.kind import KIND

_LOCK_KEY = zlib.crc32(b"aperture.max_open_jobs")
BULK = "bulk"
# A caller's turns: interactive before bulk, then first come first served. Written with the literal, as
# the index of the turns (ix_jobs_waiting_turns) has it, so that PostgreSQL reads them in that order.
_BULK_LAST = Job.priority == literal_column("'bulk'")


def _open(settings: Settings, now: dt.datetime) -> ColumnElement[bool]:
    """Jobs Vidmob holds or is being asked to create: served by the partial and (state, created_at)
    indexes over active rows, cheap however many jobs have ended."""
    # An intent older than a lease belongs to a worker that died mid-call: its row is taken over
    # (and counted again) by the next claim.
    live_since = now - (lease_until(now, settings) - now)
    creating = exists().where(
        and_(ApiAttempt.job_id == Job.id, ApiAttempt.outcome == "unknown", ApiAttempt.attempted_at > live_since)
    )
    return or_(Job.state == JobState.POLLING, and_(Job.state == JobState.SUBMITTING, creating))


def open_jobs(session: Session, *, settings: Settings, now: dt.datetime) -> int:
    """How many jobs are open now (the metrics' gauge, the cap's count)."""
    count: int = session.execute(select(func.count()).select_from(Job).where(_open(settings, now))).scalar_one()
    return count


def _waiting() -> ColumnElement[bool]:
    return and_(Job.waiting_since.is_not(None), Job.state == JobState.SUBMITTING)


def fair_order(
    session: Session, *, settings: Settings, now: dt.datetime, candidate: SubmitClaim | None = None, limit: int | None
) -> list[uuid.UUID]:
    """The waiting submissions (and ``candidate``, the one being checked, if it is not waiting yet),
    in the order free slots go to them; the first ``limit`` (None: all).

    No caller needs more than ``limit`` of its own to fill ``limit`` slots, so only each caller's first
    ``limit`` waiting rows are read (an index scan each, on ``ix_jobs_waiting_turns``), and they are ranked
    here: this runs under the cap's lock at every job's end, with thousands of submissions waiting."""
    opened: dict[str, int] = {
        caller: n
        for caller, n in session.execute(
            select(Job.caller, func.count()).where(_open(settings, now)).group_by(Job.caller)
        )
    }
    waiting = _waiting()
    if candidate is not None:
        waiting = and_(waiting, Job.id != candidate.row_id)
    callers = set(session.execute(select(Job.caller).where(waiting).distinct()).scalars())
    newcomer = None
    if candidate is not None:
        newcomer = session.execute(
            select(Job.id, Job.caller, Job.priority, func.coalesce(Job.waiting_since, now)).where(
                Job.id == candidate.row_id
            )
        ).one_or_none()
        if newcomer is not None:
            callers.add(newcomer[1])
    ranked: list[tuple[float, dt.datetime, str, uuid.UUID]] = []
    for caller in callers:
        turns = (
            select(Job.id, Job.priority, Job.waiting_since)
            .where(waiting, Job.caller == caller)
            .order_by(_BULK_LAST, Job.waiting_since, Job.id)
        )
        if limit is not None:
            turns = turns.limit(limit)
        # (waiting_since is set on every waiting row: the query's condition)
        rows: list[tuple[uuid.UUID, str, dt.datetime]] = [(r[0], r[1], r[2] or now) for r in session.execute(turns)]
        if newcomer is not None and newcomer[1] == caller:
            rows.append((newcomer[0], newcomer[2], newcomer[3]))
        rows.sort(key=lambda r: (r[1] == BULK, r[2], str(r[0])))
        weight = settings.callers[caller].weight if caller in settings.callers else 1.0
        for k, (row_id, _priority, since) in enumerate(rows if limit is None else rows[:limit], start=1):
            ranked.append(((opened.get(caller, 0) + k) / weight, since, str(row_id), row_id))
    ranked.sort()
    chosen = ranked if limit is None else ranked[:limit]
    return [row_id for *_, row_id in chosen]


def _lock(session: Session) -> None:
    session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})


def hold_if_full(session: Session, claim: SubmitClaim, *, settings: Settings, now: dt.datetime) -> Outcome | None:
    """The submit step's check, in its claim's transaction: None to go ahead (the intent row
    written next in this transaction counts the job as open), else the row parked, waiting. The
    lock is held until that transaction commits."""
    cap = settings.max_open_jobs
    if not cap:
        return None
    _lock(session)
    count = open_jobs(session, settings=settings, now=now)
    free = cap - count
    if free > 0 and (
        settings.admission == "recheck"
        or claim.row_id in fair_order(session, settings=settings, now=now, candidate=claim, limit=free)
    ):
        if claim.waiting_since is not None:
            session.execute(update(Job).where(Job.id == claim.row_id).values(waiting_since=None))
        return None
    if free > 0:
        # Others come first: the slots are theirs, and they are made due now if nothing did yet.
        admit_waiting(session, settings=settings, now=now)
        reason = f"waiting for a free slot: others come first in fair order (APERTURE_MAX_OPEN_JOBS={cap})"
    else:
        reason = f"waiting for a free slot: {count} Vidmob jobs open (APERTURE_MAX_OPEN_JOBS={cap})"
    # Held back, not tried: the claim's count of submission attempts is given back. Parked whatever
    # APERTURE_MAX_COUNTDOWN_S says: work beyond the cap waits in PostgreSQL, and the dispatcher sends
    # its look when due: when a slot frees (fair), or after the poll interval (recheck; fair's safety net).
    values = {
        "error": reason,
        "submit_attempts": Job.submit_attempts - 1,
        "waiting_since": func.coalesce(Job.waiting_since, now),
    }
    return lifecycle.reschedule(
        session, KIND, claim, state=JobState.SUBMITTING, delay_s=jittered(_recheck_s(settings), settings),
        settings=settings, now=now, values=values, park=True,
    )  # fmt: skip


def _recheck_s(settings: Settings) -> float:
    """When a waiting submission looks again by itself: after the poll interval (recheck), or as a
    safety net only (fair: a freed slot is announced; thousands of waiting rows must not poll the cap)."""
    if settings.admission == "recheck":
        return settings.poll_interval_s
    return max(settings.poll_interval_s, settings.lost_message_after_s)


def admit_waiting(session: Session, *, settings: Settings, now: dt.datetime) -> list[uuid.UUID]:
    """Slots may have been freed in this transaction: the waiting submissions they go to, in fair
    order, made due now (the dispatcher's next pass sends them). Which ones it made due."""
    cap = settings.max_open_jobs
    if not cap or settings.admission != "fair":
        return []
    _lock(session)
    free = cap - open_jobs(session, settings=settings, now=now)
    if free <= 0:
        return []
    admitted = fair_order(session, settings=settings, now=now, limit=free)
    for row_id in admitted:
        lifecycle.due_by(session, KIND, row_id, now)
    return admitted


def on_job_ended(session: Session, job_id: uuid.UUID, state: JobState, now: dt.datetime) -> Outcome:
    """The tagging kind's end hook: a job that ended may have held a slot, which the next waiting
    submission gets at once. A pack's members never held one (their pack did)."""
    settings = get_settings()
    if settings.max_open_jobs and settings.admission == "fair":
        member = session.execute(
            select(Job.packed_in_job_id.is_not(None) & Job.submitted_at.is_(None)).where(Job.id == job_id)
        ).scalar_one_or_none()
        if not member:
            admit_waiting(session, settings=settings, now=now)
    return Outcome()


@dataclass(frozen=True)
class Place:
    """A waiting submission's place in the order free slots go (1: the next one), of ``waiting``."""

    place: int
    waiting: int


def place_of(session: Session, job_id: uuid.UUID, *, settings: Settings, now: dt.datetime) -> Place | None:
    """Where a waiting submission stands (None: not waiting). In ``recheck`` admission there is no
    order: its place is None too."""
    if settings.admission != "fair":
        return None
    if not session.execute(select(_waiting()).select_from(Job).where(Job.id == job_id)).scalar_one_or_none():
        return None
    order = fair_order(session, settings=settings, now=now, limit=None)
    if job_id not in order:
        return None
    return Place(order.index(job_id) + 1, len(order))


__all__ = ["BULK", "Place", "admit_waiting", "fair_order", "hold_if_full", "on_job_ended", "open_jobs", "place_of"]
