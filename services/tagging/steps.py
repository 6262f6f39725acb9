"""The steps of a tagging job that talk to Vidmob, declared on the engine's claim -> call -> record."""

from __future__ import annotations

from clients.tags import TagsJobStatus
from models import JobState
from services.durable.attempts import AttemptLog
from services.durable.steps import Step
from services.tagging import capacity
from services.tagging.kind import KIND
from services.tagging.lifecycle import (
    SUBMIT_ENDPOINTS,
    PollClaim,
    SubmitClaim,
    record_poll,
    record_submission,
    time_out,
)
from services.vidmob import tags_client


def _create_job(claim: SubmitClaim, log: AttemptLog) -> str:
    return tags_client(claim.dialect, log).create_job(claim.assets, claim.client_tags)


def _get_status(claim: PollClaim, log: AttemptLog) -> TagsJobStatus:
    return tags_client(claim.dialect, log).get_status(claim.vidmob_job_id)


def _intent(claim: SubmitClaim) -> tuple[str, str]:
    # Vidmob's create endpoint has no idempotency key: the attempt is stored before the call.
    return "POST", SUBMIT_ENDPOINTS.get(claim.dialect, "?")


SUBMIT = Step(
    KIND,
    JobState.SUBMITTING.value,
    SubmitClaim,
    _create_job,
    record_submission,
    intent=_intent,
    hold=capacity.hold_if_full,
)
POLL = Step(KIND, JobState.POLLING.value, PollClaim, _get_status, record_poll, time_out=time_out)
