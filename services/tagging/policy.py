"""What a tagging job's status means: pure decisions (tests/test_decisions.py)."""

from __future__ import annotations

from dataclasses import dataclass

from clients.tags import AssetAnnotation, TagsJobState, TagsJobStatus
from config import Settings
from services.durable.policy import FAILED, End, LookAgain
from services.durable.schedule import jittered


@dataclass(frozen=True)
class Complete:
    annotations: tuple[AssetAnnotation, ...]


def after_status(status: TagsJobStatus, *, settings: Settings) -> Complete | End | LookAgain:
    """COMPLETE stores the tags and ends the job; FAILED ends it with Vidmob's reason;
    anything else (PENDING, PROCESSING) looks again after the poll interval."""
    if status.state is TagsJobState.COMPLETE:
        return Complete(status.annotations)
    if status.state is TagsJobState.FAILED:
        detail = status.message or "; ".join(f"{k}: {v}" for k, v in status.errors.items()) or "no detail given"
        return End(FAILED, f"Vidmob job failed: {detail}")
    return LookAgain(jittered(settings.poll_interval_s, settings))
