"""The steps of a tagging job that talk to Vidmob, on the engine's claim -> call -> record."""

from __future__ import annotations

import uuid
from functools import partial
from typing import Any

from config import get_settings
from services.durable import intake, steps
from services.durable.messages import Outcome
from services.durable.schedule import utcnow
from services.tagging import lifecycle
from services.tagging.intake import accept_job
from services.tagging.kind import KIND
from services.vidmob import tags_client


def accept_and_submit(
    payload: dict[str, Any], *, task_id: str, task_name: str, positional_args: tuple[Any, ...] = ()
) -> tuple[intake.Accepted, Outcome]:
    settings = get_settings()
    return steps.accept_then_submit(
        KIND,
        lambda session: accept_job(
            session,
            payload,
            task_id=task_id,
            dialect=settings.vidmob_tags_dialect,
            settings=settings,
            now=utcnow(),
            positional_args=positional_args,
        ),
        partial(submit, task_name=task_name),
    )


def submit(job_id: uuid.UUID, token: uuid.UUID | None, *, task_name: str) -> Outcome:
    settings = get_settings()
    return steps.run(
        KIND,
        job_id,
        token,
        task_name=task_name,
        claim=lambda session, row_id, token_, now: lifecycle.claim_submission(
            session, row_id, token_, settings=settings, now=now
        ),
        intent=lambda claim: ("POST", lifecycle.SUBMIT_ENDPOINTS.get(claim.dialect, "?")),
        call=lambda claim, log: tags_client(claim.dialect, log).create_job(claim.assets, claim.client_tags),
        record=lambda session, claim, answer, now: lifecycle.record_submission(
            session, claim, answer, settings=settings, now=now
        ),
    )


def poll(job_id: uuid.UUID, token: uuid.UUID, *, task_name: str) -> Outcome:
    settings = get_settings()
    return steps.run(
        KIND,
        job_id,
        token,
        task_name=task_name,
        claim=lambda session, row_id, token_, now: lifecycle.claim_poll(
            session, row_id, token_, settings=settings, now=now
        ),
        time_out=lifecycle.time_out,
        call=lambda claim, log: tags_client(claim.dialect, log).get_status(claim.vidmob_job_id),
        record=lambda session, claim, answer, now: lifecycle.record_poll(
            session, claim, answer, settings=settings, now=now
        ),
    )
