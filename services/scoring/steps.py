"""The steps of the scoring loop that talk to Vidmob, declared on the engine's claim -> call -> record."""

from __future__ import annotations

from clients.errors import ConflictError
from clients.scoring import MediaScoringStatus, ScoringClient
from models import ScoringState
from services.durable.attempts import AttemptLog
from services.durable.steps import Step
from services.gateway import vidmob_http
from services.scoring.kind import KIND
from services.scoring.lifecycle import (
    PollClaim,
    Polled,
    SubmitClaim,
    Submitted,
    record_poll,
    record_submission,
    time_out,
)


def _submit_media(claim: SubmitClaim, log: AttemptLog) -> Submitted:
    try:
        unique_id = ScoringClient(vidmob_http(log, caller=claim.caller)).submit_media(
            media_id=claim.media_id,
            url=claim.url,
            version=claim.version,
            channels=claim.channels,
            workspace_id=claim.workspace_id,
        )
    except ConflictError:
        # The same id + version is already at Vidmob: our earlier attempt went through.
        return Submitted(None, conflict=True)
    return Submitted(unique_id)


def _status_and_scores(claim: PollClaim, log: AttemptLog) -> Polled:
    client = ScoringClient(vidmob_http(log, caller=claim.caller))
    status = client.get_status(claim.lookup_id)
    scores = client.get_scores(claim.lookup_id, claim.channels) if status is MediaScoringStatus.COMPLETE else None
    return Polled(status, scores)


# No intent row: a repeated submission of the same media id + version is a 409, not new work.
SUBMIT = Step(KIND, ScoringState.SUBMITTING, SubmitClaim, _submit_media, record_submission)
POLL = Step(KIND, ScoringState.POLLING, PollClaim, _status_and_scores, record_poll, time_out=time_out)
