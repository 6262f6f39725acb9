"""The durations adaptive polling learns from, read from PostgreSQL at most every
``APERTURE_POLL_MODEL_REFRESH_S`` by each worker process: no query per poll.

One query per kind reads the latest ``APERTURE_POLL_MODEL_JOBS`` finished rows (by the index on
state and creation time), newest first, with, for each, the interval its true duration lies in: from
submission, the last status check that found it unfinished (the API attempts) and the one that found
it done, and its age; for tagging, a second reads the sizes of the jobs being polled. The model is
services/durable/prediction.py; the plans of checks made from it
when it is refreshed, services/durable/checking.py.
"""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.orm import Session

from config import Settings
from services.durable.checking import Forecast, Policy, refresh
from services.durable.prediction import Observation, Prediction

TAGGING = "job"
SCORING = "scoring"

# Per finished job: its dialect, asset count, and from its submission, the second-latest successful
# status check (the latest found it done) and its completion.
_TAGGING_OBSERVATIONS = text("""
SELECT 'job:' || j.dialect AS grp, j.asset_count AS units,
       coalesce(extract(epoch FROM prev.attempted_at - j.submitted_at), 0) AS lower_s,
       extract(epoch FROM j.completed_at - j.submitted_at) AS upper_s,
       extract(epoch FROM now() - j.submitted_at) AS age_s
FROM (SELECT id, dialect, asset_count, submitted_at, completed_at, created_at FROM jobs
      WHERE state = 'complete' AND submitted_at IS NOT NULL AND completed_at IS NOT NULL
      ORDER BY created_at DESC LIMIT :latest) AS j
LEFT JOIN LATERAL (
    SELECT a.attempted_at FROM api_attempts a
    WHERE a.job_id = j.id AND a.method = 'GET' AND a.outcome = 'ok' AND a.attempted_at > j.submitted_at
      AND a.endpoint IN ('GET /v1/aperture/jobs/{job_id}/status', 'GET /v1/media/aperture/{job_id}')
    ORDER BY a.attempted_at DESC OFFSET 1 LIMIT 1
) AS prev ON true
ORDER BY j.created_at DESC
""")

# Per scored round: the same, from the media's status checks within the round.
_SCORING_OBSERVATIONS = text("""
SELECT 'scoring' AS grp, 1 AS units,
       coalesce(extract(epoch FROM prev.attempted_at - r.submitted_at), 0) AS lower_s,
       extract(epoch FROM r.scored_at - r.submitted_at) AS upper_s,
       extract(epoch FROM now() - r.submitted_at) AS age_s
FROM (SELECT scored_media_id, submitted_at, scored_at, created_at FROM scoring_rounds
      WHERE status = 'complete' AND submitted_at IS NOT NULL AND scored_at IS NOT NULL
      ORDER BY created_at DESC LIMIT :latest) AS r
LEFT JOIN LATERAL (
    SELECT a.attempted_at FROM api_attempts a
    WHERE a.scored_media_id = r.scored_media_id AND a.method = 'GET' AND a.outcome = 'ok'
      AND a.endpoint = 'GET /v1/media/{media_id}/status'
      AND a.attempted_at > r.submitted_at AND a.attempted_at <= r.scored_at
    ORDER BY a.attempted_at DESC OFFSET 1 LIMIT 1
) AS prev ON true
ORDER BY r.created_at DESC
""")

_QUERIES = {TAGGING: _TAGGING_OBSERVATIONS, SCORING: _SCORING_OBSERVATIONS}

# The sizes of the jobs being polled (by the index on state and creation time): with the finished
# ones, the mix of sizes the pooled p95 guard is over. A scoring round has one size.
_TAGGING_IN_FLIGHT = text("""
SELECT 'job:' || dialect AS grp, asset_count AS units FROM jobs
WHERE state = 'polling' AND submitted_at IS NOT NULL
ORDER BY created_at DESC LIMIT :latest
""")


def observations(session: Session, kind: str, latest: int) -> list[Observation]:
    rows = session.execute(_QUERIES[kind], {"latest": latest}).all()
    return [Observation(r.grp, int(r.units), float(r.lower_s), float(r.upper_s), float(r.age_s)) for r in rows]


def in_flight(session: Session, kind: str, latest: int) -> list[tuple[str, int]]:
    if kind != TAGGING:
        return []
    return [(r.grp, int(r.units)) for r in session.execute(_TAGGING_IN_FLIGHT, {"latest": latest}).all()]


def policy_for(kind: str, settings: Settings) -> Policy:
    """A kind's polling: its own fixed schedule (the guard's comparison) and its bounds on a gap."""
    if kind == SCORING:
        first, every = settings.scoring_poll_initial_s, settings.scoring_poll_interval_s
        longest = every
    else:
        first, every, longest = settings.poll_initial_s, settings.poll_interval_s, settings.poll_max_interval_s
    return Policy(
        per_call_s=settings.poll_delay_per_call_s,
        first_s=first,
        every_s=every,
        min_gap_s=settings.poll_min_interval_s,
        max_gap_s=longest,
        guard=settings.poll_p95_guard,
    )


@dataclass
class _Cached:
    forecast: Forecast
    read_at: dt.datetime


_cache: dict[str, _Cached] = {}
_lock = threading.Lock()


def forecast(session: Session, kind: str, *, settings: Settings, now: dt.datetime) -> Forecast:
    """This process's model of ``kind`` and its plans, re-read when older than ``APERTURE_POLL_MODEL_REFRESH_S``."""
    with _lock:
        cached = _cache.get(kind)
    if cached is not None and (now - cached.read_at).total_seconds() < settings.poll_model_refresh_s:
        return cached.forecast
    fresh = refresh(
        observations(session, kind, settings.poll_model_jobs),
        policy_for(kind, settings),
        min_observations=settings.poll_model_min_jobs,
        in_flight=in_flight(session, kind, settings.poll_model_jobs),
        previous=cached.forecast if cached is not None else None,
    )
    with _lock:
        _cache[kind] = _Cached(fresh, now)
    return fresh


def predict(
    session: Session, kind: str, group: str, units: int, *, settings: Settings, now: dt.datetime
) -> Prediction | None:
    """The predicted duration of this work, or None for the fixed schedule: when it is the setting,
    or while the group has too few finished rows (the cold start)."""
    if settings.poll_schedule != "adaptive":
        return None
    return forecast(session, kind, settings=settings, now=now).predict(group, units)


def forget() -> None:
    """Drop the cached models (tests, and a process that must re-learn at once)."""
    with _lock:
        _cache.clear()
