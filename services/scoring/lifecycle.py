"""A scored media's decisions on the durable engine: submit a round, poll it, act on its scores.

Submitting is safe to repeat: Vidmob refuses the same media id + version with a 409, which
means an earlier attempt of ours went through; the round is then treated as submitted and
polled by the caller's media id (Vidmob resolves it to the latest version: ours). So unlike
tagging, scoring has no duplicate-paid-work window.

Rescoring: Vidmob documents no rescore endpoint; a rescore submits the same media again with
the version ``"<original version or 1>-r<n>"`` (policy.rescore_version). Every round is kept.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Row
from sqlalchemy.orm import Session

from clients.errors import ApiError
from clients.scoring import MediaScoringStatus, Scores
from config import Settings, tasks
from models import RoundStatus, ScoredMedia, ScoringRound, ScoringState
from services.durable import attempts, claims, durations, lifecycle
from services.durable.claims import Claim
from services.durable.messages import Outcome
from services.durable.policy import FAILED, TIMED_OUT, End, LookAgain, after_poll_error, after_submit_error
from services.durable.prediction import Prediction
from services.durable.storable import pg_safe
from services.scoring import policy
from services.scoring.kind import KIND
from services.scoring.storage import store_scores

log = logging.getLogger(__name__)

SUBMIT_ENDPOINT = "POST /v1/media"
# The round's status when the media ends in a state that ends the round with it.
ROUND_STATUS_OF_END = {
    FAILED: RoundStatus.FAILED,
    TIMED_OUT: RoundStatus.TIMED_OUT,
    policy.UNSUPPORTED: RoundStatus.UNSUPPORTED,
}


@dataclass(frozen=True, kw_only=True)
class SubmitClaim(Claim):
    COLUMNS = (
        ScoredMedia.media_id,
        ScoredMedia.url,
        ScoredMedia.channels,
        ScoredMedia.workspace_id,
        ScoredMedia.round_count,
    )
    # A repeated submission is a 409, counted as submitted: safe to take over after a crash.
    TAKEOVER_AFTER_LEASE = True

    round_id: int
    round_count: int  # the round's number: 1, or a rescore's (services/scoring/kind.py routes it)
    attempt: int
    media_id: str  # the caller's id: Vidmob's media id
    url: str
    version: str | None
    channels: tuple[str, ...]
    workspace_id: int | None

    @classmethod
    def from_row(cls, session: Session, row: Row[Any]) -> SubmitClaim:
        """The media's current round, with one more attempt counted."""
        rnd = session.execute(
            update(ScoringRound)
            .where(ScoringRound.scored_media_id == row.row_id, ScoringRound.number == row.round_count)
            .values(submit_attempts=ScoringRound.submit_attempts + 1)
            .returning(ScoringRound.id, ScoringRound.version, ScoringRound.submit_attempts)
        ).one()
        return cls.of(
            row, round_id=rnd.id, attempt=rnd.submit_attempts, version=rnd.version, channels=tuple(row.channels)
        )


@dataclass(frozen=True, kw_only=True)
class PollClaim(Claim):
    COLUMNS = (ScoredMedia.media_id, ScoredMedia.channels, ScoredMedia.round_count, ScoredMedia.rescore_count)
    # Status and scores are GETs: read, call, then record under the row's lock (``record_poll``).
    OPTIMISTIC = True

    round_id: int
    round_count: int
    lookup_id: str  # Vidmob's uniqueId, or the caller's media id after a 409
    channels: tuple[str, ...]
    rescore_count: int
    error_polls: int
    submitted_at: dt.datetime | None = None  # the round's

    @classmethod
    def from_row(cls, session: Session, row: Row[Any]) -> PollClaim:
        """The round being scored, and how Vidmob knows it."""
        rnd = session.execute(
            select(
                ScoringRound.id, ScoringRound.vidmob_unique_id, ScoringRound.error_polls, ScoringRound.submitted_at
            ).where(ScoringRound.scored_media_id == row.row_id, ScoringRound.number == row.round_count)
        ).one()
        return cls.of(
            row,
            round_id=rnd.id,
            lookup_id=rnd.vidmob_unique_id or row.media_id,
            channels=tuple(row.channels),
            error_polls=rnd.error_polls,
            submitted_at=rnd.submitted_at,
        )


@dataclass(frozen=True)
class Submitted:
    unique_id: str | None  # None after a 409
    conflict: bool = False  # Vidmob had this id + version already: an earlier attempt of ours


@dataclass(frozen=True)
class Polled:
    status: MediaScoringStatus
    scores: Scores | None = None  # fetched when the status is COMPLETE


# --- submit ------------------------------------------------------------------------


def record_submission(
    session: Session, claim: SubmitClaim, answer: Submitted | ApiError, *, settings: Settings, now: dt.datetime
) -> Outcome:
    """Accepted (or a 409 for the same id + version: accepted earlier) moves the media to
    POLLING; an error ends it or tries again with backoff until the round's deadline."""
    if isinstance(answer, ApiError):
        decision = after_submit_error(
            answer, attempt=claim.attempt, deadline_at=claim.deadline_at, now=now, settings=settings
        )
        if isinstance(decision, LookAgain):
            _update_round(session, claim.round_id, error=decision.error)
        return _apply(session, claim, decision, state=ScoringState.SUBMITTING, settings=settings, now=now)
    outcome = lifecycle.reschedule(
        session, KIND, claim, state=ScoringState.SUBMITTING, to_state=ScoringState.POLLING,
        delay_s=policy.first_look(_predict(session, settings, now), settings=settings), settings=settings, now=now,
    )  # fmt: skip
    if outcome.stale:
        log.error("scored media %s: round submitted but the media was taken over", claim.row_id)
        return outcome
    _update_round(
        session,
        claim.round_id,
        status=RoundStatus.SCORING,
        vidmob_unique_id=answer.unique_id,
        conflict=answer.conflict,
        submitted_at=now,
        error="409: this media id and version were already submitted (by an earlier attempt)"
        if answer.conflict
        else None,
    )
    return outcome


# --- poll --------------------------------------------------------------------------


def time_out(session: Session, claim: PollClaim, now: dt.datetime) -> Outcome:
    error = "Vidmob did not score the media before the round's deadline"
    outcome = lifecycle.end(session, KIND, claim, ScoringState.TIMED_OUT, now, error=error)
    if not outcome.stale:
        _update_round(session, claim.round_id, status=RoundStatus.TIMED_OUT, error=error)
    return outcome


def record_poll(
    session: Session, claim: PollClaim, answer: Polled | ApiError, *, settings: Settings, now: dt.datetime
) -> Outcome:
    """Act on a status (and, when COMPLETE, the scores fetched with it). The claim was a read: the
    row is locked first, so of two copies of a message only the first writes the round."""
    if not claims.hold_read(session, KIND, claim, state=ScoringState.POLLING):
        return Outcome(stale=True)
    if isinstance(answer, ApiError):
        failures = attempts.consecutive_failures(session, KIND, claim.row_id, method="GET")
        decision = after_poll_error(answer, failures=failures, settings=settings)
        if isinstance(decision, End):
            decision = End(decision.state, f"status or scores refused: {answer}")
        else:
            _update_round(session, claim.round_id, error=decision.error)
        return _apply(session, claim, decision, state=ScoringState.POLLING, settings=settings, now=now)

    _update_round(session, claim.round_id, poll_count=ScoringRound.poll_count + 1, vidmob_status=answer.status.value)
    if answer.status is MediaScoringStatus.COMPLETE and answer.scores is not None:
        return _record_scores(session, claim, answer.scores, settings=settings, now=now)
    submitted_at = claim.submitted_at
    status_decision = policy.after_status(
        answer.status,
        error_polls=claim.error_polls,
        settings=settings,
        prediction=_predict(session, settings, now) if submitted_at is not None else None,
        elapsed_s=(now - submitted_at).total_seconds() if submitted_at is not None else 0.0,
    )
    if answer.status is MediaScoringStatus.ERROR:
        _update_round(
            session, claim.round_id, error_polls=ScoringRound.error_polls + 1, error="Vidmob scoring status ERROR"
        )
    return _apply(session, claim, status_decision, state=ScoringState.POLLING, settings=settings, now=now)


def _predict(session: Session, settings: Settings, now: dt.datetime) -> Prediction | None:
    """How long Vidmob takes to score a media (None: the fixed schedule)."""
    return durations.predict(session, durations.SCORING, durations.SCORING, 1, settings=settings, now=now)


def _record_scores(
    session: Session, claim: PollClaim, scores: Scores, *, settings: Settings, now: dt.datetime
) -> Outcome:
    store_scores(session, claim.round_id, scores)
    verdict = policy.after_scores(scores, rescore_count=claim.rescore_count, settings=settings)
    round_values: dict[str, Any] = {
        "fetch_count": ScoringRound.fetch_count + 1,
        "no_data_codes": pg_safe(list(verdict.codes)),
        "action": verdict.action.value,
        "error": None,
    }
    if verdict.complete:
        round_values |= {"status": RoundStatus.COMPLETE, "scored_at": now}
    _update_round(session, claim.round_id, **round_values)

    step = verdict.next
    if isinstance(step, End | LookAgain):
        return _apply(session, claim, step, state=ScoringState.POLLING, settings=settings, now=now)
    if isinstance(step, policy.FlagForTagging):
        # Wait a short window so that media flagged together go into one tagging job.
        return lifecycle.reschedule(
            session, KIND, claim, state=ScoringState.POLLING, to_state=ScoringState.AWAITING_TAGS,
            delay_s=settings.tag_batch_window_s, settings=settings, now=now, values={"flagged_at": now},
        )  # fmt: skip
    return _rescore_now(session, claim, step.reason, settings=settings, now=now)


def _rescore_now(session: Session, claim: PollClaim, reason: str, *, settings: Settings, now: dt.datetime) -> Outcome:
    outcome = lifecycle.reschedule(
        session, KIND, claim, state=ScoringState.POLLING, to_state=ScoringState.SUBMITTING,
        delay_s=0.0, settings=settings, now=now, values=next_round_values(settings, now), task=tasks.RESCORE.name,
    )  # fmt: skip
    if not outcome.stale:
        row = session.execute(
            select(ScoredMedia.id, ScoredMedia.round_count, ScoredMedia.rescore_count, ScoredMedia.version).where(
                ScoredMedia.id == claim.row_id
            )
        ).one()
        insert_rounds(session, [row], reason=reason, tagging_job_id=None)
    return outcome


# --- rounds ------------------------------------------------------------------------


def next_round_values(settings: Settings, now: dt.datetime) -> dict[str, Any]:
    """The media's columns when a new round (a rescore) starts."""
    return {
        "round_count": ScoredMedia.round_count + 1,
        "rescore_count": ScoredMedia.rescore_count + 1,
        "deadline_at": now + dt.timedelta(seconds=settings.scoring_round_deadline_s),
        "tagging_job_id": None,
        "error": None,
    }


def insert_rounds(
    session: Session,
    rows: Sequence[Row[uuid.UUID, int, int, str | None]],
    *,
    reason: str,
    tagging_job_id: uuid.UUID | None,
) -> None:
    """One new round per row of ScoredMedia's ``id``, ``round_count``, ``rescore_count``, ``version``."""
    session.execute(
        insert(ScoringRound),
        [
            {
                "scored_media_id": row.id,
                "number": row.round_count,
                "version": policy.rescore_version(row.version, row.rescore_count),
                "reason": reason,
                "tagging_job_id": tagging_job_id,
                "status": RoundStatus.SUBMITTING,
            }
            for row in rows
        ],
    )


# --- shared -------------------------------------------------------------------------


def _apply(
    session: Session,
    claim: SubmitClaim | PollClaim,
    decision: End | LookAgain,
    *,
    state: ScoringState,
    settings: Settings,
    now: dt.datetime,
) -> Outcome:
    """The engine's apply; a round that ends with the media (failed, timed out, unsupported)
    gets that status."""
    outcome = lifecycle.apply(session, KIND, claim, decision, state=state, settings=settings, now=now)
    if isinstance(decision, End) and not outcome.stale:
        round_status = ROUND_STATUS_OF_END.get(decision.state)
        if round_status is not None:
            _update_round(session, claim.round_id, status=round_status, error=decision.error)
    return outcome


def _update_round(session: Session, round_id: int, **values: Any) -> None:
    session.execute(update(ScoringRound).where(ScoringRound.id == round_id).values(**values))
