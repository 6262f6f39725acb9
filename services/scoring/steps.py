"""The steps of the scoring loop that talk to Vidmob, declared on the engine's claim -> call -> record."""

from __future__ import annotations

from clients.errors import ConflictError
from clients.scoring import MediaScoringStatus, ScoringClient
from models import ScoringState
from services.durable.attempts import AttemptLog
from services.durable.steps import Step
from services.scoring import lifecycle
from services.scoring.kind import KIND
from services.vidmob import vidmob_http


def _submit_media(claim: lifecycle.SubmitClaim, log: AttemptLog) -> lifecycle.Submitted:
    try:
        unique_id = ScoringClient(vidmob_http(log)).submit_media(
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


def _status_and_scores(claim: lifecycle.PollClaim, log: AttemptLog) -> lifecycle.Polled:
    client = ScoringClient(vidmob_http(log))
    status = client.get_status(claim.lookup_id)
    scores = client.get_scores(claim.lookup_id, claim.channels) if status is MediaScoringStatus.COMPLETE else None
    return lifecycle.Polled(status, scores)


# Safe to repeat without an intent row: the same media id + version again is a 409.
SUBMIT = Step(
    KIND,
    ScoringState.SUBMITTING.value,
    lifecycle.SubmitClaim,
    call=_submit_media,
    record=lifecycle.record_submission,
    takeover_after_lease=True,
)
POLL = Step(
    KIND,
    ScoringState.POLLING.value,
    lifecycle.PollClaim,
    call=_status_and_scores,
    record=lifecycle.record_poll,
    time_out=lifecycle.time_out,
)
