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
from services.durable import intake
from services.scoring.kind import KIND

USAGE = (
    "aperture.score_media takes keyword arguments only (id, url, version, channels, workspace_id, request_id, callback)"
)


def accept_media(
    session: Session,
    payload: dict[str, Any],
    *,
    task_id: str,
    settings: Settings,
    now: dt.datetime,
    positional_args: tuple[Any, ...] = (),
) -> intake.Accepted:
    """Store the request with its first round, as SUBMITTING; or as REJECTED with a reason.
    The same request_id again returns the existing row and creates nothing."""
    return intake.accept(
        session,
        KIND,
        payload,
        contract=ScoreMediaRequest,
        usage=USAGE,
        fields=lambda request: {
            "media_id": request.id,
            "url": request.url,
            "version": request.version,
            "channels": list(dict.fromkeys(request.channels)),
            "workspace_id": request.workspace_id,
            "round_count": 1,
            "deadline_at": now + dt.timedelta(seconds=settings.scoring_round_deadline_s),
        },
        rejected_fields=lambda raw: {
            "media_id": _short(raw.get("id")),
            "url": raw.get("url") if isinstance(raw.get("url"), str) else None,
        },
        on_created=_first_round,
        task_id=task_id,
        settings=settings,
        now=now,
        positional_args=positional_args,
    )


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


def _short(value: Any) -> str | None:
    return value[:255] if isinstance(value, str) and value else None
