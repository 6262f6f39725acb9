"""The steps of a tagging job that talk to Vidmob, declared on the engine's claim -> call -> record."""

from __future__ import annotations

import datetime as dt

from sqlalchemy.orm import Session

from clients.tags import TagsJobStatus
from config import Settings
from models import JobState
from services.durable.attempts import AttemptLog
from services.durable.messages import Outcome
from services.durable.steps import Step
from services.gateway import tags_client
from services.tagging import budgets, capacity, packing, reuse
from services.tagging.claims import PollClaim, SubmitClaim
from services.tagging.kind import KIND
from services.tagging.lifecycle import SUBMIT_ENDPOINTS, record_poll, record_submission, time_out


def _create_job(claim: SubmitClaim, log: AttemptLog) -> str:
    return tags_client(claim.dialect, log, caller=claim.caller).create_job(claim.assets, claim.client_tags)


def _get_status(claim: PollClaim, log: AttemptLog) -> TagsJobStatus:
    return tags_client(claim.dialect, log, caller=claim.caller).get_status(claim.vidmob_job_id)


def _intent(claim: SubmitClaim) -> tuple[str, str]:
    # Vidmob's create endpoint has no idempotency key: the attempt is stored before the call.
    return "POST", SUBMIT_ENDPOINTS.get(claim.dialect, "?")


def _hold(
    session: Session, claim: SubmitClaim, *, settings: Settings, now: dt.datetime
) -> Outcome | SubmitClaim | None:
    # Reuse first: a request answered from earlier tags needs no slot at Vidmob, and one partly
    # answered goes on with the assets left (the narrowed claim is the one sent, if nothing holds it).
    reused = reuse.complete_or_narrow(session, claim, settings=settings, now=now)
    if isinstance(reused, Outcome):
        return reused
    narrowed = reused
    claim = narrowed or claim
    # Then batching: a small request waits in a pack, which meets the cap when it is sent.
    packed = packing.join_if_packable(session, claim, settings=settings, now=now)
    if packed is not None:
        return packed
    # Then the caller's budget (what is left to send counts, reused assets never do), then a slot.
    over = budgets.hold_if_over(session, claim, settings=settings, now=now)
    if over is not None:
        return over
    return capacity.hold_if_full(session, claim, settings=settings, now=now) or narrowed


SUBMIT = Step(
    KIND,
    JobState.SUBMITTING,
    SubmitClaim,
    _create_job,
    record_submission,
    intent=_intent,
    hold=_hold,
)
POLL = Step(KIND, JobState.POLLING, PollClaim, _get_status, record_poll, time_out=time_out)
