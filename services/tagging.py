"""The tagging job lifecycle: accept, submit, poll, store, end.

Every state change is a compare-and-set on ``poll_token`` (and state): a message
carrying an old token, or a second delivery of the same message, changes nothing.
Functions here take a Session and never commit; they return what must be sent
after the caller's commit (Dispatch, callbacks).

The duplicate-paid-job window: Vidmob's create endpoint has no idempotency key, so
a crash after Vidmob accepted a job and before we stored its id cannot be undone.
It is kept small (the intent row and the lease are committed before the call; the
id is stored in the very next transaction) and it is detected: the intent row stays
``unknown`` and the next claim sets ``duplicate_risk`` on the job.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from sqlalchemy import case, exists, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from clients.http import ApiError
from clients.tags import AssetAnnotation, AssetRef, ClientTag, TagsJobState, TagsJobStatus
from config import Settings
from models import ApiAttempt, Asset, CallbackStatus, Job, JobState, Tag
from services.contract import CreateJobRequest, describe_errors, parse_callback
from services.scheduling import (
    POLL_TASK,
    SUBMIT_TASK,
    Dispatch,
    backoff,
    jittered,
    lease_until,
    schedule,
)

log = logging.getLogger(__name__)

MAX_STORED_PAYLOAD_CHARS = 64_000
SUBMIT_ENDPOINTS = {"guide": "POST /v1/aperture/jobs", "media": "POST /v1/media/aperture"}


@dataclass(frozen=True)
class Accepted:
    job_id: uuid.UUID
    state: JobState
    created: bool
    error: str | None = None
    token: uuid.UUID | None = None  # held by the message that created the job


@dataclass(frozen=True)
class SubmitClaim:
    job_id: uuid.UUID
    token: uuid.UUID
    dialect: str
    attempt: int
    assets: tuple[AssetRef, ...]
    client_tags: tuple[ClientTag, ...]


@dataclass(frozen=True)
class PollClaim:
    job_id: uuid.UUID
    token: uuid.UUID
    dialect: str
    vidmob_job_id: str
    poll_count: int
    deadline_at: dt.datetime

    def past_deadline(self, now: dt.datetime) -> bool:
        return self.deadline_at <= now


@dataclass
class Outcome:
    """What a step decided, for the task to act on after commit."""

    state: JobState | None = None
    dispatch: Dispatch | None = None
    ended: bool = False  # the job reached a terminal state in this step (callback owed)
    stale: bool = False  # the token did not match: someone else owns the job now
    followups: list[Dispatch] = field(default_factory=list)  # e.g. aperture.rescore of the media it tagged


# --- accept ------------------------------------------------------------------------


def request_id_for(payload: dict[str, Any], task_id: str) -> str:
    """The caller's key, or the message's own id: a redelivered message (acks_late)
    has the same task id, so it finds the row its first delivery wrote."""
    given = payload.get("request_id")
    if isinstance(given, str) and 0 < len(given.strip()) <= 255:
        return given.strip()
    return f"celery-task:{task_id}"


def _storable(payload: Any) -> dict[str, Any]:
    text = json.dumps(payload, default=repr)
    if len(text) <= MAX_STORED_PAYLOAD_CHARS:
        return payload if isinstance(payload, dict) else {"payload": payload}
    return {"truncated": True, "size": len(text), "head": text[:MAX_STORED_PAYLOAD_CHARS]}


def accept_job(
    session: Session,
    payload: dict[str, Any],
    *,
    task_id: str,
    dialect: str,
    settings: Settings,
    now: dt.datetime,
    positional_args: tuple[Any, ...] = (),
) -> Accepted:
    """Store the request: as SUBMITTING when valid, as REJECTED with a reason when not.
    The same request_id again returns the existing job and creates nothing."""
    request_id = request_id_for(payload, task_id)
    existing = session.execute(select(Job.id, Job.state, Job.error).where(Job.request_id == request_id)).first()
    if existing:
        return Accepted(existing.id, JobState(existing.state), created=False, error=existing.error)

    error: str | None = None
    request: CreateJobRequest | None = None
    if positional_args:
        error = "aperture.create_job takes keyword arguments only (assets, client_tags, request_id, callback)"
    else:
        try:
            request = CreateJobRequest.model_validate(payload)
        except ValidationError as exc:
            error = describe_errors(exc)

    callback = request.callback if request else parse_callback(payload.get("callback"))
    values: dict[str, Any] = {
        "request_id": request_id,
        "payload": _storable(payload if not positional_args else {"args": list(positional_args), **payload}),
        "callback": callback.model_dump() if callback else None,
        "dialect": dialect,
        "deadline_at": now + dt.timedelta(seconds=settings.job_deadline_s),
    }
    if request is None:
        values |= {
            "state": JobState.REJECTED,
            "error": error,
            "asset_count": 0,
            "ended_at": now,
            "callback_status": CallbackStatus.PENDING if callback else CallbackStatus.NONE,
        }
    else:
        values |= {
            "state": JobState.SUBMITTING,
            "asset_count": len(request.assets),
            "client_tags": [t.model_dump() for t in request.client_tags],
            # The message being processed now is the job's live message: if this worker
            # dies before it is done, the sweeper takes over once the lease has passed.
            "next_poll_at": lease_until(now, settings),
            "poll_token": uuid.uuid4(),
            "poll_dispatched": False,
        }
    # ON CONFLICT: a concurrent delivery with the same request_id waits for ours and
    # then inserts nothing.
    job_id = session.execute(
        pg_insert(Job).values(**values).on_conflict_do_nothing(index_elements=[Job.request_id]).returning(Job.id)
    ).scalar_one_or_none()
    if job_id is None:
        row = session.execute(select(Job.id, Job.state, Job.error).where(Job.request_id == request_id)).one()
        return Accepted(row.id, JobState(row.state), created=False, error=row.error)
    if request is not None:
        session.execute(
            insert(Asset),
            [
                {"job_id": job_id, "position": i, "url": a.url, "external_id": a.id}
                for i, a in enumerate(request.assets)
            ],
        )
    return Accepted(job_id, JobState(values["state"]), created=True, error=error, token=values.get("poll_token"))


# --- submit ------------------------------------------------------------------------


def claim_submission(
    session: Session, job_id: uuid.UUID, token: uuid.UUID | None, *, settings: Settings, now: dt.datetime
) -> SubmitClaim | None:
    """Take the right to call Vidmob's create endpoint for this job. Held by whoever has
    the current token, or by anyone once the previous holder's lease has run out."""
    cond = Job.next_poll_at <= now
    if token is not None:
        cond = (Job.poll_token == token) | cond
    # A POST that got no HTTP answer (the worker died mid-call, a timeout, a dropped
    # connection) may have created a job at Vidmob all the same.
    unknown_before = exists().where(
        ApiAttempt.job_id == job_id,
        ApiAttempt.method == "POST",
        ApiAttempt.status_code.is_(None),
        ApiAttempt.outcome != "not_sent",
    )
    new_token = uuid.uuid4()
    row = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.state == JobState.SUBMITTING, cond)
        .values(
            poll_token=new_token,
            poll_dispatched=False,
            next_poll_at=lease_until(now, settings),
            submit_attempts=Job.submit_attempts + 1,
            duplicate_risk=Job.duplicate_risk | unknown_before,
        )
        .returning(Job.dialect, Job.submit_attempts, Job.client_tags, Job.duplicate_risk)
    ).first()
    if row is None:
        return None
    if row.duplicate_risk:
        log.warning("resubmitting job %s after an attempt with unknown outcome: Vidmob may hold a duplicate", job_id)
    assets = session.execute(
        select(Asset.url, Asset.external_id).where(Asset.job_id == job_id).order_by(Asset.position)
    ).all()
    return SubmitClaim(
        job_id=job_id,
        token=new_token,
        dialect=row.dialect,
        attempt=row.submit_attempts,
        assets=tuple(AssetRef(url=a.url, id=a.external_id) for a in assets),
        client_tags=tuple(ClientTag(label=t["label"], description=t.get("description")) for t in row.client_tags),
    )


def record_submitted(
    session: Session, claim: SubmitClaim, vidmob_job_id: str, *, settings: Settings, now: dt.datetime
) -> Outcome:
    nxt = schedule(now, jittered(settings.poll_initial_s, settings), settings)
    updated = session.execute(
        update(Job)
        .where(Job.id == claim.job_id, Job.poll_token == claim.token, Job.state == JobState.SUBMITTING)
        .values(
            state=JobState.POLLING,
            vidmob_job_id=vidmob_job_id,
            submitted_at=now,
            next_poll_at=nxt.at,
            poll_token=nxt.token,
            poll_dispatched=nxt.dispatched,
            error=None,
        )
        .returning(Job.id)
    ).first()
    if updated is None:
        # Only possible if this task outlived its lease, which the hard time limit prevents.
        log.error("job %s: Vidmob job %s was created but the job was taken over", claim.job_id, vidmob_job_id)
        return Outcome(stale=True)
    dispatch = Dispatch(POLL_TASK, claim.job_id, nxt.token, (nxt.at - now).total_seconds()) if nxt.dispatched else None
    return Outcome(state=JobState.POLLING, dispatch=dispatch)


def record_submit_error(
    session: Session, claim: SubmitClaim, error: ApiError, *, settings: Settings, now: dt.datetime
) -> Outcome:
    """A terminal error fails the job; a retryable one schedules another attempt, with
    backoff that honors Retry-After, until the job's deadline."""
    if not error.retryable:
        return _end(session, claim.job_id, claim.token, JobState.FAILED, now, error=f"submit refused: {error}")
    deadline = session.execute(select(Job.deadline_at).where(Job.id == claim.job_id)).scalar_one()
    delay = backoff(claim.attempt, settings, error.retry_after)
    if now + dt.timedelta(seconds=delay) > deadline:
        return _end(
            session,
            claim.job_id,
            claim.token,
            JobState.TIMED_OUT,
            now,
            error=f"could not submit before the deadline; last error: {error}",
        )
    nxt = schedule(now, delay, settings)
    moved = _move(session, claim.job_id, claim.token, JobState.SUBMITTING, nxt, error=str(error))
    if not moved:
        return Outcome(stale=True)
    dispatch = Dispatch(SUBMIT_TASK, claim.job_id, nxt.token, delay) if nxt.dispatched else None
    return Outcome(state=JobState.SUBMITTING, dispatch=dispatch)


# --- poll --------------------------------------------------------------------------


def claim_poll(
    session: Session, job_id: uuid.UUID, token: uuid.UUID, *, settings: Settings, now: dt.datetime
) -> PollClaim | None:
    """Take the poll that `token` stands for. A duplicate or stale message gets None."""
    new_token = uuid.uuid4()
    row = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.poll_token == token, Job.state == JobState.POLLING)
        .values(poll_token=new_token, poll_dispatched=False, next_poll_at=lease_until(now, settings))
        .returning(Job.dialect, Job.vidmob_job_id, Job.poll_count, Job.deadline_at)
    ).first()
    if row is None:
        return None
    return PollClaim(job_id, new_token, row.dialect, row.vidmob_job_id, row.poll_count, row.deadline_at)


def time_out(session: Session, claim: PollClaim, now: dt.datetime) -> Outcome:
    return _end(
        session,
        claim.job_id,
        claim.token,
        JobState.TIMED_OUT,
        now,
        error="Vidmob did not finish the job before its deadline",
    )


def record_poll(
    session: Session, claim: PollClaim, status: TagsJobStatus, *, settings: Settings, now: dt.datetime
) -> Outcome:
    if status.state is TagsJobState.COMPLETE:
        store_annotations(session, claim.job_id, status.annotations, now)
        return _end(session, claim.job_id, claim.token, JobState.COMPLETE, now, completed=True, polled=True)
    if status.state is TagsJobState.FAILED:
        detail = status.message or "; ".join(f"{k}: {v}" for k, v in status.errors.items()) or "no detail given"
        return _end(
            session, claim.job_id, claim.token, JobState.FAILED, now, error=f"Vidmob job failed: {detail}", polled=True
        )
    return _repoll(session, claim, jittered(settings.poll_interval_s, settings), settings, now, error=None)


def record_poll_error(
    session: Session, claim: PollClaim, error: ApiError, *, settings: Settings, now: dt.datetime
) -> Outcome:
    if not error.retryable:
        return _end(
            session,
            claim.job_id,
            claim.token,
            JobState.FAILED,
            now,
            error=f"status check refused: {error}",
            polled=True,
        )
    delay = min(settings.poll_interval_s, backoff(1, settings, error.retry_after))
    if error.retry_after is not None:
        delay = max(delay, error.retry_after)
    return _repoll(session, claim, delay, settings, now, error=str(error))


def _repoll(
    session: Session, claim: PollClaim, delay: float, settings: Settings, now: dt.datetime, error: str | None
) -> Outcome:
    nxt = schedule(now, delay, settings)
    if not _move(session, claim.job_id, claim.token, JobState.POLLING, nxt, error=error, polled=True):
        return Outcome(stale=True)
    dispatch = Dispatch(POLL_TASK, claim.job_id, nxt.token, delay) if nxt.dispatched else None
    return Outcome(state=JobState.POLLING, dispatch=dispatch)


def store_annotations(
    session: Session, job_id: uuid.UUID, annotations: tuple[AssetAnnotation, ...], now: dt.datetime
) -> int:
    """Upsert every tag of every asset; storing the same result twice adds nothing."""
    assets = session.execute(select(Asset.id, Asset.url, Asset.external_id).where(Asset.job_id == job_id)).all()
    by_url: dict[str, list[int]] = {}
    by_external_id: dict[str, list[int]] = {}
    for a in assets:
        by_url.setdefault(a.url, []).append(a.id)
        if a.external_id:
            by_external_id.setdefault(a.external_id, []).append(a.id)
    rows = []
    tagged: set[int] = set()
    for annotation in annotations:
        targets = by_url.get(annotation.url) or by_external_id.get(annotation.id or "", [])
        if not targets:
            log.warning("job %s: annotation for an asset we did not submit (%s)", job_id, annotation.url)
            continue
        for asset_id in targets:
            tagged.add(asset_id)
            rows.extend({"asset_id": asset_id, "category": t.category, "label": t.label} for t in annotation.tags)
    if rows:
        session.execute(
            pg_insert(Tag).values(rows).on_conflict_do_nothing(index_elements=[Tag.asset_id, Tag.category, Tag.label])
        )
    if tagged:
        session.execute(update(Asset).where(Asset.id.in_(tagged)).values(tagged_at=func.coalesce(Asset.tagged_at, now)))
    return len(rows)


# --- shared transitions ------------------------------------------------------------


def _move(
    session: Session,
    job_id: uuid.UUID,
    token: uuid.UUID,
    state: JobState,
    nxt,
    *,
    error: str | None,
    polled: bool = False,
) -> bool:
    values: dict[str, Any] = {
        "next_poll_at": nxt.at,
        "poll_token": nxt.token,
        "poll_dispatched": nxt.dispatched,
        "error": error,
    }
    if polled:
        values["poll_count"] = Job.poll_count + 1
    return (
        session.execute(
            update(Job)
            .where(Job.id == job_id, Job.poll_token == token, Job.state == state)
            .values(**values)
            .returning(Job.id)
        ).first()
        is not None
    )


def _end(
    session: Session,
    job_id: uuid.UUID,
    token: uuid.UUID,
    state: JobState,
    now: dt.datetime,
    *,
    error: str | None = None,
    completed: bool = False,
    polled: bool = False,
) -> Outcome:
    values: dict[str, Any] = {
        "state": state,
        "error": error,
        "ended_at": now,
        "next_poll_at": None,
        "poll_token": None,
        "poll_dispatched": False,
        # The callback becomes owed in the same transaction as the end, so it is never forgotten.
        "callback_status": case(
            (Job.callback.is_(None), CallbackStatus.NONE.value), else_=CallbackStatus.PENDING.value
        ),
    }
    if polled:
        values["poll_count"] = Job.poll_count + 1
    if completed:
        values["completed_at"] = now
    ended = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.poll_token == token, Job.state.in_([JobState.SUBMITTING, JobState.POLLING]))
        .values(**values)
        .returning(Job.id)
    ).first()
    if ended is None:
        return Outcome(stale=True)
    # Scored media waiting on this job are rescored (or re-tagged) in this same transaction.
    from services.scoring import on_tagging_job_ended  # here: services.scoring builds on this module

    return Outcome(state=state, ended=True, followups=on_tagging_job_ended(session, job_id, state, now))
