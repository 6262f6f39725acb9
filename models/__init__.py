"""The database: SQLAlchemy models and Alembic migrations.

- base.py        the declarative base with a naming convention, reusable column types
- durable.py     the lifecycle columns every durable row shares (``Durable``) and the engine's indexes
- jobs.py        tagging jobs, their assets and tags, every API attempt; the library's counts
- scoring.py     scored media, their rounds and what each round said
- db.py          the engine and session factory (one per process, made after fork)
- migrate.py     Alembic run from Python (`aperture db upgrade`, the test fixtures)
- migrations/    the migrations, reviewed by hand (each says what it changes and why it is safe)
"""

from models.base import Base
from models.durable import Durable
from models.jobs import (
    ACTIVE_JOB_STATES,
    LOOKED_AT_JOB_STATES,
    ApiAttempt,
    Asset,
    CallbackStatus,
    Job,
    JobState,
    Tag,
    members_of_pack,
)
from models.scoring import (
    ACTIVE_SCORING_STATES,
    LOOKED_AT_SCORING_STATES,
    RoundStatus,
    ScoredMedia,
    ScoredMediaTaggingJob,
    ScoringChannelSummary,
    ScoringGuidelineResult,
    ScoringRound,
    ScoringState,
)

__all__ = [
    "ACTIVE_JOB_STATES",
    "ACTIVE_SCORING_STATES",
    "LOOKED_AT_JOB_STATES",
    "LOOKED_AT_SCORING_STATES",
    "ApiAttempt",
    "Asset",
    "Base",
    "CallbackStatus",
    "Durable",
    "Job",
    "JobState",
    "RoundStatus",
    "ScoredMedia",
    "ScoredMediaTaggingJob",
    "ScoringChannelSummary",
    "ScoringGuidelineResult",
    "ScoringRound",
    "ScoringState",
    "Tag",
    "members_of_pack",
]
