"""A round's scores: stored as Vidmob sent them (per channel, per guideline), read back for callbacks."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from clients.scoring import Scores
from models import ScoringChannelSummary, ScoringGuidelineResult, ScoringRound


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
