"""The steps of the scoring loop that talk to Vidmob, on the engine's claim -> call -> record."""

from __future__ import annotations

import uuid
from functools import partial
from typing import Any

from clients.errors import ConflictError
from clients.scoring import MediaScoringStatus, ScoringClient
from config import get_settings
from models.db import session_scope
from services.durable import intake, steps
from services.durable.attempts import AttemptLog
from services.durable.messages import Outcome
from services.durable.schedule import utcnow
from services.scoring import batching, lifecycle
from services.scoring.intake import accept_media
from services.scoring.kind import KIND
from services.vidmob import vidmob_http


def scoring_client(log: AttemptLog) -> ScoringClient:
    return ScoringClient(vidmob_http(log))


def accept_and_submit(
    payload: dict[str, Any], *, task_id: str, task_name: str, positional_args: tuple[Any, ...] = ()
) -> tuple[intake.Accepted, Outcome]:
    settings = get_settings()
    return steps.accept_then_submit(
        KIND,
        lambda session: accept_media(
            session, payload, task_id=task_id, settings=settings, now=utcnow(), positional_args=positional_args
        ),
        partial(submit, task_name=task_name),
    )


def _submit_call(claim: lifecycle.SubmitClaim, log: AttemptLog) -> lifecycle.Submitted:
    try:
        unique_id = scoring_client(log).submit_media(
            media_id=claim.media_id,
            url=claim.url,
            version=claim.version,
            channels=claim.channels,
            workspace_id=claim.workspace_id,
        )
    except ConflictError:
        # The same id + version is already at Vidmob: our earlier attempt went through.
        return lifecycle.Submitted(None, conflict=True)
    return lifecycle.Submitted(unique_id)


def submit(scoring_id: uuid.UUID, token: uuid.UUID | None, *, task_name: str) -> Outcome:
    settings = get_settings()
    return steps.run(
        KIND,
        scoring_id,
        token,
        task_name=task_name,
        claim=lambda session, row_id, token_, now: lifecycle.claim_submission(
            session, row_id, token_, settings=settings, now=now
        ),
        call=_submit_call,
        record=lambda session, claim, answer, now: lifecycle.record_submission(
            session, claim, answer, settings=settings, now=now
        ),
    )


def _poll_call(claim: lifecycle.PollClaim, log: AttemptLog) -> lifecycle.Polled:
    client = scoring_client(log)
    status = client.get_status(claim.lookup_id)
    scores = client.get_scores(claim.lookup_id, claim.channels) if status is MediaScoringStatus.COMPLETE else None
    return lifecycle.Polled(status, scores)


def poll(scoring_id: uuid.UUID, token: uuid.UUID, *, task_name: str) -> Outcome:
    settings = get_settings()
    return steps.run(
        KIND,
        scoring_id,
        token,
        task_name=task_name,
        claim=lambda session, row_id, token_, now: lifecycle.claim_poll(
            session, row_id, token_, settings=settings, now=now
        ),
        time_out=lifecycle.time_out,
        call=_poll_call,
        record=lambda session, claim, answer, now: lifecycle.record_poll(
            session, claim, answer, settings=settings, now=now
        ),
    )


def flush_tagging() -> Outcome:
    settings = get_settings()
    with session_scope() as session:
        return batching.flush_tagging(session, settings=settings, now=utcnow())
