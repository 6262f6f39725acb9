"""Accepting ``aperture.score_media``: the scored media row with its first round, or a rejected row."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import Session

from config import Settings
from models import RoundStatus, ScoringRound
from services.contract import ScoreMediaRequest
from services.durable.intake import Intake
from services.scoring.kind import KIND


def _media(request: ScoreMediaRequest, settings: Settings, now: dt.datetime) -> dict[str, Any]:
    return {
        "media_id": request.id,
        "url": request.url,
        "version": request.version,
        "channels": list(dict.fromkeys(request.channels)),
        "workspace_id": request.workspace_id,
        "round_count": 1,
        "deadline_at": now + dt.timedelta(seconds=settings.scoring_round_deadline_s),
    }


def _first_round(session: Session, scoring_id: uuid.UUID, request: ScoreMediaRequest) -> None:
    session.execute(
        insert(ScoringRound).values(
            scored_media_id=scoring_id,
            number=1,
            version=request.version,
            reason="initial",
            status=RoundStatus.SUBMITTING,
        )
    )


def _rejected(payload: dict[str, Any], *_: object) -> dict[str, Any]:
    # What identifies the media, when the payload had it in a usable form.
    media_id, url = payload.get("id"), payload.get("url")
    return {
        "media_id": media_id[:255] if isinstance(media_id, str) and media_id else None,
        "url": url if isinstance(url, str) else None,
    }


INTAKE = Intake(
    kind=KIND,
    contract=ScoreMediaRequest,
    usage="aperture.score_media takes keyword arguments only "
    "(id, url, version, channels, workspace_id, request_id, caller, callback)",
    fields=_media,
    rejected_fields=_rejected,
    on_created=_first_round,
)
