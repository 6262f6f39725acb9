"""The steps of the scoring loop that talk to Vidmob, shaped like services/steps.py.

Each step: a short transaction that claims the media (compare-and-set on its token), the
HTTP calls with no transaction open, a short transaction that records the result. The step
returns what must be sent once everything is committed; tasks send it.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field

from clients.errors import ConflictError
from clients.http import ApiError
from clients.scoring import MediaScoringStatus, Scores, ScoringClient
from config import get_settings
from models.db import session_scope
from services import scoring
from services.attempts import AttemptLog
from services.callbacks import CallbackMessage
from services.scheduling import Dispatch, utcnow
from services.vidmob import vidmob_http

log = logging.getLogger(__name__)


@dataclass
class ScoringStepResult:
    outcome: scoring.ScoringOutcome | None = None
    accepted: scoring.AcceptedMedia | None = None
    dispatches: list[Dispatch] = field(default_factory=list)
    callbacks: list[uuid.UUID] = field(default_factory=list)  # scored media whose callback is owed


def scoring_client(log_: AttemptLog) -> ScoringClient:
    return ScoringClient(vidmob_http(log_))


def accept_and_submit(payload: dict, *, task_id: str, task_name: str, positional_args: tuple = ()) -> ScoringStepResult:
    settings = get_settings()
    with session_scope() as session:
        accepted = scoring.accept_media(
            session, payload, task_id=task_id, settings=settings, now=utcnow(), positional_args=positional_args
        )
    result = ScoringStepResult(accepted=accepted)
    if accepted.created and accepted.error:
        result.callbacks.append(accepted.scoring_id)
    if accepted.created and accepted.token is not None:
        submitted = submit(accepted.scoring_id, accepted.token, task_name=task_name)
        result.outcome = submitted.outcome
        result.dispatches = submitted.dispatches
        result.callbacks += submitted.callbacks
    return result


def submit(scoring_id: uuid.UUID, token: uuid.UUID, *, task_name: str) -> ScoringStepResult:
    settings = get_settings()
    with session_scope() as session:
        claim = scoring.claim_submission(session, scoring_id, token, settings=settings, now=utcnow())
    if claim is None:
        return ScoringStepResult()
    log_ = AttemptLog()
    unique_id: str | None = None
    conflict = False
    error: ApiError | None = None
    try:
        unique_id = scoring_client(log_).submit_media(
            media_id=claim.media_id,
            url=claim.url,
            version=claim.version,
            channels=claim.channels,
            workspace_id=claim.workspace_id,
        )
    except ConflictError:
        # The same id + version is already at Vidmob: our earlier attempt went through.
        conflict = True
    except ApiError as exc:
        error = exc
    with session_scope() as session:
        log_.save(session, None, task_name)
        now = utcnow()
        if error is None:
            outcome = scoring.record_submitted(session, claim, unique_id, settings=settings, now=now, conflict=conflict)
        else:
            outcome = scoring.record_submit_error(session, claim, error, settings=settings, now=now)
    return _result(scoring_id, outcome)


def poll(scoring_id: uuid.UUID, token: uuid.UUID, *, task_name: str) -> ScoringStepResult:
    settings = get_settings()
    with session_scope() as session:
        now = utcnow()
        claim = scoring.claim_poll(session, scoring_id, token, settings=settings, now=now)
        if claim is None:
            return ScoringStepResult()
        if claim.deadline_at is not None and claim.deadline_at <= now:
            return _result(scoring_id, scoring.time_out(session, claim, now))
    log_ = AttemptLog()
    status: MediaScoringStatus | None = None
    scores: Scores | None = None
    error: ApiError | None = None
    try:
        client = scoring_client(log_)
        status = client.get_status(claim.lookup_id)
        if status is MediaScoringStatus.COMPLETE:
            scores = client.get_scores(claim.lookup_id, claim.channels)
    except ApiError as exc:
        error = exc
    with session_scope() as session:
        log_.save(session, None, task_name)
        now = utcnow()
        if error is None:
            assert status is not None
            outcome = scoring.record_poll(session, claim, status, scores, settings=settings, now=now)
        else:
            outcome = scoring.record_poll_error(session, claim, error, settings=settings, now=now)
    return _result(scoring_id, outcome)


def flush_tagging() -> ScoringStepResult:
    settings = get_settings()
    with session_scope() as session:
        return ScoringStepResult(dispatches=scoring.flush_tagging(session, settings=settings, now=utcnow()))


def owed_callback(scoring_id: uuid.UUID) -> CallbackMessage | None:
    with session_scope() as session:
        return scoring.owed_callback(session, scoring_id)


def mark_callback_sent(scoring_id: uuid.UUID) -> None:
    with session_scope() as session:
        scoring.mark_callback_sent(session, scoring_id)


def _result(scoring_id: uuid.UUID, outcome: scoring.ScoringOutcome) -> ScoringStepResult:
    result = ScoringStepResult(outcome=outcome, dispatches=list(outcome.dispatches))
    if outcome.ended:
        result.callbacks.append(scoring_id)
    return result
