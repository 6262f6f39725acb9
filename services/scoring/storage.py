"""A round's scores: stored as Vidmob sent them (per channel, per guideline), read back for callbacks."""

from __future__ import annotations

import math
import uuid
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from clients.scoring import Scores
from models import ScoringChannelSummary, ScoringGuidelineResult, ScoringRound
from services.durable.storable import clipped, pg_safe

_INT_MAX = 2**31 - 1


def store_scores(session: Session, round_id: int, scores: Scores) -> None:
    """Replace the round's summary and results (a refetch of the same round overwrites them).
    Vidmob's values are made storable first: text without NUL, cut to its column; counts within
    INTEGER; numbers finite (else NULL)."""
    session.execute(delete(ScoringChannelSummary).where(ScoringChannelSummary.round_id == round_id))
    session.execute(delete(ScoringGuidelineResult).where(ScoringGuidelineResult.round_id == round_id))
    if scores.summary:
        session.execute(
            insert(ScoringChannelSummary),
            [
                {
                    "round_id": round_id,
                    "channel": clipped(channel, 64),
                    "adherence_percent": _number(s.adherence_percent),
                    "pass_count": _count(s.pass_count),
                    "fail_count": _count(s.fail_count),
                    "applicable_count": _count(s.applicable_count),
                    "not_applicable_count": _count(s.not_applicable_count),
                    "not_available_count": _count(s.not_available_count),
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
                    "channel": clipped(d.channel, 64),
                    "name": pg_safe(d.name),
                    "rule": pg_safe(d.rule),
                    "result": clipped(d.result, 64),
                    "weight": _number(d.weight),
                }
                for i, d in enumerate(scores.detail)
            ],
        )


def _count(value: int) -> int:
    return min(max(value, 0), _INT_MAX)


def _number(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


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
