"""The steps of a tagging job that talk to Vidmob, declared on the engine's claim -> call -> record."""

from __future__ import annotations

from clients.tags import TagsJobStatus
from models import JobState
from services.durable.attempts import AttemptLog
from services.durable.steps import Step
from services.tagging import lifecycle
from services.tagging.kind import KIND
from services.vidmob import tags_client


def _create_job(claim: lifecycle.SubmitClaim, log: AttemptLog) -> str:
    return tags_client(claim.dialect, log).create_job(claim.assets, claim.client_tags)


def _get_status(claim: lifecycle.PollClaim, log: AttemptLog) -> TagsJobStatus:
    return tags_client(claim.dialect, log).get_status(claim.vidmob_job_id)


# Vidmob's create endpoint has no idempotency key: the intent is stored before the call, and
# anyone may take a submission over once its holder's lease has run out (a crash mid-call).
SUBMIT = Step(
    KIND,
    JobState.SUBMITTING.value,
    lifecycle.SubmitClaim,
    call=_create_job,
    record=lifecycle.record_submission,
    claim_values=lifecycle.submission_claim_values,
    takeover_after_lease=True,
    intent=lambda claim: ("POST", lifecycle.SUBMIT_ENDPOINTS.get(claim.dialect, "?")),
)
POLL = Step(
    KIND,
    JobState.POLLING.value,
    lifecycle.PollClaim,
    call=_get_status,
    record=lifecycle.record_poll,
    time_out=lifecycle.time_out,
)
