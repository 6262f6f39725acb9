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

from sqlalchemy.orm import Session

from clients.errors import ApiError
from clients.tags import TagsJobStatus
from config import Settings
from models import Job, JobState
from services.durable import attempts, durations, lifecycle, policy
from services.durable.claims import Claim
from services.durable.messages import Outcome
from services.durable.prediction import Prediction
from services.tagging import capacity
from services.tagging.annotations import store_annotations
from services.tagging.claims import PollClaim, SubmitClaim
from services.tagging.kind import KIND
from services.tagging.policy import Complete, after_status, first_look

log = logging.getLogger(__name__)

SUBMIT_ENDPOINTS = {"guide": "POST /v1/aperture/jobs", "media": "POST /v1/media/aperture"}


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
        outcome = lifecycle.apply(session, KIND, claim, decision, state=JobState.SUBMITTING, settings=settings, now=now)
        # The create call failed: if it held a slot under the open-jobs cap, the slot is free again.
        capacity.admit_waiting(session, settings=settings, now=now)
        return outcome
    prediction = _predict(session, claim.dialect, len(claim.assets), settings=settings, now=now)
    outcome = lifecycle.reschedule(
        session, KIND, claim, state=JobState.SUBMITTING, to_state=JobState.POLLING,
        delay_s=first_look(prediction, settings=settings), settings=settings, now=now,
        values={"vidmob_job_id": answer, "submitted_at": now, "sent_assets": len(claim.assets)},
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
        session, KIND, claim, JobState.TIMED_OUT, now, error="Vidmob did not finish the job before its deadline"
    )


def record_poll(
    session: Session, claim: PollClaim, answer: TagsJobStatus | ApiError, *, settings: Settings, now: dt.datetime
) -> Outcome:
    """Store the tags and end, end with Vidmob's reason, or look again."""
    decision: Complete | policy.End | policy.LookAgain
    if isinstance(answer, ApiError):
        failures = attempts.consecutive_failures(session, KIND, claim.row_id, method="GET")
        decision = policy.after_poll_error(answer, failures=failures, settings=settings)
    else:
        # Without a submission time (a row older than adaptive polling), the fixed schedule.
        prediction: Prediction | None = None
        elapsed = 0.0
        if claim.submitted_at is not None:
            prediction = _predict(session, claim.dialect, claim.asset_count, settings=settings, now=now)
            elapsed = (now - claim.submitted_at).total_seconds()
        decision = after_status(answer, settings=settings, prediction=prediction, elapsed_s=elapsed)
    polled = {"poll_count": Job.poll_count + 1}
    if isinstance(decision, Complete):
        store_annotations(session, claim.row_id, decision.annotations, now)
        return lifecycle.end(session, KIND, claim, JobState.COMPLETE, now, values=polled | {"completed_at": now})
    return lifecycle.apply(
        session, KIND, claim, decision, state=JobState.POLLING, settings=settings, now=now, values=polled
    )
