"""The steps of a tagging job that talk to Vidmob.

Each step is: a short transaction that claims the job (compare-and-set on its
token), the HTTP call with no transaction open, and a short transaction that
records the result. A transaction never stays open across a remote call. The step
returns what must be sent once everything is committed; tasks send it.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field

from clients.http import ApiError
from config import get_settings
from models.db import session_scope
from services import attempts, callbacks, sweeper, tagging
from services.callbacks import CallbackMessage
from services.log_context import bind as bind_log_context
from services.scheduling import Dispatch, utcnow
from services.vidmob import tags_client

log = logging.getLogger(__name__)


@dataclass
class StepResult:
    outcome: tagging.Outcome | None = None
    accepted: tagging.Accepted | None = None
    dispatches: list[Dispatch] = field(default_factory=list)
    callbacks: list[uuid.UUID] = field(default_factory=list)  # jobs whose callback is owed


def accept_and_submit(payload: dict, *, task_id: str, task_name: str, positional_args: tuple = ()) -> StepResult:
    settings = get_settings()
    with session_scope() as session:
        accepted = tagging.accept_job(
            session,
            payload,
            task_id=task_id,
            dialect=settings.vidmob_tags_dialect,
            settings=settings,
            now=utcnow(),
            positional_args=positional_args,
        )
    bind_log_context(job_id=accepted.job_id)
    result = StepResult(accepted=accepted)
    if accepted.created and accepted.error:
        result.callbacks.append(accepted.job_id)
    if accepted.state is tagging.JobState.SUBMITTING:
        submitted = submit(accepted.job_id, accepted.token, task_name=task_name)
        result.outcome, result.dispatches, result.callbacks = (
            submitted.outcome,
            submitted.dispatches,
            result.callbacks + submitted.callbacks,
        )
    return result


def submit(job_id: uuid.UUID, token: uuid.UUID | None, *, task_name: str) -> StepResult:
    settings = get_settings()
    with session_scope() as session:
        claim = tagging.claim_submission(session, job_id, token, settings=settings, now=utcnow())
        if claim is None:
            return StepResult()
        intent = attempts.record_intent(
            session, job_id, task_name, "POST", tagging.SUBMIT_ENDPOINTS.get(claim.dialect, "?")
        )
    log_ = attempts.AttemptLog()
    vidmob_job_id: str | None = None
    error: ApiError | None = None
    try:
        vidmob_job_id = tags_client(claim.dialect, log_).create_job(claim.assets, claim.client_tags)
        bind_log_context(vidmob_job_id=vidmob_job_id)
    except ApiError as exc:
        error = exc
    with session_scope() as session:
        attempts.resolve_intent(session, intent, log_, job_id, task_name)
        now = utcnow()
        if vidmob_job_id is not None:
            outcome = tagging.record_submitted(session, claim, vidmob_job_id, settings=settings, now=now)
        else:
            assert error is not None
            outcome = tagging.record_submit_error(session, claim, error, settings=settings, now=now)
    return _result(job_id, outcome)


def poll(job_id: uuid.UUID, token: uuid.UUID, *, task_name: str) -> StepResult:
    settings = get_settings()
    with session_scope() as session:
        now = utcnow()
        claim = tagging.claim_poll(session, job_id, token, settings=settings, now=now)
        if claim is None:
            return StepResult()
        bind_log_context(vidmob_job_id=claim.vidmob_job_id)
        if claim.past_deadline(now):
            return _result(job_id, tagging.time_out(session, claim, now))
    log_ = attempts.AttemptLog()
    try:
        status = tags_client(claim.dialect, log_).get_status(claim.vidmob_job_id)
        error = None
    except ApiError as exc:
        status, error = None, exc
    with session_scope() as session:
        log_.save(session, job_id, task_name)
        now = utcnow()
        if status is not None:
            outcome = tagging.record_poll(session, claim, status, settings=settings, now=now)
        else:
            assert error is not None
            outcome = tagging.record_poll_error(session, claim, error, settings=settings, now=now)
    return _result(job_id, outcome)


def sweep(max_batches: int = 10) -> StepResult:
    """Bounded: at most max_batches transactions of sweep_batch_size rows each."""
    settings = get_settings()
    result = StepResult()
    for _ in range(max_batches):
        with session_scope() as session:
            batch = sweeper.due_looks(session, settings=settings, now=utcnow(), limit=settings.sweep_batch_size)
        result.dispatches.extend(batch)
        if len(batch) < settings.sweep_batch_size:
            break
    for _ in range(max_batches):
        with session_scope() as session:
            batch = sweeper.due_scoring_looks(session, settings=settings, now=utcnow(), limit=settings.sweep_batch_size)
        result.dispatches.extend(batch)
        if len(batch) < settings.sweep_batch_size:
            break
    with session_scope() as session:
        result.callbacks.extend(
            sweeper.owed_callbacks(session, settings=settings, now=utcnow(), limit=settings.sweep_batch_size)
        )
        result.dispatches.extend(
            sweeper.owed_score_callbacks(session, settings=settings, now=utcnow(), limit=settings.sweep_batch_size)
        )
    return result


def owed_callback(job_id: uuid.UUID) -> CallbackMessage | None:
    with session_scope() as session:
        return callbacks.owed_callback(session, job_id)


def mark_callback_sent(job_id: uuid.UUID) -> None:
    with session_scope() as session:
        callbacks.mark_callback_sent(session, job_id)


def _result(job_id: uuid.UUID, outcome: tagging.Outcome) -> StepResult:
    result = StepResult(outcome=outcome)
    if outcome.dispatch:
        result.dispatches.append(outcome.dispatch)
    result.dispatches.extend(outcome.followups)
    if outcome.ended:
        result.callbacks.append(job_id)
    return result
