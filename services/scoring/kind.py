"""A scored media, as the durable engine sees it."""

from __future__ import annotations

from typing import Protocol

from config import tasks
from models import ACTIVE_SCORING_STATES, ScoredMedia, ScoringState
from services.durable.kind import DurableKind
from services.scoring.callbacks import callback_kwargs


class _Rounds(Protocol):
    round_count: int


def _route(state: ScoringState, row: _Rounds) -> str | None:
    """A round after the first is a rescore: submitted, and submitted again (after a transient error
    or a lost message), by ``aperture.rescore``, the loop's chained task; the first round by
    ``aperture.submit_scoring``. The same step either way: two names, so that Flower and the task
    metrics tell rescores from first submissions."""
    return tasks.RESCORE.name if state is ScoringState.SUBMITTING and row.round_count > 1 else None


KIND: DurableKind[ScoredMedia, ScoringState] = DurableKind(
    name="scored_media",
    model=ScoredMedia,
    states=ScoringState,
    id_kwarg="scoring_id",
    # A media in TAGGING is looked at through its tagging job (services/scoring/tag_batches.py).
    look_tasks={
        ScoringState.SUBMITTING: tasks.SUBMIT_SCORING.name,
        ScoringState.POLLING: tasks.POLL_SCORING.name,
        ScoringState.AWAITING_TAGS: tasks.FLUSH_TAGGING.name,
    },
    active_states=ACTIVE_SCORING_STATES,
    callback_prefix="aperture-score-callback",
    callback_kwargs=callback_kwargs,
    attempt_owner="scored_media_id",
    route=_route,
    route_columns=(ScoredMedia.round_count,),
)
