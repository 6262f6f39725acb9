"""The scoring loop: score a media; when Vidmob says it is not tagged, tag it, then rescore.

States of a scored media (models.scoring.ScoringState; docs/scoring.md has the diagram):

    submitting -> polling -> scored | unsupported | failed | timed_out
                     |  \\-> (NEW_CRITERIA, MISSING_REQUIRED_TAGS, ERROR_RETRIEVING_TAGS) -> submitting (rescore)
                     \\-> (MEDIA_NOT_TAGGED, MEDIA_TAGGING_FAILURE) -> awaiting_tags -> tagging
    tagging -> (tagging job COMPLETE) -> submitting (aperture.rescore) | (FAILED, TIMED_OUT) -> awaiting_tags
    any rescore or re-tag past its bound -> needs_attention

Everything here follows services/tagging.py: functions take a Session and never commit;
every state change is a compare-and-set on ``poll_token`` and state; they return the
messages to send after the caller's commit (``Dispatch``). A look at a media is a countdown
message for short waits or parked in Postgres for the sweeper (services/scheduling.py).

Submitting is safe to repeat: Vidmob refuses the same media id + version with a 409, which
means an earlier attempt of ours went through; the round is then treated as submitted and
polled by the caller's media id (Vidmob resolves it to the latest version: ours). So unlike
tagging, scoring has no duplicate-paid-work window.

Rescoring: Vidmob documents no rescore endpoint; a rescore submits the same media again with
the version ``"<original version or 1>-r<n>"``. Every round is kept.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from sqlalchemy import case, delete, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from clients.http import ApiError
from clients.scoring import MediaScoringStatus, ScoreAction, Scores, classify_result
from config import Settings, get_settings
from models import (
    CallbackStatus,
    Job,
    JobState,
    RoundStatus,
    ScoredMedia,
    ScoredMediaTaggingJob,
    ScoringChannelSummary,
    ScoringGuidelineResult,
    ScoringRound,
    ScoringState,
)
from services import tagging
from services.callbacks import CallbackMessage
from services.contract import ScoreMediaRequest, describe_errors, parse_callback
from services.scheduling import SUBMIT_TASK, Dispatch, backoff, jittered, lease_until, schedule

log = logging.getLogger(__name__)

SUBMIT_SCORING_TASK = "aperture.submit_scoring"
RESCORE_TASK = "aperture.rescore"
POLL_SCORING_TASK = "aperture.poll_scoring"
FLUSH_TAGGING_TASK = "aperture.flush_tagging"
SCORE_CALLBACK_TASK = "aperture.send_score_callback"

SUBMIT_ENDPOINT = "POST /v1/media"
TAGGING_REQUEST_PREFIX = "aperture-scoring-tags:"
# A callback message carries no token: callback_status (pending -> sent) is its guard.
NO_TOKEN = uuid.UUID(int=0)

ACTIVE = (ScoringState.SUBMITTING, ScoringState.POLLING)
# The order in which a round's results decide: scores not ready > tags missing > rescore > done.
_TAGGING_ACTIONS = (ScoreAction.TAG_THEN_RESCORE, ScoreAction.RETAG_THEN_RESCORE)
NEEDS_ATTENTION_ACTION = "needs_attention"


class MediaDispatch(Dispatch):
    """A Dispatch for a scoring task: the row is a scored media (``scoring_id``), not a job."""

    def kwargs(self) -> dict[str, str]:
        return {"scoring_id": str(self.job_id), "token": str(self.token)}


class CallbackDispatch(Dispatch):
    """Send a media's owed callback (used where the ending transaction is not the task's own)."""

    def kwargs(self) -> dict[str, str]:
        return {"scoring_id": str(self.job_id)}


def callback_dispatch(scoring_id: uuid.UUID) -> Dispatch:
    return CallbackDispatch(SCORE_CALLBACK_TASK, scoring_id, NO_TOKEN, 0.0)


def callback_task_id(scoring_id: uuid.UUID) -> str:
    return f"aperture-score-callback-{scoring_id}"


def rescore_version(original: str | None, rescore_number: int) -> str:
    return f"{original or '1'}-r{rescore_number}"


@dataclass(frozen=True)
class AcceptedMedia:
    scoring_id: uuid.UUID
    state: ScoringState
    created: bool
    error: str | None = None
    token: uuid.UUID | None = None  # held by the message that created the row


@dataclass(frozen=True)
class SubmitClaim:
    scoring_id: uuid.UUID
    token: uuid.UUID
    round_id: int
    attempt: int
    media_id: str  # the caller's id: Vidmob's media id
    url: str
    version: str | None
    channels: tuple[str, ...]
    workspace_id: int | None


@dataclass(frozen=True)
class PollClaim:
    scoring_id: uuid.UUID
    token: uuid.UUID
    round_id: int
    lookup_id: str  # Vidmob's uniqueId, or the caller's media id after a 409
    channels: tuple[str, ...]
    rescore_count: int
    error_polls: int
    deadline_at: dt.datetime | None


@dataclass
class ScoringOutcome:
    """What a step decided, for the task to act on after commit."""

    state: ScoringState | None = None
    dispatches: list[Dispatch] = field(default_factory=list)
    ended: bool = False  # reached a final state here: the callback is owed
    stale: bool = False  # the token did not match: someone else owns the media now


# --- accept ------------------------------------------------------------------------


def accept_media(
    session: Session,
    payload: dict[str, Any],
    *,
    task_id: str,
    settings: Settings,
    now: dt.datetime,
    positional_args: tuple[Any, ...] = (),
) -> AcceptedMedia:
    """Store the request with its first round, as SUBMITTING; or as REJECTED with a reason.
    The same request_id again returns the existing row and creates nothing."""
    request_id = tagging.request_id_for(payload, task_id)
    existing = session.execute(
        select(ScoredMedia.id, ScoredMedia.state, ScoredMedia.error).where(ScoredMedia.request_id == request_id)
    ).first()
    if existing:
        return AcceptedMedia(existing.id, ScoringState(existing.state), created=False, error=existing.error)

    error: str | None = None
    request: ScoreMediaRequest | None = None
    if positional_args:
        error = (
            "aperture.score_media takes keyword arguments only "
            "(id, url, version, channels, workspace_id, request_id, callback)"
        )
    else:
        try:
            request = ScoreMediaRequest.model_validate(payload)
        except ValidationError as exc:
            error = describe_errors(exc)

    callback = request.callback if request else parse_callback(payload.get("callback"))
    values: dict[str, Any] = {
        "request_id": request_id,
        "payload": tagging._storable(payload if not positional_args else {"args": list(positional_args), **payload}),
        "callback": callback.model_dump() if callback else None,
    }
    if request is None:
        values |= {
            "state": ScoringState.REJECTED,
            "error": error,
            "media_id": _short(payload.get("id")),
            "url": payload.get("url") if isinstance(payload.get("url"), str) else None,
            "ended_at": now,
            "callback_status": CallbackStatus.PENDING if callback else CallbackStatus.NONE,
        }
    else:
        values |= {
            "state": ScoringState.SUBMITTING,
            "media_id": request.id,
            "url": request.url,
            "version": request.version,
            "channels": list(dict.fromkeys(request.channels)),
            "workspace_id": request.workspace_id,
            "round_count": 1,
            "deadline_at": now + dt.timedelta(seconds=settings.scoring_round_deadline_s),
            # Held by the message being processed; the sweeper takes over once the lease passed.
            "next_poll_at": lease_until(now, settings),
            "poll_token": uuid.uuid4(),
            "poll_dispatched": False,
        }
    scoring_id = session.execute(
        pg_insert(ScoredMedia)
        .values(**values)
        .on_conflict_do_nothing(index_elements=[ScoredMedia.request_id])
        .returning(ScoredMedia.id)
    ).scalar_one_or_none()
    if scoring_id is None:  # a concurrent delivery of the same request won
        row = session.execute(
            select(ScoredMedia.id, ScoredMedia.state, ScoredMedia.error).where(ScoredMedia.request_id == request_id)
        ).one()
        return AcceptedMedia(row.id, ScoringState(row.state), created=False, error=row.error)
    if request is not None:
        session.execute(
            insert(ScoringRound).values(
                scored_media_id=scoring_id,
                number=1,
                version=request.version,
                reason="initial",
                status=RoundStatus.SUBMITTING,
            )
        )
    return AcceptedMedia(
        scoring_id, ScoringState(values["state"]), created=True, error=error, token=values.get("poll_token")
    )


def _short(value: Any) -> str | None:
    return value[:255] if isinstance(value, str) and value else None


# --- submit ------------------------------------------------------------------------


def claim_submission(
    session: Session, scoring_id: uuid.UUID, token: uuid.UUID, *, settings: Settings, now: dt.datetime
) -> SubmitClaim | None:
    """Take the right to submit the media's current round; only the current token holds it."""
    new_token = uuid.uuid4()
    row = session.execute(
        update(ScoredMedia)
        .where(
            ScoredMedia.id == scoring_id, ScoredMedia.state == ScoringState.SUBMITTING, ScoredMedia.poll_token == token
        )
        .values(poll_token=new_token, poll_dispatched=False, next_poll_at=lease_until(now, settings))
        .returning(
            ScoredMedia.media_id,
            ScoredMedia.url,
            ScoredMedia.channels,
            ScoredMedia.workspace_id,
            ScoredMedia.round_count,
        )
    ).first()
    if row is None:
        return None
    rnd = session.execute(
        update(ScoringRound)
        .where(ScoringRound.scored_media_id == scoring_id, ScoringRound.number == row.round_count)
        .values(submit_attempts=ScoringRound.submit_attempts + 1)
        .returning(ScoringRound.id, ScoringRound.version, ScoringRound.submit_attempts)
    ).one()
    return SubmitClaim(
        scoring_id=scoring_id,
        token=new_token,
        round_id=rnd.id,
        attempt=rnd.submit_attempts,
        media_id=row.media_id,
        url=row.url,
        version=rnd.version,
        channels=tuple(row.channels),
        workspace_id=row.workspace_id,
    )


def record_submitted(
    session: Session,
    claim: SubmitClaim,
    unique_id: str | None,
    *,
    settings: Settings,
    now: dt.datetime,
    conflict: bool = False,
) -> ScoringOutcome:
    """Vidmob accepted the round (``unique_id``), or answered 409 for the same id + version
    (``conflict``): an earlier attempt of ours was accepted, so it is submitted all the same."""
    delay = jittered(settings.scoring_poll_initial_s, settings)
    nxt = schedule(now, delay, settings)
    moved = session.execute(
        update(ScoredMedia)
        .where(
            ScoredMedia.id == claim.scoring_id,
            ScoredMedia.poll_token == claim.token,
            ScoredMedia.state == ScoringState.SUBMITTING,
        )
        .values(
            state=ScoringState.POLLING,
            next_poll_at=nxt.at,
            poll_token=nxt.token,
            poll_dispatched=nxt.dispatched,
            error=None,
        )
        .returning(ScoredMedia.id)
    ).first()
    if moved is None:
        log.error("scored media %s: round submitted but the media was taken over", claim.scoring_id)
        return ScoringOutcome(stale=True)
    session.execute(
        update(ScoringRound)
        .where(ScoringRound.id == claim.round_id)
        .values(
            status=RoundStatus.SCORING,
            vidmob_unique_id=unique_id,
            conflict=conflict,
            submitted_at=now,
            error="409: this media id and version were already submitted (by an earlier attempt)" if conflict else None,
        )
    )
    dispatches = [MediaDispatch(POLL_SCORING_TASK, claim.scoring_id, nxt.token, delay)] if nxt.dispatched else []
    return ScoringOutcome(state=ScoringState.POLLING, dispatches=dispatches)


def record_submit_error(
    session: Session, claim: SubmitClaim, error: ApiError, *, settings: Settings, now: dt.datetime
) -> ScoringOutcome:
    """A terminal error fails the media; a retryable one tries again with backoff until the
    round's deadline."""
    if not error.retryable:
        return _end(
            session, claim.scoring_id, claim.token, claim.round_id, ScoringState.FAILED, now,
            error=f"submission refused: {error}", round_status=RoundStatus.FAILED,
        )  # fmt: skip
    deadline = session.execute(select(ScoredMedia.deadline_at).where(ScoredMedia.id == claim.scoring_id)).scalar_one()
    delay = backoff(claim.attempt, settings, error.retry_after)
    if deadline is not None and now + dt.timedelta(seconds=delay) > deadline:
        return _end(
            session, claim.scoring_id, claim.token, claim.round_id, ScoringState.TIMED_OUT, now,
            error=f"could not submit before the deadline; last error: {error}", round_status=RoundStatus.TIMED_OUT,
        )  # fmt: skip
    nxt = schedule(now, delay, settings)
    if not _move(session, claim.scoring_id, claim.token, ScoringState.SUBMITTING, nxt, error=str(error)):
        return ScoringOutcome(stale=True)
    session.execute(update(ScoringRound).where(ScoringRound.id == claim.round_id).values(error=str(error)))
    dispatches = [MediaDispatch(SUBMIT_SCORING_TASK, claim.scoring_id, nxt.token, delay)] if nxt.dispatched else []
    return ScoringOutcome(state=ScoringState.SUBMITTING, dispatches=dispatches)


# --- poll --------------------------------------------------------------------------


def claim_poll(
    session: Session, scoring_id: uuid.UUID, token: uuid.UUID, *, settings: Settings, now: dt.datetime
) -> PollClaim | None:
    """Take the poll that ``token`` stands for. A duplicate or stale message gets None."""
    new_token = uuid.uuid4()
    row = session.execute(
        update(ScoredMedia)
        .where(ScoredMedia.id == scoring_id, ScoredMedia.poll_token == token, ScoredMedia.state == ScoringState.POLLING)
        .values(poll_token=new_token, poll_dispatched=False, next_poll_at=lease_until(now, settings))
        .returning(
            ScoredMedia.media_id,
            ScoredMedia.channels,
            ScoredMedia.round_count,
            ScoredMedia.rescore_count,
            ScoredMedia.deadline_at,
        )
    ).first()
    if row is None:
        return None
    rnd = session.execute(
        select(ScoringRound.id, ScoringRound.vidmob_unique_id, ScoringRound.error_polls).where(
            ScoringRound.scored_media_id == scoring_id, ScoringRound.number == row.round_count
        )
    ).one()
    return PollClaim(
        scoring_id=scoring_id,
        token=new_token,
        round_id=rnd.id,
        lookup_id=rnd.vidmob_unique_id or row.media_id,
        channels=tuple(row.channels),
        rescore_count=row.rescore_count,
        error_polls=rnd.error_polls,
        deadline_at=row.deadline_at,
    )


def time_out(session: Session, claim: PollClaim, now: dt.datetime) -> ScoringOutcome:
    return _end(
        session, claim.scoring_id, claim.token, claim.round_id, ScoringState.TIMED_OUT, now,
        error="Vidmob did not score the media before the round's deadline", round_status=RoundStatus.TIMED_OUT,
    )  # fmt: skip


def record_poll(
    session: Session,
    claim: PollClaim,
    status: MediaScoringStatus,
    scores: Scores | None,
    *,
    settings: Settings,
    now: dt.datetime,
) -> ScoringOutcome:
    """Act on a status (and, when COMPLETE, the scores fetched with it)."""
    session.execute(
        update(ScoringRound)
        .where(ScoringRound.id == claim.round_id)
        .values(poll_count=ScoringRound.poll_count + 1, vidmob_status=status.value)
    )
    if status is MediaScoringStatus.COMPLETE and scores is not None:
        return _record_scores(session, claim, scores, settings=settings, now=now)
    if status is MediaScoringStatus.UNSUPPORTED:
        return _end(
            session, claim.scoring_id, claim.token, claim.round_id, ScoringState.UNSUPPORTED, now,
            error="Vidmob cannot score this media (UNSUPPORTED)", round_status=RoundStatus.UNSUPPORTED,
        )  # fmt: skip
    if status is MediaScoringStatus.FAILED:
        return _end(
            session, claim.scoring_id, claim.token, claim.round_id, ScoringState.FAILED, now,
            error="Vidmob failed to score this media (FAILED)", round_status=RoundStatus.FAILED,
        )  # fmt: skip
    if status is MediaScoringStatus.ERROR:
        # Vidmob's transient failure: look again, backing off as the errors repeat.
        session.execute(
            update(ScoringRound)
            .where(ScoringRound.id == claim.round_id)
            .values(error_polls=ScoringRound.error_polls + 1, error="Vidmob scoring status ERROR")
        )
        return _repoll(session, claim, backoff(claim.error_polls + 1, settings), settings, now, error="status ERROR")
    return _repoll(session, claim, jittered(settings.scoring_poll_interval_s, settings), settings, now, error=None)


def record_poll_error(
    session: Session, claim: PollClaim, error: ApiError, *, settings: Settings, now: dt.datetime
) -> ScoringOutcome:
    if not error.retryable:
        return _end(
            session, claim.scoring_id, claim.token, claim.round_id, ScoringState.FAILED, now,
            error=f"status or scores refused: {error}", round_status=RoundStatus.FAILED,
        )  # fmt: skip
    delay = min(settings.scoring_poll_interval_s, backoff(1, settings, error.retry_after))
    if error.retry_after is not None:
        delay = max(delay, error.retry_after)
    session.execute(update(ScoringRound).where(ScoringRound.id == claim.round_id).values(error=str(error)))
    return _repoll(session, claim, delay, settings, now, error=str(error))


def _repoll(
    session: Session, claim: PollClaim, delay: float, settings: Settings, now: dt.datetime, error: str | None
) -> ScoringOutcome:
    nxt = schedule(now, delay, settings)
    if not _move(session, claim.scoring_id, claim.token, ScoringState.POLLING, nxt, error=error):
        return ScoringOutcome(stale=True)
    dispatches = [MediaDispatch(POLL_SCORING_TASK, claim.scoring_id, nxt.token, delay)] if nxt.dispatched else []
    return ScoringOutcome(state=ScoringState.POLLING, dispatches=dispatches)


def action_of(result: str) -> ScoreAction:
    try:
        return classify_result(result)
    except ValueError:
        # A verdict Vidmob added after this code was written: keep it, do not loop on it.
        log.warning("unknown guideline result %r recorded as not fixable", result[:64])
        return ScoreAction.NOT_FIXABLE


def decide(actions: Iterable[ScoreAction]) -> ScoreAction:
    """The one thing a round's results ask for, by precedence."""
    found = set(actions)
    for action in (ScoreAction.WAIT_AND_REFETCH, *_TAGGING_ACTIONS, ScoreAction.RESCORE, ScoreAction.NOT_FIXABLE):
        if action in found:
            return action
    return ScoreAction.SCORED


def _record_scores(
    session: Session, claim: PollClaim, scores: Scores, *, settings: Settings, now: dt.datetime
) -> ScoringOutcome:
    store_scores(session, claim.round_id, scores)
    actions = [action_of(d.result) for d in scores.detail]
    action = decide(actions)
    codes = sorted({d.result.strip().upper() for d in scores.detail if d.result.strip().upper().startswith("NO_DATA")})
    round_values: dict[str, Any] = {
        "fetch_count": ScoringRound.fetch_count + 1,
        "no_data_codes": codes,
        "action": action.value,
        "error": None,
    }

    if action is ScoreAction.WAIT_AND_REFETCH:
        # The round is not done: the same submission's scores are fetched again later.
        session.execute(update(ScoringRound).where(ScoringRound.id == claim.round_id).values(**round_values))
        return _repoll(session, claim, settings.scoring_backlog_wait_s, settings, now, error="NO_DATA_SCORING_BACKLOG")

    round_values |= {"status": RoundStatus.COMPLETE, "scored_at": now}
    session.execute(update(ScoringRound).where(ScoringRound.id == claim.round_id).values(**round_values))

    if action in (*_TAGGING_ACTIONS, ScoreAction.RESCORE) and claim.rescore_count >= settings.max_rescores:
        fix = "tagging and rescoring" if action in _TAGGING_ACTIONS else "rescoring"
        return _end(
            session, claim.scoring_id, claim.token, None, ScoringState.NEEDS_ATTENTION, now,
            error=f"still {', '.join(codes)} after {claim.rescore_count} rescores "
            f"(APERTURE_MAX_RESCORES={settings.max_rescores}); {fix} did not fix it",
        )  # fmt: skip
    if action in _TAGGING_ACTIONS:
        return _flag_for_tagging(session, claim, settings=settings, now=now)
    if action is ScoreAction.RESCORE:
        reason = next(d.result.strip().upper() for d in scores.detail if action_of(d.result) is ScoreAction.RESCORE)
        return _rescore_now(session, claim, reason, settings=settings, now=now)
    error = f"not fixable by retrying: {', '.join(codes)}" if action is ScoreAction.NOT_FIXABLE else None
    return _end(session, claim.scoring_id, claim.token, None, ScoringState.SCORED, now, error=error)


def store_scores(session: Session, round_id: int, scores: Scores) -> None:
    """Replace the round's summary and results (a refetch of the same round overwrites them)."""
    session.execute(delete(ScoringChannelSummary).where(ScoringChannelSummary.round_id == round_id))
    session.execute(delete(ScoringGuidelineResult).where(ScoringGuidelineResult.round_id == round_id))
    if scores.summary:
        session.execute(
            insert(ScoringChannelSummary),
            [
                {
                    "round_id": round_id,
                    "channel": channel[:64],
                    "adherence_percent": s.adherence_percent,
                    "pass_count": s.pass_count,
                    "fail_count": s.fail_count,
                    "applicable_count": s.applicable_count,
                    "not_applicable_count": s.not_applicable_count,
                    "not_available_count": s.not_available_count,
                }
                for channel, s in scores.summary.items()
            ],
        )
    if scores.detail:
        session.execute(
            insert(ScoringGuidelineResult),
            [
                {
                    "round_id": round_id,
                    "position": i,
                    "channel": d.channel[:64],
                    "name": d.name,
                    "rule": d.rule,
                    "result": d.result[:64],
                    "weight": d.weight,
                }
                for i, d in enumerate(scores.detail)
            ],
        )


def _flag_for_tagging(session: Session, claim: PollClaim, *, settings: Settings, now: dt.datetime) -> ScoringOutcome:
    """Wait a short window so that media flagged together go into one tagging job."""
    nxt = schedule(now, settings.tag_batch_window_s, settings)
    moved = session.execute(
        update(ScoredMedia)
        .where(
            ScoredMedia.id == claim.scoring_id,
            ScoredMedia.poll_token == claim.token,
            ScoredMedia.state == ScoringState.POLLING,
        )
        .values(
            state=ScoringState.AWAITING_TAGS,
            flagged_at=now,
            next_poll_at=nxt.at,
            poll_token=nxt.token,
            poll_dispatched=nxt.dispatched,
            error=None,
        )
        .returning(ScoredMedia.id)
    ).first()
    if moved is None:
        return ScoringOutcome(stale=True)
    dispatches = (
        [MediaDispatch(FLUSH_TAGGING_TASK, claim.scoring_id, nxt.token, settings.tag_batch_window_s)]
        if nxt.dispatched
        else []
    )
    return ScoringOutcome(state=ScoringState.AWAITING_TAGS, dispatches=dispatches)


def _rescore_now(
    session: Session, claim: PollClaim, reason: str, *, settings: Settings, now: dt.datetime
) -> ScoringOutcome:
    nxt = schedule(now, 0.0, settings)
    row = session.execute(
        update(ScoredMedia)
        .where(
            ScoredMedia.id == claim.scoring_id,
            ScoredMedia.poll_token == claim.token,
            ScoredMedia.state == ScoringState.POLLING,
        )
        .values(**_next_round_values(nxt.token, nxt.at, settings, now))
        .returning(ScoredMedia.id, ScoredMedia.round_count, ScoredMedia.rescore_count, ScoredMedia.version)
    ).first()
    if row is None:
        return ScoringOutcome(stale=True)
    _insert_rounds(session, [row], reason=reason, tagging_job_id=None)
    return ScoringOutcome(
        state=ScoringState.SUBMITTING, dispatches=[MediaDispatch(RESCORE_TASK, claim.scoring_id, nxt.token, 0.0)]
    )


def _next_round_values(token: Any, at: Any, settings: Settings, now: dt.datetime) -> dict[str, Any]:
    return {
        "state": ScoringState.SUBMITTING,
        "round_count": ScoredMedia.round_count + 1,
        "rescore_count": ScoredMedia.rescore_count + 1,
        "deadline_at": now + dt.timedelta(seconds=settings.scoring_round_deadline_s),
        "tagging_job_id": None,
        "next_poll_at": at,
        "poll_token": token,
        "poll_dispatched": True,
        "error": None,
    }


def _insert_rounds(session: Session, rows: list[Any], *, reason: str, tagging_job_id: uuid.UUID | None) -> None:
    session.execute(
        insert(ScoringRound),
        [
            {
                "scored_media_id": row.id,
                "number": row.round_count,
                "version": rescore_version(row.version, row.rescore_count),
                "reason": reason,
                "tagging_job_id": tagging_job_id,
                "status": RoundStatus.SUBMITTING,
            }
            for row in rows
        ],
    )


# --- tagging: the batch, and the hook when its job ends -------------------------------


def flush_tagging(session: Session, *, settings: Settings, now: dt.datetime) -> list[Dispatch]:
    """Put every media waiting for tags into tagging jobs, once the oldest has waited the
    batch window: normally ONE job for all of them (up to ``tag_batch_max``).

    A media tagged before (its job failed) goes alone, so one bad asset cannot fail its
    neighbours twice; so does a media whose id is already in the batch with another URL
    (creative ids must be unique within a job). Rows are taken FOR UPDATE SKIP LOCKED, so
    concurrent flushes never batch a media twice.
    """
    rows = session.execute(
        select(
            ScoredMedia.id,
            ScoredMedia.media_id,
            ScoredMedia.url,
            ScoredMedia.tag_attempts,
            ScoredMedia.flagged_at,
        )
        .where(ScoredMedia.state == ScoringState.AWAITING_TAGS)
        .order_by(ScoredMedia.flagged_at, ScoredMedia.id)
        .limit(settings.tag_batch_max)
        .with_for_update(skip_locked=True)
    ).all()
    if not rows or rows[0].flagged_at + dt.timedelta(seconds=settings.tag_batch_window_s) > now:
        return []  # nothing waiting, or the oldest still has time: its own message comes later

    batch: list[Any] = []
    alone: list[list[Any]] = []
    urls_by_media_id: dict[str, str] = {}
    for row in rows:
        if row.tag_attempts > 0 or urls_by_media_id.get(row.media_id, row.url) != row.url:
            alone.append([row])
        else:
            urls_by_media_id[row.media_id] = row.url
            batch.append(row)

    dispatches: list[Dispatch] = []
    for group in ([batch] if batch else []) + alone:
        dispatches.extend(_tag_group(session, group, settings=settings, now=now))
    if len(rows) == settings.tag_batch_max:  # more may be waiting: flush again at once
        dispatches.append(MediaDispatch(FLUSH_TAGGING_TASK, rows[-1].id, NO_TOKEN, 0.0))
    return dispatches


def _tag_group(session: Session, group: list[Any], *, settings: Settings, now: dt.datetime) -> list[Dispatch]:
    assets = list(dict.fromkeys((row.media_id, row.url) for row in group))
    payload = {
        "assets": [{"url": url, "id": media_id} for media_id, url in assets],
        "request_id": f"{TAGGING_REQUEST_PREFIX}{uuid.uuid4()}",
    }
    # A normal tagging job: the whole tagging machinery (submit, poll, sweeper) carries it.
    accepted = tagging.accept_job(
        session, payload, task_id="flush", dialect=settings.vidmob_tags_dialect, settings=settings, now=now
    )
    ids = [row.id for row in group]
    if accepted.state is not JobState.SUBMITTING or accepted.token is None:
        ended = session.execute(
            update(ScoredMedia)
            .where(ScoredMedia.id.in_(ids), ScoredMedia.state == ScoringState.AWAITING_TAGS)
            .values(**_ending_values(ScoringState.NEEDS_ATTENTION, now, f"tagging request refused: {accepted.error}"))
            .returning(ScoredMedia.id)
        ).scalars()
        return [callback_dispatch(i) for i in ended]
    session.execute(
        update(ScoredMedia)
        .where(ScoredMedia.id.in_(ids), ScoredMedia.state == ScoringState.AWAITING_TAGS)
        .values(
            state=ScoringState.TAGGING,
            tagging_job_id=accepted.job_id,
            tag_attempts=ScoredMedia.tag_attempts + 1,
            next_poll_at=None,
            poll_token=None,
            poll_dispatched=False,
        )
    )
    session.execute(insert(ScoredMediaTaggingJob), [{"scored_media_id": i, "job_id": accepted.job_id} for i in ids])
    log.info("tagging job %s carries %d scored media", accepted.job_id, len(ids))
    return [Dispatch(SUBMIT_TASK, accepted.job_id, accepted.token, 0.0)]


def on_tagging_job_ended(
    session: Session, job_id: uuid.UUID, state: JobState, now: dt.datetime, settings: Settings | None = None
) -> list[Dispatch]:
    """Called in the transaction that ends a tagging job. The media it carried are rescored
    (COMPLETE: a new round each, and an ``aperture.rescore`` message each) or sent back to
    be tagged again (FAILED, TIMED_OUT), up to ``max_tag_attempts``."""
    settings = settings or get_settings()
    waiting = (ScoredMedia.tagging_job_id == job_id, ScoredMedia.state == ScoringState.TAGGING)
    if state is JobState.COMPLETE:
        rows = session.execute(
            update(ScoredMedia)
            .where(*waiting)
            .values(**_next_round_values(func.gen_random_uuid(), now, settings, now))
            .returning(
                ScoredMedia.id,
                ScoredMedia.poll_token,
                ScoredMedia.round_count,
                ScoredMedia.rescore_count,
                ScoredMedia.version,
            )
        ).all()
        if not rows:
            return []
        _insert_rounds(session, rows, reason="tagged", tagging_job_id=job_id)
        log.info("tagging job %s complete: rescoring %d media", job_id, len(rows))
        return [MediaDispatch(RESCORE_TASK, row.id, row.poll_token, 0.0) for row in rows]

    job_error = session.execute(select(Job.error).where(Job.id == job_id)).scalar_one_or_none()
    given_up = session.execute(
        update(ScoredMedia)
        .where(*waiting, ScoredMedia.tag_attempts >= settings.max_tag_attempts)
        .values(
            **_ending_values(
                ScoringState.NEEDS_ATTENTION,
                now,
                f"tagging failed {settings.max_tag_attempts} times (APERTURE_MAX_TAG_ATTEMPTS); last: {job_error}",
            )
        )
        .returning(ScoredMedia.id)
    ).scalars()
    dispatches: list[Dispatch] = [callback_dispatch(i) for i in given_up]
    nxt = schedule(now, settings.tag_batch_window_s, settings)
    retag = session.execute(
        update(ScoredMedia)
        .where(*waiting)
        .values(
            state=ScoringState.AWAITING_TAGS,
            flagged_at=now,
            tagging_job_id=None,
            next_poll_at=nxt.at,
            poll_token=func.gen_random_uuid(),
            poll_dispatched=nxt.dispatched,
            error=f"tagging job {job_id} ended {state.value}: {job_error}",
        )
        .returning(ScoredMedia.id, ScoredMedia.poll_token)
    ).all()
    if retag and nxt.dispatched:
        # One flush takes every media waiting; the sweeper resends it if it is lost.
        first = retag[0]
        dispatches.append(MediaDispatch(FLUSH_TAGGING_TASK, first.id, first.poll_token, settings.tag_batch_window_s))
    return dispatches


# --- shared transitions ------------------------------------------------------------


def _move(session: Session, scoring_id: uuid.UUID, token: uuid.UUID, state: ScoringState, nxt, *, error: str | None):
    return (
        session.execute(
            update(ScoredMedia)
            .where(ScoredMedia.id == scoring_id, ScoredMedia.poll_token == token, ScoredMedia.state == state)
            .values(next_poll_at=nxt.at, poll_token=nxt.token, poll_dispatched=nxt.dispatched, error=error)
            .returning(ScoredMedia.id)
        ).first()
        is not None
    )


def _ending_values(state: ScoringState, now: dt.datetime, error: str | None) -> dict[str, Any]:
    return {
        "state": state,
        "error": error,
        "ended_at": now,
        "next_poll_at": None,
        "poll_token": None,
        "poll_dispatched": False,
        # Owed in the same transaction as the end, so it is never forgotten.
        "callback_status": case(
            (ScoredMedia.callback.is_(None), CallbackStatus.NONE.value), else_=CallbackStatus.PENDING.value
        ),
    }


def _end(
    session: Session,
    scoring_id: uuid.UUID,
    token: uuid.UUID,
    round_id: int | None,
    state: ScoringState,
    now: dt.datetime,
    *,
    error: str | None = None,
    round_status: RoundStatus | None = None,
) -> ScoringOutcome:
    ended = session.execute(
        update(ScoredMedia)
        .where(ScoredMedia.id == scoring_id, ScoredMedia.poll_token == token, ScoredMedia.state.in_(ACTIVE))
        .values(**_ending_values(state, now, error))
        .returning(ScoredMedia.id)
    ).first()
    if ended is None:
        return ScoringOutcome(stale=True)
    if round_id is not None and round_status is not None:
        session.execute(
            update(ScoringRound).where(ScoringRound.id == round_id).values(status=round_status, error=error)
        )
    return ScoringOutcome(state=state, ended=True)


# --- callbacks ---------------------------------------------------------------------


def owed_callback(session: Session, scoring_id: uuid.UUID) -> CallbackMessage | None:
    media = session.execute(
        select(ScoredMedia).where(ScoredMedia.id == scoring_id, ScoredMedia.callback_status == CallbackStatus.PENDING)
    ).scalar_one_or_none()
    if media is None or media.callback is None:
        return None
    kwargs: dict[str, Any] = {
        "request_id": media.request_id,
        "media_id": media.media_id,
        "scoring_id": str(media.id),
        "status": media.state.value,
    }
    if media.state is ScoringState.SCORED:
        kwargs["scores"] = final_scores(session, media.id, media.round_count)
    return CallbackMessage(
        task=media.callback["task"],
        queue=media.callback.get("queue"),
        task_id=callback_task_id(media.id),
        kwargs=kwargs,
    )


def final_scores(session: Session, scoring_id: uuid.UUID, round_number: int) -> dict[str, Any]:
    """A round's scores in Vidmob's own shape (``summary`` per channel, ``detail`` list)."""
    round_id = session.execute(
        select(ScoringRound.id).where(ScoringRound.scored_media_id == scoring_id, ScoringRound.number == round_number)
    ).scalar_one()
    summaries = session.execute(
        select(ScoringChannelSummary)
        .where(ScoringChannelSummary.round_id == round_id)
        .order_by(ScoringChannelSummary.channel)
    ).scalars()
    results = session.execute(
        select(ScoringGuidelineResult)
        .where(ScoringGuidelineResult.round_id == round_id)
        .order_by(ScoringGuidelineResult.position)
    ).scalars()
    return {
        "summary": {
            s.channel: {
                "adherencePercent": s.adherence_percent,
                "passCount": s.pass_count,
                "failCount": s.fail_count,
                "applicableCount": s.applicable_count,
                "notApplicableCount": s.not_applicable_count,
                "notAvailableCount": s.not_available_count,
            }
            for s in summaries
        },
        "detail": [
            {"name": r.name, "rule": r.rule, "channelIdentifier": r.channel, "result": r.result, "weight": r.weight}
            for r in results
        ],
    }


def mark_callback_sent(session: Session, scoring_id: uuid.UUID) -> bool:
    return (
        session.execute(
            update(ScoredMedia)
            .where(ScoredMedia.id == scoring_id, ScoredMedia.callback_status == CallbackStatus.PENDING)
            .values(callback_status=CallbackStatus.SENT, callback_sent_at=func.now())
            .returning(ScoredMedia.id)
        ).first()
        is not None
    )
