"""A tagging job's decisions on the durable engine: submit, poll, store, end.

The duplicate-paid-job window: Vidmob's create endpoint has no idempotency key, so a crash
after Vidmob accepted a job and before we stored its id cannot be undone. It is kept small
(the intent row and the lease are committed before the call; the id is stored in the very
next transaction) and it is detected: the intent row stays ``unknown`` and the next claim
sets ``duplicate_risk`` on the job.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import exists, select, update
from sqlalchemy.engine import Row
from sqlalchemy.orm import Session

from clients.http import ApiError
from clients.tags import AssetRef, ClientTag, TagsJobStatus
from config import Settings
from models import ApiAttempt, Asset, Job, JobState
from services.durable import attempts, durations, lifecycle, policy
from services.durable.lifecycle import Claim
from services.durable.messages import Outcome
from services.durable.prediction import Prediction
from services.tagging import packing
from services.tagging.annotations import store_annotations
from services.tagging.kind import KIND
from services.tagging.policy import Complete, after_status, first_look

log = logging.getLogger(__name__)

SUBMIT_ENDPOINTS = {"guide": "POST /v1/aperture/jobs", "media": "POST /v1/media/aperture"}


@dataclass(frozen=True, kw_only=True)
class SubmitClaim(Claim):
    COLUMNS = (
        Job.dialect,
        Job.submit_attempts.label("attempt"),
        Job.client_tags,
        Job.duplicate_risk,
        Job.fresh,
        Job.batch,
        Job.is_pack,
        Job.packed_in_job_id,
    )
    # A worker that died mid-call is taken over once its lease has run out (the intent row
    # makes the possible duplicate visible).
    TAKEOVER_AFTER_LEASE = True

    dialect: str
    attempt: int
    assets: tuple[AssetRef, ...]
    client_tags: tuple[ClientTag, ...]
    duplicate_risk: bool
    fresh: bool  # the caller's `fresh: true`: never answered by reuse
    batch: bool  # the caller's consent to share a Vidmob job (services/tagging/packing.py)
    is_pack: bool  # a pack: its assets are its members'
    packed_in_job_id: uuid.UUID | None  # set once packed: a request sent alone after its pack failed

    @classmethod
    def claim_values(cls, job_id: uuid.UUID) -> dict[str, Any]:
        """What claiming a submission records: one more attempt, and the duplicate risk when an
        earlier POST's outcome is unknown (no HTTP answer: the worker died mid-call, a timeout,
        a dropped connection; or a 5xx from a gateway): Vidmob may have created a job for it."""
        unknown_before = exists().where(ApiAttempt.job_id == job_id, attempts.may_have_created_work())
        return {
            "submit_attempts": Job.submit_attempts + 1,
            "duplicate_risk": Job.duplicate_risk | unknown_before,
            # A pack whose submission begins takes no more members (services/tagging/packing.py).
            "pack_open_until": None,
        }

    @classmethod
    def from_row(cls, session: Session, row: Row[Any]) -> SubmitClaim:
        """The job's assets and client tags, as Vidmob will get them."""
        if row.duplicate_risk:
            log.warning(
                "resubmitting job %s after an attempt of unknown outcome: Vidmob may hold a duplicate", row.row_id
            )
        if row.is_pack:
            refs = packing.pack_assets(session, row.row_id)
            # Its members' assets as they are now (an operator may have ended a member meanwhile).
            session.execute(update(Job).where(Job.id == row.row_id).values(asset_count=len(refs)))
        else:
            # An asset answered by reuse (services/tagging/reuse.py) is never sent.
            assets = session.execute(
                select(Asset.url, Asset.external_id)
                .where(Asset.job_id == row.row_id, Asset.reused_from_asset_id.is_(None))
                .order_by(Asset.position)
            ).all()
            refs = tuple(AssetRef(url=a.url, id=a.external_id) for a in assets)
        return cls.of(
            row,
            assets=refs,
            client_tags=tuple(ClientTag(label=t["label"], description=t.get("description")) for t in row.client_tags),
        )


@dataclass(frozen=True, kw_only=True)
class PollClaim(Claim):
    COLUMNS = (Job.dialect, Job.vidmob_job_id, Job.poll_count, Job.asset_count, Job.submitted_at)
    OPTIMISTIC = True  # a status GET: read, call, then record with a compare-and-set

    dialect: str
    vidmob_job_id: str
    poll_count: int
    asset_count: int
    submitted_at: dt.datetime | None


# --- submit ------------------------------------------------------------------------


def record_submission(
    session: Session, claim: SubmitClaim, answer: str | ApiError, *, settings: Settings, now: dt.datetime
) -> Outcome:
    """Vidmob's job id moves the job to POLLING; an error ends it or tries again later."""
    if isinstance(answer, ApiError):
        decision = policy.after_submit_error(
            answer,
            attempt=claim.attempt,
            deadline_at=claim.deadline_at,
            now=now,
            settings=settings,
            # Not idempotent: a POST that may have created a job counts against the cap.
            unknown_outcomes=attempts.count_unknown_posts(session, KIND, claim.row_id),
            max_unknown_outcomes=settings.submit_max_retries,
        )
        return lifecycle.apply(
            session, KIND, claim, decision, state=JobState.SUBMITTING.value, settings=settings, now=now
        )
    prediction = _predict(session, claim.dialect, len(claim.assets), settings=settings, now=now)
    outcome = lifecycle.reschedule(
        session, KIND, claim, state=JobState.SUBMITTING.value, to_state=JobState.POLLING.value,
        delay_s=first_look(prediction, settings=settings), settings=settings, now=now,
        values={"vidmob_job_id": answer, "submitted_at": now},
    )  # fmt: skip
    if outcome.stale:
        # Only possible if this task outlived its lease, which the hard time limit prevents.
        log.error("job %s: Vidmob job %s was created but the job was taken over", claim.row_id, answer)
    return outcome


def _predict(session: Session, dialect: str, assets: int, *, settings: Settings, now: dt.datetime) -> Prediction | None:
    """How long Vidmob takes for a job of this size in this dialect (None: the fixed schedule)."""
    return durations.predict(session, durations.TAGGING, f"job:{dialect}", assets, settings=settings, now=now)


# --- poll --------------------------------------------------------------------------


def time_out(session: Session, claim: Claim, now: dt.datetime) -> Outcome:
    return lifecycle.end(
        session, KIND, claim, JobState.TIMED_OUT.value, now, error="Vidmob did not finish the job before its deadline"
    )


def record_poll(
    session: Session, claim: PollClaim, answer: TagsJobStatus | ApiError, *, settings: Settings, now: dt.datetime
) -> Outcome:
    """Store the tags and end, end with Vidmob's reason, or look again."""
    if isinstance(answer, ApiError):
        failures = attempts.consecutive_failures(session, KIND, claim.row_id, method="GET")
        decision = policy.after_poll_error(answer, failures=failures, settings=settings)
    else:
        # Without a submission time (a row older than adaptive polling), the fixed schedule.
        known = claim.submitted_at is not None
        prediction = _predict(session, claim.dialect, claim.asset_count, settings=settings, now=now) if known else None
        elapsed = (now - claim.submitted_at).total_seconds() if known else 0.0
        decision = after_status(answer, settings=settings, prediction=prediction, elapsed_s=elapsed)
    polled = {"poll_count": Job.poll_count + 1}
    if isinstance(decision, Complete):
        store_annotations(session, claim.row_id, decision.annotations, now)
        return lifecycle.end(session, KIND, claim, JobState.COMPLETE.value, now, values=polled | {"completed_at": now})
    return lifecycle.apply(
        session, KIND, claim, decision, state=JobState.POLLING.value, settings=settings, now=now, values=polled
    )
