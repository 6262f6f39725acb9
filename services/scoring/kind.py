"""A scored media, as the durable engine sees it."""

from __future__ import annotations

from config import tasks
from models import ScoredMedia, ScoringState
from services.durable.kind import DurableKind
from services.scoring.callbacks import callback_kwargs

KIND = DurableKind(
    name="scored_media",
    model=ScoredMedia,
    id_kwarg="scoring_id",
    # A media in TAGGING is looked at through its tagging job (services/scoring/batching.py).
    look_tasks={
        ScoringState.SUBMITTING.value: tasks.SUBMIT_SCORING.name,
        ScoringState.POLLING.value: tasks.POLL_SCORING.name,
        ScoringState.AWAITING_TAGS.value: tasks.FLUSH_TAGGING.name,
    },
    active_states=(ScoringState.SUBMITTING.value, ScoringState.POLLING.value),
    callback_prefix="aperture-score-callback",
    callback_kwargs=callback_kwargs,
    attempt_owner="scored_media_id",
)
