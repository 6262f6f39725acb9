"""The decision functions of the durable engine, as pure unit tests.

Given a row's situation and what Vidmob answered, what is the next state and when is the
next look? No database, no broker, no HTTP, no environment: ``Settings`` is built from
explicit values with every APERTURE_*/VIDMOB_* variable removed, and the random draw of
the backoff is either pinned (``draw``) or checked against its bounds.
"""

from __future__ import annotations

import datetime as dt
import os
import types
from typing import Any

import pytest

from clients.errors import (
    ApiError,
    BadRequestError,
    ConflictError,
    MalformedResponseError,
    NotFoundError,
    RateLimitedError,
    RedirectError,
    ResultsDownloadError,
    ServerError,
    TerminalApiError,
    TransportError,
    UnauthorizedError,
    UnsupportedRequestError,
)
from clients.scoring import GuidelineResult, MediaScoringStatus, ScoreAction, Scores
from clients.tags import AssetAnnotation, Tag, TagsJobState, TagsJobStatus
from config import Settings
from services.durable import schedule as durable_schedule
from services.durable.policy import FAILED, TIMED_OUT, End, LookAgain, after_poll_error, after_submit_error
from services.durable.schedule import backoff, jittered, lease_until, schedule
from services.scoring import policy as scoring
from services.tagging import policy as tagging

NOW = dt.datetime(2025, 1, 1, 12, 0, tzinfo=dt.UTC)
SUBMIT = "POST /v1/media"
STATUS = "GET /v1/media/{media_id}/status"

# Every knob the decisions read, with values that tell them apart (poll vs scoring interval...).
BASE: dict[str, Any] = {
    "poll_initial_s": 120.0,
    "poll_interval_s": 300.0,
    "poll_jitter": 0.0,
    "max_countdown_s": 900.0,
    "retry_backoff_base_s": 2.0,
    "retry_backoff_max_s": 300.0,
    "scoring_poll_initial_s": 900.0,
    "scoring_poll_interval_s": 600.0,
    "scoring_backlog_wait_s": 450.0,
    "max_rescores": 3,
    "task_soft_time_limit_s": 120,
    "task_time_limit_s": 150,
    "visibility_timeout_s": 3600,
}


@pytest.fixture(autouse=True)
def _no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings read the environment for any field not passed: a developer's or CI's
    APERTURE_* (or VIDMOB_*) variables must not change what these tests decide."""
    for name in list(os.environ):
        if name.upper().startswith(("APERTURE_", "VIDMOB_")):
            monkeypatch.delenv(name)


def settings(**overrides: Any) -> Settings:
    return Settings(**(BASE | overrides))


def delay_of(decision: End | LookAgain | tagging.Complete) -> float:
    """The wait of a decision the test expects to be a LookAgain."""
    assert isinstance(decision, LookAgain)
    return decision.delay_s


@pytest.fixture
def draw(monkeypatch: pytest.MonkeyPatch):
    """Pin the random draw of ``backoff``/``jittered``: 0.0 takes the low end of the range, 1.0 the high end."""

    def pin(fraction: float) -> None:
        fake = types.SimpleNamespace(uniform=lambda low, high: low + fraction * (high - low))
        monkeypatch.setattr(durable_schedule, "random", fake)

    return pin


def scores(*results: str) -> Scores:
    detail = tuple(
        GuidelineResult(name=f"guideline {i}", rule=None, channel="TIKTOK", result=result, weight=1.0)
        for i, result in enumerate(results)
    )
    return Scores(media={"id": "m-1"}, summary={}, detail=detail)


TERMINAL_ERRORS = [
    BadRequestError("name must not be empty", endpoint=SUBMIT, messages=("name must not be empty",)),
    UnauthorizedError("Invalid API key", endpoint=SUBMIT, status_code=401),
    UnauthorizedError("Forbidden for this workspace", endpoint=SUBMIT, status_code=403),
    NotFoundError("media not found", endpoint=SUBMIT, status_code=404),
    ConflictError("already submitted", endpoint=SUBMIT, status_code=409),
    TerminalApiError("Unprocessable Entity", endpoint=SUBMIT, status_code=422),
    RedirectError("redirect not followed: Moved", endpoint=SUBMIT, status_code=301),
    UnsupportedRequestError("the media dialect accepts at most 10 client tags", endpoint=SUBMIT),
]
RETRYABLE_ERRORS = [
    ServerError("Service Unavailable", endpoint=SUBMIT, status_code=503),
    ServerError("Internal Server Error", endpoint=SUBMIT, status_code=500),
    TransportError("ReadTimeout: read timed out", endpoint=SUBMIT),
    RateLimitedError("Too Many Requests", endpoint=SUBMIT, status_code=429),
    MalformedResponseError("body is not JSON", endpoint=SUBMIT, status_code=200),
    ResultsDownloadError("signed link expired", endpoint="GET download_url_json"),
]


def _id(error: ApiError) -> str:
    return f"{type(error).__name__}-{error.status_code}"


# --- submitting: after_submit_error -----------------------------------------------------------------


@pytest.mark.parametrize("error", TERMINAL_ERRORS, ids=_id)
def test_a_terminal_submit_error_fails_the_row_with_the_reason(error: ApiError) -> None:
    # Given a submission that Vidmob refuses for good, with time left before the deadline
    # When the engine decides what to do
    decision = after_submit_error(
        error, attempt=1, deadline_at=NOW + dt.timedelta(hours=1), now=NOW, settings=settings()
    )
    # Then the row fails at once, and the reason says what Vidmob said
    assert isinstance(decision, End)
    assert decision.state == FAILED
    assert decision.error is not None
    assert error.detail in decision.error
    assert "submission refused" in decision.error


@pytest.mark.parametrize("error", RETRYABLE_ERRORS, ids=_id)
def test_a_retryable_submit_error_looks_again_and_keeps_the_error(error: ApiError) -> None:
    # Given a submission that failed in a way that may pass next time
    decision = after_submit_error(error, attempt=1, deadline_at=None, now=NOW, settings=settings())
    # Then the row is tried again soon (the first retry waits about retry_backoff_base_s) and the error is recorded
    assert isinstance(decision, LookAgain)
    assert 1.0 <= decision.delay_s <= 2.0
    assert decision.error is not None
    assert error.detail in decision.error


@pytest.mark.parametrize("fraction", [0.0, 1.0])
def test_the_submit_retry_delay_doubles_with_each_attempt_up_to_the_cap(draw, fraction: float) -> None:
    # Given a 503 on attempts 1..10 with base 2 s and a cap of 300 s
    draw(fraction)
    s = settings()
    error = ServerError("Service Unavailable", endpoint=SUBMIT, status_code=503)
    delays = [
        delay_of(after_submit_error(error, attempt=n, deadline_at=None, now=NOW, settings=s)) for n in range(1, 11)
    ]
    # Then each wait is twice the last until the cap, and never above the cap
    ceilings = [2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 300.0, 300.0]
    assert delays == [c / 2 + fraction * c / 2 for c in ceilings]
    assert max(delays) <= 300.0


@pytest.mark.parametrize(("attempt", "ceiling"), [(1, 2.0), (3, 8.0), (6, 64.0), (9, 300.0), (40, 300.0)])
def test_the_submit_retry_delay_is_drawn_between_half_the_ceiling_and_the_ceiling(attempt: int, ceiling: float) -> None:
    # Given many rows failing the same attempt at the same time (the real random draw)
    s = settings()
    error = TransportError("ConnectTimeout", endpoint=SUBMIT)
    delays = [
        delay_of(after_submit_error(error, attempt=attempt, deadline_at=None, now=NOW, settings=s)) for _ in range(200)
    ]
    # Then they are spread over [ceiling/2, ceiling], so they do not all come back in lockstep
    assert all(ceiling / 2 <= d <= ceiling for d in delays)
    assert len(set(delays)) > 1


@pytest.mark.parametrize(("attempt", "retry_after"), [(1, 30.0), (4, 20.0), (20, 1000.0)])
def test_a_submit_retry_is_never_sooner_than_retry_after(attempt: int, retry_after: float) -> None:
    # Given a 429 whose Retry-After is longer than the backoff would wait (even beyond the backoff cap)
    error = RateLimitedError("Too Many Requests", endpoint=SUBMIT, status_code=429, retry_after=retry_after)
    decision = after_submit_error(error, attempt=attempt, deadline_at=None, now=NOW, settings=settings())
    # Then the row waits exactly what the server asked
    assert decision == LookAgain(retry_after, str(error))


def test_a_short_retry_after_does_not_shorten_the_backoff(draw) -> None:
    # Given a 503 asking to come back in 1 s on the 5th attempt (backoff ceiling 32 s)
    draw(1.0)
    error = ServerError("Service Unavailable", endpoint=SUBMIT, status_code=503, retry_after=1.0)
    decision = after_submit_error(error, attempt=5, deadline_at=None, now=NOW, settings=settings())
    # Then the backoff still applies
    assert isinstance(decision, LookAgain)
    assert decision.delay_s == 32.0


def test_a_submit_retry_that_would_pass_the_deadline_times_out(draw) -> None:
    # Given the 5th attempt (next try in 32 s) and a deadline 31 s away
    draw(1.0)
    error = ServerError("Bad Gateway", endpoint=SUBMIT, status_code=502)
    decision = after_submit_error(
        error, attempt=5, deadline_at=NOW + dt.timedelta(seconds=31), now=NOW, settings=settings()
    )
    # Then the row times out instead of looking again, and says why with the last error
    assert isinstance(decision, End)
    assert decision.state == TIMED_OUT
    assert decision.error is not None
    assert "deadline" in decision.error
    assert "Bad Gateway" in decision.error


def test_a_submit_retry_due_exactly_at_the_deadline_still_happens(draw) -> None:
    draw(1.0)
    error = ServerError("Bad Gateway", endpoint=SUBMIT, status_code=502)
    decision = after_submit_error(
        error, attempt=5, deadline_at=NOW + dt.timedelta(seconds=32), now=NOW, settings=settings()
    )
    assert decision == LookAgain(32.0, str(error))


def test_a_retry_after_past_the_deadline_times_out() -> None:
    # Given a 429 asking to wait an hour, with 10 minutes left
    error = RateLimitedError("Too Many Requests", endpoint=SUBMIT, status_code=429, retry_after=3600.0)
    decision = after_submit_error(
        error, attempt=1, deadline_at=NOW + dt.timedelta(minutes=10), now=NOW, settings=settings()
    )
    assert isinstance(decision, End)
    assert decision.state == TIMED_OUT


def test_without_a_deadline_a_retryable_submit_error_never_times_out(draw) -> None:
    draw(1.0)
    error = TransportError("ConnectionError", endpoint=SUBMIT)
    decision = after_submit_error(error, attempt=1000, deadline_at=None, now=NOW, settings=settings())
    assert decision == LookAgain(300.0, str(error))


# --- polling: after_poll_error ----------------------------------------------------------------------


@pytest.mark.parametrize("error", TERMINAL_ERRORS, ids=_id)
def test_a_terminal_poll_error_fails_the_row_with_the_reason(error: ApiError) -> None:
    decision = after_poll_error(error, failures=1, settings=settings())
    assert isinstance(decision, End)
    assert decision.state == FAILED
    assert decision.error is not None
    assert error.detail in decision.error
    assert "status check refused" in decision.error


@pytest.mark.parametrize("error", RETRYABLE_ERRORS, ids=_id)
def test_a_first_retryable_poll_error_looks_again_soon_and_keeps_the_error(error: ApiError) -> None:
    # Given a status check that failed transiently for the first time
    decision = after_poll_error(error, failures=1, settings=settings())
    # Then the row looks again after a short backoff (base 2 s), not a whole interval, and records the error
    assert isinstance(decision, LookAgain)
    assert 1.0 <= decision.delay_s <= 2.0
    assert decision.error is not None
    assert error.detail in decision.error


def test_poll_errors_in_a_row_back_off_until_the_cap(draw) -> None:
    # Given a status check that keeps failing (an outage), at the high end of the jitter
    draw(1.0)
    error = ServerError("Service Unavailable", endpoint=STATUS, status_code=503)
    delays = [delay_of(after_poll_error(error, failures=n, settings=settings())) for n in range(1, 12)]
    # Then each wait doubles, up to APERTURE_RETRY_BACKOFF_MAX_S
    assert delays == [2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 300.0, 300.0, 300.0]


def test_during_a_ten_minute_outage_a_row_checks_a_few_times_a_minute_at_most(draw) -> None:
    # Given an outage of every endpoint for 10 minutes, at the low (busiest) end of the jitter
    draw(0.0)
    error = TransportError("Connection refused", endpoint=STATUS)
    elapsed, checks = 0.0, 0
    while elapsed < 600:
        checks += 1
        elapsed += delay_of(after_poll_error(error, failures=checks, settings=settings()))
    # Then one row made a bounded number of checks (it used to be one per poll interval, however short)
    assert checks <= 14
    first_minute, elapsed = 0, 0.0
    while elapsed < 60:
        first_minute += 1
        elapsed += delay_of(after_poll_error(error, failures=first_minute, settings=settings()))
    assert first_minute <= 6


@pytest.mark.parametrize("retry_after", [30.0, 900.0, 5.0])
def test_a_poll_error_looks_again_no_sooner_than_retry_after(retry_after: float) -> None:
    # Given a 429 with Retry-After (shorter or longer than the poll interval)
    error = RateLimitedError("Too Many Requests", endpoint=STATUS, status_code=429, retry_after=retry_after)
    decision = after_poll_error(error, failures=1, settings=settings())
    # Then the server's wish wins
    assert decision == LookAgain(retry_after, str(error))


def test_a_create_call_whose_outcome_is_unknown_is_retried_only_up_to_the_cap() -> None:
    # Given a create call that timed out (Vidmob may or may not have created the job)
    error = TransportError("Read timed out", endpoint=SUBMIT)
    below = after_submit_error(
        error, attempt=2, deadline_at=None, now=NOW, settings=settings(), unknown_outcomes=4, max_unknown_outcomes=5
    )
    at_cap = after_submit_error(
        error, attempt=6, deadline_at=None, now=NOW, settings=settings(), unknown_outcomes=5, max_unknown_outcomes=5
    )
    # Then it is tried again below the cap, and at the cap the row fails saying Vidmob may hold a job
    assert isinstance(below, LookAgain)
    assert isinstance(at_cap, End) and at_cap.state == FAILED
    assert at_cap.error is not None
    assert "APERTURE_SUBMIT_MAX_RETRIES=5" in at_cap.error and "Vidmob may hold a job" in at_cap.error


# --- scheduling: backoff, jittered, schedule, lease_until ---------------------------------------


@pytest.mark.parametrize("attempt", [0, -3])
def test_backoff_treats_attempts_below_one_as_the_first(draw, attempt: int) -> None:
    draw(1.0)
    assert backoff(attempt, settings()) == backoff(1, settings()) == 2.0


def test_backoff_never_returns_sooner_than_retry_after() -> None:
    s = settings()
    assert all(backoff(n, s, retry_after=250.0) >= 250.0 for n in range(1, 10))


def test_with_no_jitter_a_wait_is_exact() -> None:
    assert jittered(300.0, settings(poll_jitter=0.0)) == 300.0


def test_with_ten_percent_jitter_a_wait_stays_within_ten_percent() -> None:
    s = settings(poll_jitter=0.1)
    waits = [jittered(300.0, s) for _ in range(500)]
    assert all(270.0 <= w <= 330.0 for w in waits)
    # and it does vary, so rows submitted together do not poll in lockstep
    assert len(set(waits)) > 1


@pytest.mark.parametrize(("fraction", "expected"), [(0.0, 270.0), (1.0, 330.0)])
def test_jitter_reaches_both_ends_of_its_range(draw, fraction: float, expected: float) -> None:
    draw(fraction)
    assert jittered(300.0, settings(poll_jitter=0.1)) == pytest.approx(expected)


def test_a_jittered_wait_is_never_negative(draw) -> None:
    draw(0.0)
    assert jittered(300.0, settings(poll_jitter=2.0)) == 0.0


@pytest.mark.parametrize(
    ("delay_s", "dispatched"), [(0.0, True), (60.0, True), (900.0, True), (900.5, False), (3600.0, False)]
)
def test_a_short_wait_rides_on_a_countdown_and_a_long_one_is_parked(delay_s: float, dispatched: bool) -> None:
    # Given max_countdown_s = 900
    look = schedule(NOW, delay_s, settings(max_countdown_s=900.0))
    # Then the look is due after the delay, sent now as a countdown only if it is short enough
    assert look.at == NOW + dt.timedelta(seconds=delay_s)
    assert look.delay_s == delay_s
    assert look.dispatched is dispatched


def test_every_scheduled_look_gets_a_fresh_token() -> None:
    # So that a duplicate or stale message (carrying an older token) does nothing
    s = settings()
    tokens = {schedule(NOW, 10.0, s).token for _ in range(50)}
    assert len(tokens) == 50


def test_a_lease_outlasts_the_hard_time_limit() -> None:
    # A worker holding the row is killed by the hard limit before the sweeper would take the row back
    s = settings(task_soft_time_limit_s=120, task_time_limit_s=150)
    until = lease_until(NOW, s)
    assert until > NOW + dt.timedelta(seconds=s.task_time_limit_s)
    assert until == NOW + dt.timedelta(seconds=155)


# --- tagging: after_status ------------------------------------------------------------------------


def test_a_complete_tagging_job_carries_its_annotations() -> None:
    annotations = (
        AssetAnnotation(url="https://cdn.example/a.mp4", id="a", tags=(Tag("object", "car"), Tag("client", "beach"))),
        AssetAnnotation(url="https://cdn.example/b.mp4", id="b", tags=()),
    )
    decision = tagging.after_status(TagsJobStatus(TagsJobState.COMPLETE, annotations=annotations), settings=settings())
    assert decision == tagging.Complete(annotations)


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (
            TagsJobStatus(TagsJobState.FAILED, message="asset could not be downloaded"),
            "asset could not be downloaded",
        ),
        (
            TagsJobStatus(TagsJobState.FAILED, errors={"asset-0": "404 on download", "asset-1": "not a video"}),
            "asset-0: 404 on download; asset-1: not a video",
        ),
        (
            TagsJobStatus(TagsJobState.FAILED, message="quota exceeded", errors={"asset-0": "404 on download"}),
            "quota exceeded",
        ),
        (TagsJobStatus(TagsJobState.FAILED), "no detail given"),
    ],
    ids=["message", "errors", "message-wins", "nothing"],
)
def test_a_failed_tagging_job_ends_with_vidmobs_reason(status: TagsJobStatus, reason: str) -> None:
    decision = tagging.after_status(status, settings=settings())
    assert decision == End(FAILED, f"Vidmob job failed: {reason}")


@pytest.mark.parametrize("state", [TagsJobState.PENDING, TagsJobState.PROCESSING])
def test_an_unfinished_tagging_job_looks_again_after_the_poll_interval(state: TagsJobState) -> None:
    # Given no jitter, a poll interval of 300 s (and a different initial poll, 120 s)
    decision = tagging.after_status(TagsJobStatus(state), settings=settings(poll_jitter=0.0))
    # Then the job is polled again exactly one interval later
    assert decision == LookAgain(300.0)


def test_with_jitter_an_unfinished_tagging_job_looks_again_within_ten_percent() -> None:
    s = settings(poll_jitter=0.1)
    delays = [delay_of(tagging.after_status(TagsJobStatus(TagsJobState.PROCESSING), settings=s)) for _ in range(200)]
    assert all(270.0 <= d <= 330.0 for d in delays)


# --- scoring: after_status -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "state"),
    [(MediaScoringStatus.UNSUPPORTED, scoring.UNSUPPORTED), (MediaScoringStatus.FAILED, FAILED)],
)
def test_unsupported_and_failed_end_the_media(status: MediaScoringStatus, state: str) -> None:
    decision = scoring.after_status(status, error_polls=0, settings=settings())
    assert isinstance(decision, End)
    assert decision.state == state
    assert decision.error is not None
    assert status.value in decision.error


def test_scoring_error_backs_off_as_error_polls_repeat(draw) -> None:
    # Given Vidmob answering ERROR again and again (base 2 s, cap 300 s)
    draw(1.0)
    s = settings()
    delays = [scoring.after_status(MediaScoringStatus.ERROR, error_polls=n, settings=s) for n in range(10)]
    # Then each look waits twice the last, up to the cap, and records why
    assert [delay_of(d) for d in delays] == [2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 300.0, 300.0]
    assert all(d.error == "status ERROR" for d in delays)


def test_scoring_error_backoff_is_drawn_between_half_the_ceiling_and_the_ceiling() -> None:
    s = settings()
    delays = [delay_of(scoring.after_status(MediaScoringStatus.ERROR, error_polls=3, settings=s)) for _ in range(200)]
    assert all(8.0 <= d <= 16.0 for d in delays)


def test_scoring_processing_looks_again_after_the_scoring_poll_interval() -> None:
    # Given no jitter, the scoring interval (600 s) differing from the tagging one (300 s)
    decision = scoring.after_status(MediaScoringStatus.PROCESSING, error_polls=2, settings=settings(poll_jitter=0.0))
    assert decision == LookAgain(600.0)


def test_with_jitter_scoring_processing_looks_again_within_ten_percent() -> None:
    s = settings(poll_jitter=0.1)
    delays = [
        delay_of(scoring.after_status(MediaScoringStatus.PROCESSING, error_polls=0, settings=s)) for _ in range(200)
    ]
    assert all(540.0 <= d <= 660.0 for d in delays)


# --- scoring: after_scores, one code at a time (docs/scoring.md, "Polling and what each answer does") -----


@pytest.mark.parametrize("results", [("PASS",), ("PASS", "FAIL", "NOT_APPLICABLE"), ("fail",)])
def test_only_verdicts_means_scored_without_error(results: tuple[str, ...]) -> None:
    verdict = scoring.after_scores(scores(*results), rescore_count=0, settings=settings())
    assert verdict == scoring.Verdict(ScoreAction.SCORED, (), End(scoring.SCORED, None), complete=True)


@pytest.mark.parametrize(
    ("code", "action"),
    [
        ("NO_DATA_MEDIA_NOT_TAGGED", ScoreAction.TAG_THEN_RESCORE),
        ("NO_DATA_MEDIA_TAGGING_FAILURE", ScoreAction.RETAG_THEN_RESCORE),
    ],
)
def test_missing_or_failed_tags_flag_the_media_for_tagging(code: str, action: ScoreAction) -> None:
    verdict = scoring.after_scores(scores("PASS", code), rescore_count=0, settings=settings())
    assert verdict == scoring.Verdict(action, (code,), scoring.FlagForTagging(), complete=True)


@pytest.mark.parametrize(
    "code", ["NO_DATA_NEW_CRITERIA", "NO_DATA_MISSING_REQUIRED_TAGS", "NO_DATA_ERROR_RETRIEVING_TAGS"]
)
def test_rescore_codes_rescore_at_once_with_the_code_as_reason(code: str) -> None:
    verdict = scoring.after_scores(scores("FAIL", code), rescore_count=0, settings=settings())
    assert verdict == scoring.Verdict(ScoreAction.RESCORE, (code,), scoring.Rescore(code), complete=True)


def test_scoring_backlog_fetches_the_same_round_again_later_and_is_not_final() -> None:
    verdict = scoring.after_scores(scores("PASS", "NO_DATA_SCORING_BACKLOG"), rescore_count=0, settings=settings())
    assert verdict.action is ScoreAction.WAIT_AND_REFETCH
    assert verdict.complete is False
    assert verdict.codes == ("NO_DATA_SCORING_BACKLOG",)
    assert verdict.next == LookAgain(450.0, "NO_DATA_SCORING_BACKLOG")


@pytest.mark.parametrize(
    "code", ["NO_DATA", "NO_DATA_DOWNLOAD_FAILURE", "NO_DATA_RECOGNITION_FAILURE", "NO_DATA_PREDATES_MODEL"]
)
def test_other_no_data_codes_are_scored_as_not_fixable_with_the_code_in_the_error(code: str) -> None:
    verdict = scoring.after_scores(scores("PASS", code), rescore_count=0, settings=settings())
    assert verdict.action is ScoreAction.NOT_FIXABLE
    assert verdict.codes == (code,)
    assert isinstance(verdict.next, End)
    assert verdict.next.state == scoring.SCORED
    assert verdict.next.error is not None
    assert code in verdict.next.error
    assert verdict.complete is True


def test_an_unknown_verdict_is_scored_as_not_fixable_and_does_not_loop() -> None:
    verdict = scoring.after_scores(scores("PASS", "MAYBE_LATER"), rescore_count=0, settings=settings())
    assert verdict.action is ScoreAction.NOT_FIXABLE
    assert isinstance(verdict.next, End)
    assert verdict.next.state == scoring.SCORED
    assert verdict.complete is True


def test_an_unknown_verdict_is_named_on_the_round_and_in_the_error() -> None:
    verdict = scoring.after_scores(scores("PASS", "MAYBE_LATER"), rescore_count=0, settings=settings())
    assert "MAYBE_LATER" in verdict.codes
    assert isinstance(verdict.next, End) and verdict.next.error is not None
    assert "MAYBE_LATER" in verdict.next.error


def test_result_codes_are_read_case_insensitively() -> None:
    verdict = scoring.after_scores(scores(" no_data_new_criteria "), rescore_count=0, settings=settings())
    assert verdict.next == scoring.Rescore("NO_DATA_NEW_CRITERIA")
    assert verdict.codes == ("NO_DATA_NEW_CRITERIA",)


# --- scoring: precedence when several codes appear -----------------------------------------------


@pytest.mark.parametrize(
    ("results", "action", "next_type"),
    [
        (
            ("NO_DATA_SCORING_BACKLOG", "NO_DATA_MEDIA_NOT_TAGGED", "NO_DATA_NEW_CRITERIA", "NO_DATA"),
            ScoreAction.WAIT_AND_REFETCH,
            LookAgain,
        ),
        (("NO_DATA_NEW_CRITERIA", "NO_DATA_MEDIA_NOT_TAGGED"), ScoreAction.TAG_THEN_RESCORE, scoring.FlagForTagging),
        (
            ("NO_DATA_MISSING_REQUIRED_TAGS", "NO_DATA_MEDIA_TAGGING_FAILURE"),
            ScoreAction.RETAG_THEN_RESCORE,
            scoring.FlagForTagging,
        ),
        (
            ("NO_DATA_MEDIA_TAGGING_FAILURE", "NO_DATA_MEDIA_NOT_TAGGED"),
            ScoreAction.TAG_THEN_RESCORE,
            scoring.FlagForTagging,
        ),
        (("NO_DATA_DOWNLOAD_FAILURE", "NO_DATA_ERROR_RETRIEVING_TAGS"), ScoreAction.RESCORE, scoring.Rescore),
        (("PASS", "NO_DATA_DOWNLOAD_FAILURE", "FAIL"), ScoreAction.NOT_FIXABLE, End),
        (("MAYBE_LATER", "NO_DATA_MEDIA_NOT_TAGGED"), ScoreAction.TAG_THEN_RESCORE, scoring.FlagForTagging),
    ],
    ids=["backlog-first", "tags-before-rescore", "retag-before-rescore", "tag-and-retag", "rescore-before-unfixable",
         "unfixable-before-scored", "unknown-does-not-hide-a-fix"],
)  # fmt: skip
def test_the_round_asks_for_one_thing_by_precedence(results, action, next_type) -> None:
    # Given a round whose guidelines ask for several different things
    verdict = scoring.after_scores(scores(*results), rescore_count=0, settings=settings())
    # Then it does the one that comes first: not ready > tags missing > rescore > not fixable > scored,
    # and records everything that was not a plain verdict: every NO_DATA code, and unknown results
    assert verdict.action is action
    assert isinstance(verdict.next, next_type)
    assert verdict.codes == tuple(sorted({r for r in results if r not in ("PASS", "FAIL", "NOT_APPLICABLE")}))


def test_a_rescore_asked_by_several_codes_names_one_of_them() -> None:
    results = ("NO_DATA_MISSING_REQUIRED_TAGS", "NO_DATA_NEW_CRITERIA")
    verdict = scoring.after_scores(scores(*results), rescore_count=0, settings=settings())
    assert isinstance(verdict.next, scoring.Rescore)
    assert verdict.next.reason in results


@pytest.mark.parametrize(
    ("actions", "expected"),
    [
        ([], ScoreAction.SCORED),
        ([ScoreAction.SCORED, ScoreAction.SCORED], ScoreAction.SCORED),
        ([ScoreAction.NOT_FIXABLE, ScoreAction.RESCORE, ScoreAction.SCORED], ScoreAction.RESCORE),
        ([ScoreAction.RESCORE, ScoreAction.RETAG_THEN_RESCORE], ScoreAction.RETAG_THEN_RESCORE),
        ([ScoreAction.TAG_THEN_RESCORE, ScoreAction.WAIT_AND_REFETCH], ScoreAction.WAIT_AND_REFETCH),
    ],
)
def test_decide_picks_the_action_by_precedence(actions: list[ScoreAction], expected: ScoreAction) -> None:
    assert scoring.decide(actions) is expected
    assert scoring.decide(reversed(actions)) is expected


@pytest.mark.parametrize(
    ("result", "action"),
    [
        ("PASS", ScoreAction.SCORED),
        ("NO_DATA_MEDIA_NOT_TAGGED", ScoreAction.TAG_THEN_RESCORE),
        ("no_data_scoring_backlog", ScoreAction.WAIT_AND_REFETCH),
        ("NO_DATA_SOMETHING_NEW", ScoreAction.NOT_FIXABLE),
        ("SOMETHING_NEW", ScoreAction.NOT_FIXABLE),
        ("", ScoreAction.NOT_FIXABLE),
    ],
)
def test_action_of_never_raises_on_a_new_result(result: str, action: ScoreAction) -> None:
    assert scoring.action_of(result) is action


# --- scoring: the rescore bound --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "fix"),
    [
        ("NO_DATA_MEDIA_NOT_TAGGED", "tagging and rescoring"),
        ("NO_DATA_MEDIA_TAGGING_FAILURE", "tagging and rescoring"),
        ("NO_DATA_NEW_CRITERIA", "rescoring"),
    ],
)
@pytest.mark.parametrize("rescore_count", [3, 4])
def test_past_max_rescores_a_fixable_round_needs_attention(code: str, fix: str, rescore_count: int) -> None:
    # Given a media rescored max_rescores (3) times already, still asking for a fix
    verdict = scoring.after_scores(scores("PASS", code), rescore_count=rescore_count, settings=settings(max_rescores=3))
    # Then a person must look, and the error says which codes, how many rescores and which setting bounds them
    assert isinstance(verdict.next, End)
    assert verdict.next.state == scoring.NEEDS_ATTENTION
    assert verdict.next.error is not None
    assert code in verdict.next.error
    assert f"after {rescore_count} rescores" in verdict.next.error
    assert "APERTURE_MAX_RESCORES=3" in verdict.next.error
    assert fix in verdict.next.error
    assert verdict.complete is True


@pytest.mark.parametrize("rescore_count", [0, 1, 2])
def test_below_max_rescores_a_fixable_round_is_fixed(rescore_count: int) -> None:
    s = settings(max_rescores=3)
    assert scoring.after_scores(scores("NO_DATA_MEDIA_NOT_TAGGED"), rescore_count=rescore_count, settings=s).next == (
        scoring.FlagForTagging()
    )
    assert scoring.after_scores(scores("NO_DATA_NEW_CRITERIA"), rescore_count=rescore_count, settings=s).next == (
        scoring.Rescore("NO_DATA_NEW_CRITERIA")
    )


def test_with_max_rescores_zero_the_first_fixable_round_needs_attention() -> None:
    verdict = scoring.after_scores(scores("NO_DATA_NEW_CRITERIA"), rescore_count=0, settings=settings(max_rescores=0))
    assert isinstance(verdict.next, End) and verdict.next.error is not None
    assert verdict.next.state == scoring.NEEDS_ATTENTION
    assert "APERTURE_MAX_RESCORES=0" in verdict.next.error


@pytest.mark.parametrize(
    ("results", "expected"),
    [
        (("NO_DATA_SCORING_BACKLOG", "NO_DATA_MEDIA_NOT_TAGGED"), LookAgain(450.0, "NO_DATA_SCORING_BACKLOG")),
        (("PASS",), End(scoring.SCORED, None)),
    ],
)
def test_the_rescore_bound_does_not_touch_rounds_that_ask_for_no_rescore(results, expected) -> None:
    verdict = scoring.after_scores(scores(*results), rescore_count=10, settings=settings(max_rescores=3))
    assert verdict.next == expected


def test_not_tagged_forever_is_four_rounds_and_three_tagging_jobs_then_a_person() -> None:
    # docs/scoring.md, "Bounds": with the default APERTURE_MAX_RESCORES (3)
    s = settings(max_rescores=3)
    rounds = tagging_jobs = 0
    while True:
        rounds += 1
        step = scoring.after_scores(scores("NO_DATA_MEDIA_NOT_TAGGED"), rescore_count=rounds - 1, settings=s).next
        if not isinstance(step, scoring.FlagForTagging):
            break
        tagging_jobs += 1
    assert (rounds, tagging_jobs) == (4, 3)
    assert isinstance(step, End)
    assert step.state == scoring.NEEDS_ATTENTION


# --- scoring: rescore_version ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("original", "number", "version"),
    [("v1", 1, "v1-r1"), ("v1", 2, "v1-r2"), (None, 1, "1-r1"), ("2024-07", 3, "2024-07-r3")],
)
def test_a_rescore_is_the_same_media_under_a_new_version(original: str | None, number: int, version: str) -> None:
    assert scoring.rescore_version(original, number) == version


def test_every_rescore_has_a_version_of_its_own() -> None:
    versions = {"v1"} | {scoring.rescore_version("v1", n) for n in range(1, 6)}
    assert len(versions) == 6
