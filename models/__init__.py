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
