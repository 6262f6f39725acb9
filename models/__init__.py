from models.base import Base
from models.jobs import ACTIVE_STATES, ApiAttempt, Asset, CallbackStatus, Job, JobState, Tag

__all__ = ["ACTIVE_STATES", "ApiAttempt", "Asset", "Base", "CallbackStatus", "Job", "JobState", "Tag"]
