"""What a scoring status and a round's scores ask for: pure decisions (tests/test_decisions.py).

No session, no clock, no environment: given what Vidmob answered and where the media is in
its loop, the next state and when to look again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from clients.scoring import MediaScoringStatus, ScoreAction, Scores, classify_result
from config import Settings
from services.durable.policy import FAILED, End, LookAgain
from services.durable.prediction import Prediction
from services.durable.schedule import backoff, look_delay

log = logging.getLogger(__name__)

SCORED = "scored"
UNSUPPORTED = "unsupported"
NEEDS_ATTENTION = "needs_attention"
# The order in which a round's results decide: scores not ready > tags missing > rescore > done.
TAGGING_ACTIONS = (ScoreAction.TAG_THEN_RESCORE, ScoreAction.RETAG_THEN_RESCORE)
PRECEDENCE = (ScoreAction.WAIT_AND_REFETCH, *TAGGING_ACTIONS, ScoreAction.RESCORE, ScoreAction.NOT_FIXABLE)


@dataclass(frozen=True)
class FlagForTagging:
    """Wait the batch window with other media, then go into one tagging job."""


@dataclass(frozen=True)
class Rescore:
    reason: str  # the NO_DATA code that asked for it


@dataclass(frozen=True)
class Verdict:
    """What a round's scores say: the action recorded on the round, the NO_DATA codes seen,
    and what the media does next. ``complete`` is False while the scores are not final."""

    action: ScoreAction
    codes: tuple[str, ...]
    next: End | LookAgain | FlagForTagging | Rescore
    complete: bool = True


def rescore_version(original: str | None, rescore_number: int) -> str:
    """Vidmob has no rescore endpoint: a rescore is the same media under a new version."""
    return f"{original or '1'}-r{rescore_number}"


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
    return next((action for action in PRECEDENCE if action in found), ScoreAction.SCORED)


def first_look(prediction: Prediction | None, *, settings: Settings) -> float:
    """After a round is submitted: near its predicted finish, or ``APERTURE_SCORING_POLL_INITIAL_S``
    without a prediction (the fixed schedule, a cold start)."""
    return look_delay(
        prediction,
        0.0,
        fixed_s=settings.scoring_poll_initial_s,
        max_s=settings.scoring_poll_interval_s,
        settings=settings,
    )


def after_status(
    status: MediaScoringStatus,
    *,
    error_polls: int,
    settings: Settings,
    prediction: Prediction | None = None,
    elapsed_s: float = 0.0,
) -> End | LookAgain:
    """A status that is not COMPLETE (COMPLETE comes with its scores: ``after_scores``). Still
    processing: look again when the predicted duration says it is worth it (adaptive polling, never
    later than the scoring poll interval), or after that interval without a prediction."""
    if status is MediaScoringStatus.UNSUPPORTED:
        return End(UNSUPPORTED, "Vidmob cannot score this media (UNSUPPORTED)")
    if status is MediaScoringStatus.FAILED:
        return End(FAILED, "Vidmob failed to score this media (FAILED)")
    if status is MediaScoringStatus.ERROR:
        # Vidmob's transient failure: look again, backing off as the errors repeat.
        return LookAgain(backoff(error_polls + 1, settings), "status ERROR")
    fixed = settings.scoring_poll_interval_s
    return LookAgain(look_delay(prediction, elapsed_s, fixed_s=fixed, max_s=fixed, settings=settings))


def after_scores(scores: Scores, *, rescore_count: int, settings: Settings) -> Verdict:
    """Done, tag then rescore, rescore, fetch again later, or a person must look (the bound)."""
    results = [d.result.strip().upper() for d in scores.detail]
    actions = [action_of(d.result) for d in scores.detail]
    action = decide(actions)
    # What kept the round from a plain verdict: its NO_DATA codes, and any result Vidmob added
    # after this code was written (docs/scoring.md: named on the round and in the error).
    codes = tuple(sorted({r for r, a in zip(results, actions, strict=True) if a is not ScoreAction.SCORED}))

    if action is ScoreAction.WAIT_AND_REFETCH:
        # Not done: the same submission's scores are fetched again later.
        return Verdict(action, codes, LookAgain(settings.scoring_backlog_wait_s, "NO_DATA_SCORING_BACKLOG"), False)
    if action in (*TAGGING_ACTIONS, ScoreAction.RESCORE) and rescore_count >= settings.max_rescores:
        fix = "tagging and rescoring" if action in TAGGING_ACTIONS else "rescoring"
        error = (
            f"still {', '.join(codes)} after {rescore_count} rescores "
            f"(APERTURE_MAX_RESCORES={settings.max_rescores}); {fix} did not fix it"
        )
        return Verdict(action, codes, End(NEEDS_ATTENTION, error))
    if action in TAGGING_ACTIONS:
        return Verdict(action, codes, FlagForTagging())
    if action is ScoreAction.RESCORE:
        reason = next(r for r, a in zip(results, actions, strict=True) if a is ScoreAction.RESCORE)
        return Verdict(action, codes, Rescore(reason))
    not_fixable = f"not fixable by retrying: {', '.join(codes)}" if action is ScoreAction.NOT_FIXABLE else None
    return Verdict(action, codes, End(SCORED, not_fixable))
