"""Rows in a given place of their lifecycle, for tests that start from a state rather than a request.

Each factory inserts one or many rows with every column the engine and the models need, and returns
what a test acts on (ids, tokens). The engine's columns say where the row is: ``due_at`` (when its
next look is due), ``sent_at`` (a message carrying its token was sent then; None: parked),
``leased_until`` (a worker holds it).
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from models import Asset, Job, JobState, RoundStatus, ScoredMedia, ScoringRound, ScoringState
from models.db import session_scope

CDN = "https://cdn.example.com/factory"


@dataclass(frozen=True)
class Made:
    id: uuid.UUID
    token: uuid.UUID | None
    request_id: str


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def job_values(
    *,
    state: JobState = JobState.POLLING,
    due_at: dt.datetime | None = None,
    sent_at: dt.datetime | None = None,
    leased_until: dt.datetime | None = None,
    request_id: str | None = None,
    **columns: Any,
) -> dict[str, Any]:
    """The columns of one job row; an active one is looked at (``due_at`` defaults to now), an ended
    one is not, and has ended."""
    at = now()
    active = state.is_active and state is not JobState.PACKED
    values: dict[str, Any] = {
        "request_id": request_id or f"factory-{uuid.uuid4()}",
        "state": state,
        "payload": {},
        "dialect": "guide",
        "asset_count": 1,
        "deadline_at": at + dt.timedelta(days=1),
        "next_poll_at": (due_at or at) if active else None,
        "poll_token": uuid.uuid4() if active else None,
        "dispatched_at": sent_at if active else None,
        "leased_until": leased_until if active else None,
        "ended_at": None if state.is_active else at,
    }
    if state is JobState.POLLING:
        values["vidmob_job_id"] = f"vm-{uuid.uuid4().hex[:12]}"
        values["submitted_at"] = at
    return values | columns


def insert_jobs(session: Session, rows: list[dict[str, Any]], *, urls: list[str] | None = None) -> list[Made]:
    """Insert job rows (``job_values``), each with one asset (its URL from ``urls``, else a made-up one)."""
    made = session.execute(insert(Job).returning(Job.id, Job.poll_token, Job.request_id), rows).all()
    by_request = {r.request_id: r for r in made}
    ordered = [by_request[r["request_id"]] for r in rows]
    session.execute(
        insert(Asset),
        [
            {"job_id": r.id, "position": 0, "url": (urls[i] if urls else f"{CDN}/{r.id}.mp4")}
            for i, r in enumerate(ordered)
        ],
    )
    return [Made(r.id, r.poll_token, r.request_id) for r in ordered]


def jobs(n: int = 1, *, urls: list[str] | None = None, **values: Any) -> list[Made]:
    """``n`` job rows (``job_values``), committed."""
    with session_scope() as session:
        return insert_jobs(session, [job_values(**values) for _ in range(n)], urls=urls)


def job(**values: Any) -> Made:
    return jobs(1, **values)[0]


def scored_media(
    *,
    url: str,
    state: ScoringState = ScoringState.POLLING,
    due_at: dt.datetime | None = None,
    sent_at: dt.datetime | None = None,
    media_id: str = "media",
    unique_id: str | None = None,
    request_id: str | None = None,
    rounds: int = 1,
) -> Made:
    """One scored media in its ``rounds``-th round (``SCORING`` at Vidmob under ``unique_id`` when
    polling; the rounds before it complete), committed."""
    at = now()
    request_id = request_id or f"factory-{uuid.uuid4()}"
    with session_scope() as session:
        row = session.execute(
            insert(ScoredMedia)
            .values(
                request_id=request_id,
                state=state,
                media_id=media_id,
                url=url,
                payload={},
                round_count=rounds,
                rescore_count=rounds - 1,
                deadline_at=at + dt.timedelta(hours=1),
                next_poll_at=due_at or at,
                poll_token=uuid.uuid4(),
                dispatched_at=sent_at,
            )
            .returning(ScoredMedia.id, ScoredMedia.poll_token)
        ).one()
        polling = state is ScoringState.POLLING
        session.execute(
            insert(ScoringRound),
            [
                {
                    "scored_media_id": row.id,
                    "number": number,
                    "reason": "initial" if number == 1 else "tagged",
                    "status": (RoundStatus.SCORING if polling else RoundStatus.SUBMITTING)
                    if number == rounds
                    else RoundStatus.COMPLETE,
                    "vidmob_unique_id": unique_id if number == rounds else f"earlier-{number}",
                    "submitted_at": at if polling or number < rounds else None,
                }
                for number in range(1, rounds + 1)
            ],
        )
    return Made(row.id, row.poll_token, request_id)


def token_of(job_id: uuid.UUID) -> uuid.UUID | None:
    with session_scope() as session:
        return session.execute(select(Job.poll_token).where(Job.id == job_id)).scalar_one()
