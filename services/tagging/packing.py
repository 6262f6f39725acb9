"""Batching: small requests that arrive close together share one Vidmob job, a *pack*.

The guide says to batch assets into one job rather than create one job per asset. A request of at
most ``APERTURE_BATCH_MAX_REQUEST_ASSETS`` assets, whose caller did not say ``batch: false``, is not
sent alone: its submit step (the hold, after reuse and before the open-jobs cap) puts it in a
*pack*, and the pack goes to Vidmob as ONE job when ``APERTURE_BATCH_WINDOW_S`` has passed since
the pack opened, or at once when it holds ``APERTURE_BATCH_MAX_ASSETS`` assets.

A pack is a job row of its own (``jobs.is_pack``): no assets, no callback, its own lifecycle on the
durable engine like any job (submitted by the dispatcher when its window closes, polled adaptively
on its size, counted by the open-jobs cap, learned from by adaptive polling). Its Vidmob job carries
the assets of its members, each URL once. A member is an ordinary request row in state ``packed``
with ``packed_in_job_id``: it keeps its own assets, tags and callback.

Only requests of the same caller, dialect and set of client tags share a pack (the client tags
go to Vidmob once per job; the pack is one job of its caller under the open-jobs cap's fair order).
Joining is one transaction with the member's claim: a transaction-level advisory lock per (caller,
dialect, client tags) serializes the joins of one kind of request, so two
workers never open two packs for it at once, and the pack's row lock makes a join and the pack's
own submission (which closes it: ``pack_open_until`` is cleared by its claim) exclude each other. A
kill -9 at any point leaves either the request waiting for its submission, or a member of a pack
that PostgreSQL will send: nothing is lost, and no asset is sent twice (the pack's submission has
the engine's intent row and duplicate-risk flag like any other).

When the pack ends (the tagging kind's end hook, ``on_pack_ended``, in the transaction that ends
it):

- COMPLETE: the tags were stored on the members' own assets as the poll read them
  (services/tagging/annotations.py); every member ends COMPLETE, with its callback owed.
- FAILED or TIMED_OUT: every member is sent to Vidmob again, alone (state ``submitting``, due now,
  never packed again), so one bad asset fails only the request that carried it; the member's
  error says which pack failed and why. A member's own deadline still applies: the pack's deadline
  is the earliest of its members', so no member waits in a pack past its own.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid
import zlib
from collections.abc import Callable
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from config import Settings, get_settings
from models import Job, JobState, members_of_pack
from services.durable import lifecycle
from services.durable.messages import Outcome
from services.durable.storable import pg_safe
from services.tagging.claims import SubmitClaim
from services.tagging.kind import KIND

log = logging.getLogger(__name__)

PACK_REQUEST_PREFIX = "aperture-pack:"

# Called with the number of assets of each request that joins a pack, in the transaction that packs
# it (the worker counts them: workers/metrics.py).
JOIN_OBSERVERS: list[Callable[[int], None]] = []


def _lock_key(dialect: str, client_tags: list[dict[str, Any]], caller: str) -> int:
    """One advisory lock per kind of request that may share a pack (a caller, a set of client tags: any order)."""
    canonical = json.dumps(sorted(client_tags, key=lambda t: json.dumps(t, sort_keys=True)), sort_keys=True)
    return zlib.crc32(f"aperture.pack:{dialect}:{caller}:{canonical}".encode())


def packable(claim: SubmitClaim, settings: Settings) -> bool:
    """Whether the request held by this submit claim may wait in a pack."""
    return (
        settings.batch_window_s > 0
        and claim.batch
        and not claim.is_pack
        and claim.packed_in_job_id is None  # sent alone after its pack failed: never packed again
        and len(claim.assets) <= settings.batch_max_request_assets
    )


def join_if_packable(session: Session, claim: SubmitClaim, *, settings: Settings, now: dt.datetime) -> Outcome | None:
    """The submit step's hold: the request joins the oldest open pack of its kind with room for its
    assets (or opens one) and waits on it in state ``packed``; None to go on alone."""
    if not packable(claim, settings):
        return None
    assets = len(claim.assets)
    tags = [{"label": t.label, "description": t.description} for t in claim.client_tags]
    session.execute(select(func.pg_advisory_xact_lock(_lock_key(claim.dialect, tags, claim.caller))))
    room = (
        select(Job.id)
        .where(
            Job.pack_open_until.is_not(None),
            Job.is_pack,
            Job.state == JobState.SUBMITTING,
            Job.dialect == claim.dialect,
            # A pack is one job of one caller under the open-jobs cap's fair order.
            Job.caller == claim.caller,
            Job.client_tags.contains(tags),
            Job.client_tags.contained_by(tags),
            Job.asset_count + assets <= settings.batch_max_assets,
        )
        .order_by(Job.created_at)
        .limit(1)
        .scalar_subquery()
    )
    joined = session.execute(
        update(Job)
        # Re-checked under the pack's row lock: a pack whose submission began meanwhile is closed.
        .where(Job.id == room, Job.pack_open_until.is_not(None))
        .values(asset_count=Job.asset_count + assets, deadline_at=func.least(Job.deadline_at, claim.deadline_at))
        .returning(Job.id, Job.asset_count)
    ).first()
    if joined is not None:
        pack_id, opened = joined.id, False
        if joined.asset_count >= settings.batch_max_assets:
            # Full: sent at the dispatcher's next pass rather than when the window closes.
            lifecycle.due_by(session, KIND, pack_id, now)
    else:
        pack_id, opened = _open_pack(session, claim, tags, assets, settings=settings, now=now), True
    # Packed, not tried: the claim's count of submission attempts is given back.
    values = {"packed_in_job_id": pack_id, "submit_attempts": Job.submit_attempts - 1}
    outcome = lifecycle.wait_on(
        session, KIND, claim, state=JobState.SUBMITTING, to_state=JobState.PACKED, values=values
    )
    if outcome.stale:  # the claim was taken in this same transaction: cannot happen
        return outcome
    log.info("job %s: %d assets packed in %s pack %s", claim.row_id, assets, "a new" if opened else "the", pack_id)
    for observe in JOIN_OBSERVERS:
        observe(assets)
    return outcome


def _open_pack(
    session: Session,
    claim: SubmitClaim,
    tags: list[dict[str, Any]],
    assets: int,
    *,
    settings: Settings,
    now: dt.datetime,
) -> uuid.UUID:
    """A new pack, parked until its window closes (the dispatcher sends its submission then)."""
    pack_id = uuid.uuid4()
    closes = now + dt.timedelta(seconds=settings.batch_window_s)
    values = {
        "id": pack_id,
        "request_id": f"{PACK_REQUEST_PREFIX}{pack_id}",
        "caller": claim.caller,
        "state": JobState.SUBMITTING,
        "payload": {"pack": {"window_s": settings.batch_window_s, "max_assets": settings.batch_max_assets}},
        "callback": None,
        "client_tags": tags,
        "dialect": claim.dialect,
        "asset_count": assets,
        "deadline_at": claim.deadline_at,
        "fresh": True,  # its members were offered reuse already
        "batch": False,
        "is_pack": True,
        "pack_open_until": closes,
    }
    return lifecycle.create_parked(session, KIND, values, due_at=now if assets >= settings.batch_max_assets else closes)


def on_pack_ended(session: Session, job_id: uuid.UUID, state: JobState, now: dt.datetime) -> Outcome:
    """The tagging kind's end hook: what a pack's end means for its members (none: not a pack)."""
    waiting = members_of_pack(job_id)
    if state is JobState.COMPLETE:
        outcome = lifecycle.end_where(
            session, KIND, *waiting, state=JobState.COMPLETE, now=now, error=None, values={"completed_at": now}
        )
        if outcome.moved:
            log.info("pack %s complete: %d requests complete", job_id, len(outcome.moved))
        return outcome
    error = session.execute(select(Job.error).where(Job.id == job_id)).scalar_one_or_none()
    # Parked, due now: the dispatcher sends each one's submission at its next pass.
    resent = lifecycle.wake_where(
        session, KIND, *waiting, to_state=JobState.SUBMITTING, delay_s=0.0, settings=get_settings(), now=now,
        values={"error": pg_safe(f"its pack {job_id} ended {state.value} ({error}): sent to Vidmob alone")}, park=True,
    )  # fmt: skip
    if resent.moved:
        log.warning(
            "pack %s ended %s: its %d requests are sent to Vidmob alone", job_id, state.value, len(resent.moved)
        )
    return resent
