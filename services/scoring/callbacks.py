"""What a scored media's callback says (contract: docs/scoring.md)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from models import ScoredMedia, ScoringState
from services.scoring.storage import final_scores


def callback_kwargs(session: Session, media: ScoredMedia) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "request_id": media.request_id,
        "media_id": media.media_id,
        "scoring_id": str(media.id),
        "status": media.state.value,
    }
    if media.state is ScoringState.SCORED:
        kwargs["scores"] = final_scores(session, media.id, media.round_count)
    return kwargs
