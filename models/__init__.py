from models.base import Base
from models.durable import Durable
from models.jobs import ACTIVE_STATES, ApiAttempt, Asset, CallbackStatus, Job, JobState, Tag
from models.scoring import (
    ACTIVE_SCORING_STATES,
    RoundStatus,
    ScoredMedia,
    ScoredMediaTaggingJob,
    ScoringChannelSummary,
    ScoringGuidelineResult,
    ScoringRound,
    ScoringState,
)

__all__ = [
    "ACTIVE_SCORING_STATES",
    "ACTIVE_STATES",
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
]
