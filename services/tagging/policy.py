"""What a tagging job's status means: pure decisions (tests/test_decisions.py)."""

from __future__ import annotations

from dataclasses import dataclass

from clients.tags import AssetAnnotation, TagsJobState, TagsJobStatus
from config import Settings
from services.durable.policy import FAILED, End, LookAgain
from services.durable.prediction import Prediction
from services.durable.schedule import look_delay


@dataclass(frozen=True)
class Complete:
    annotations: tuple[AssetAnnotation, ...]


def first_look(prediction: Prediction | None, *, settings: Settings) -> float:
    """After submission: the first poll, near the predicted finish (adaptive polling), or after
    ``APERTURE_POLL_INITIAL_S`` without a prediction (the fixed schedule, a cold start)."""
    return look_delay(
        prediction, 0.0, fixed_s=settings.poll_initial_s, max_s=settings.poll_max_interval_s, settings=settings
    )


def after_status(
    status: TagsJobStatus, *, settings: Settings, prediction: Prediction | None = None, elapsed_s: float = 0.0
) -> Complete | End | LookAgain:
    """COMPLETE stores the tags and ends the job; FAILED ends it with Vidmob's reason;
    anything else (PENDING, PROCESSING) looks again: ``elapsed_s`` after submission, when the
    predicted duration says a look is worth it, or after the poll interval without a prediction."""
    if status.state is TagsJobState.COMPLETE:
        return Complete(status.annotations)
    if status.state is TagsJobState.FAILED:
        detail = status.message or "; ".join(f"{k}: {v}" for k, v in status.errors.items()) or "no detail given"
        return End(FAILED, f"Vidmob job failed: {detail}")
    return LookAgain(
        look_delay(
            prediction,
            elapsed_s,
            fixed_s=settings.poll_interval_s,
            max_s=settings.poll_max_interval_s,
            settings=settings,
        )
    )
