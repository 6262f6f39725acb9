"""Unit tests of the Vidmob clients, mocked only at the HTTP boundary (``responses``; no real network).

Each test reads given / when / then and asserts what a user of the client would check: the typed result,
the error class and its ``retryable`` flag, the recorded attempts, and that the API key never leaks.
"""

from __future__ import annotations

import json
import logging
import pickle
import traceback
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from urllib.parse import quote

import pytest
import requests
import responses
from pydantic import SecretStr
from responses import matchers

from clients import (
    ApiError,
    AssetAnnotation,
    AssetRef,
    Attempt,
    BadRequestError,
    ChannelSummary,
    ClientTag,
    ConflictError,
    DisallowedHostError,
    GuidelineResult,
    GuideTagsClient,
    MalformedResponseError,
    MediaScoringStatus,
    MediaTagsClient,
    NotFoundError,
    RateLimitedError,
    RedirectError,
    ResultsDownloadError,
    RetryableApiError,
    ScoreAction,
    ScoringClient,
    ServerError,
    Tag,
    TagsJobState,
    TerminalApiError,
    TransportError,
    UnauthorizedError,
    UnsupportedRequestError,
    VidmobHttp,
    classify_result,
    make_tags_client,
    normalize_channel,
    parse_retry_after,
)

BASE = "https://public-api.vidmob.com"
KEY = "vm-live-S3cr3t+K3y/0123456789"
GUIDE_STATUS_TEMPLATE = "/v1/aperture/jobs/{job_id}/status"
JOB = "a3f9c12e-7b4d-4e21-9f1c-8d2e6b0a5c3f"
GUIDE_STATUS_URL = f"{BASE}/v1/aperture/jobs/{JOB}/status"
DOWNLOAD_URL = "https://vidmob-results.s3.amazonaws.com/jobs/j-1/tags.json?X-Amz-Signature=abc&X-Amz-Expires=300"


def ok(result: object) -> dict[str, object]:
    return {"status": "OK", "result": result}


def vidmob_error(message: object, kind: str = "BADREQUESTEXCEPTION", trace_id: str = "trace-42") -> dict:
    return {
        "status": "ERROR",
        "traceId": trace_id,
        "error": {
            "identifier": "vidmob.aperture.exception",
            "type": kind,
            "system": "aperture",
            "message": message,
        },
    }


@pytest.fixture
def rsps() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        yield mock


@pytest.fixture
def attempts() -> list[Attempt]:
    return []


@pytest.fixture
def gate_calls() -> list[str]:
    return []


@pytest.fixture
def http(attempts: list[Attempt], gate_calls: list[str]) -> VidmobHttp:
    return VidmobHttp(
        BASE,
        KEY,
        on_attempt=attempts.append,
        before_request=gate_calls.append,
        download_hosts=("*.amazonaws.com",),
    )


def call_guide_status(http: VidmobHttp) -> dict:
    return http.request("GET", GUIDE_STATUS_TEMPLATE, path_params={"job_id": JOB})


def assert_no_key(*texts: object) -> None:
    for text in texts:
        rendered = str(text)
        assert KEY not in rendered
        assert quote(KEY, safe="") not in rendered


def assert_error_has_no_key(error: ApiError) -> None:
    assert_no_key(
        str(error),
        repr(error),
        error.args,
        error.detail,
        getattr(error, "messages", ()),
        "".join(traceback.format_exception(error)),
    )


# -- the guide dialect ------------------------------------------------------------------------------


def test_guide_create_job_sends_assets_and_labelled_client_tags_and_returns_the_job_id(
    rsps, http, attempts, gate_calls
):
    # Given Vidmob accepts the job
    rsps.post(f"{BASE}/v1/aperture/jobs", json=ok({"job_id": JOB}), status=201)
    client = GuideTagsClient(http)

    # When two assets are submitted with two client tags (one without a description)
    job_id = client.create_job(
        [AssetRef("https://cdn.example.com/a.mp4", id="own-a"), AssetRef("https://cdn.example.com/b.mp4")],
        [ClientTag("lifestyle", "Real-life settings"), ClientTag("product-forward")],
    )

    # Then the job id comes back, the body is the guide's shape and the request is authenticated
    assert job_id == JOB
    sent = rsps.calls[0].request
    assert json.loads(sent.body) == {
        "assets": [{"url": "https://cdn.example.com/a.mp4"}, {"url": "https://cdn.example.com/b.mp4"}],
        "clientTags": [
            {"label": "lifestyle", "description": "Real-life settings"},
            {"label": "product-forward"},
        ],
    }
    assert sent.headers["Authorization"] == f"Bearer {KEY}"
    assert sent.headers["Accept"] == "application/json"
    assert sent.headers["User-Agent"].startswith("aperture-workers/")
    # And the rate-limit hook ran once and one successful attempt was recorded under the template
    assert gate_calls == ["POST /v1/aperture/jobs"]
    assert [(a.endpoint, a.status_code, a.outcome, a.error) for a in attempts] == [
        ("POST /v1/aperture/jobs", 201, "ok", None)
    ]
    assert attempts[0].method == "POST"
    assert attempts[0].latency_ms >= 0


def test_guide_status_complete_returns_the_annotations_inline(rsps, http, attempts):
    # Given a COMPLETE job with annotations, including a client tag
    rsps.get(
        GUIDE_STATUS_URL,
        json=ok(
            {
                "job_id": JOB,
                "status": "COMPLETE",
                "annotations": [
                    {
                        "url": "https://cdn.example.com/a.mp4",
                        "tags": [
                            {"category": "visual", "label": "outdoor scene"},
                            {"category": "client", "label": "lifestyle"},
                        ],
                    },
                    {"url": "https://cdn.example.com/b.mp4", "tags": []},
                ],
            }
        ),
    )

    # When the job is polled
    status = GuideTagsClient(http).get_status(JOB)

    # Then the state is COMPLETE and each asset's tags are typed
    assert status.state is TagsJobState.COMPLETE
    assert status.annotations == (
        AssetAnnotation(
            url="https://cdn.example.com/a.mp4",
            id=None,
            tags=(Tag("visual", "outdoor scene"), Tag("client", "lifestyle")),
        ),
        AssetAnnotation(url="https://cdn.example.com/b.mp4", id=None, tags=()),
    )
    # And the attempt is labelled with the template, not the job id
    assert [a.endpoint for a in attempts] == ["GET /v1/aperture/jobs/{job_id}/status"]


@pytest.mark.parametrize(
    ("vidmob_status", "state"),
    [
        ("PENDING", TagsJobState.PENDING),
        ("PROCESSING", TagsJobState.PROCESSING),
        ("FAILED", TagsJobState.FAILED),
    ],
)
def test_guide_status_reports_states_that_carry_no_annotations(rsps, http, vidmob_status, state):
    # Given a job that is not complete
    rsps.get(GUIDE_STATUS_URL, json=ok({"job_id": JOB, "status": vidmob_status}))

    # When it is polled
    status = GuideTagsClient(http).get_status(JOB)

    # Then the state is reported and there are no annotations
    assert status.state is state
    assert status.annotations == ()
    assert status.state.is_final == (state is TagsJobState.FAILED)


@pytest.mark.parametrize(
    "result",
    [
        {"status": "COMPLETE"},  # annotations missing
        {"status": "COMPLETE", "annotations": [{"url": "u", "tags": [{"category": "visual"}]}]},  # no label
        {"status": "COMPLETE", "annotations": "not-a-list"},
        {"job_id": JOB},  # no status
    ],
)
def test_guide_status_with_undocumented_fields_is_retryable(rsps, http, attempts, result):
    # Given a 200 whose result does not have the documented fields
    rsps.get(GUIDE_STATUS_URL, json=ok(result))

    # When it is polled, then the caller gets a retryable error and the attempt says so
    with pytest.raises(MalformedResponseError) as caught:
        GuideTagsClient(http).get_status(JOB)
    assert caught.value.retryable
    assert [(a.status_code, a.outcome) for a in attempts] == [(200, "retryable")]


def test_guide_unknown_status_is_retryable_and_logged(rsps, http, caplog):
    # Given Vidmob answers with a status the guide does not document
    rsps.get(GUIDE_STATUS_URL, json=ok({"job_id": JOB, "status": "ARCHIVED"}))
    caplog.set_level(logging.WARNING)

    # When it is polled
    with pytest.raises(RetryableApiError) as caught:
        GuideTagsClient(http).get_status(JOB)

    # Then the error names the status, and a warning was logged for the operator
    assert "ARCHIVED" in caught.value.detail
    assert "ARCHIVED" in caplog.text


def test_job_id_is_url_quoted_so_it_cannot_change_the_path(rsps, http):
    # Given a hostile job id, and Vidmob answering only at the quoted path
    rsps.get(f"{BASE}/v1/aperture/jobs/..%2Fadmin/status", json=ok({"status": "PENDING"}))

    # When it is polled, then the request stays on the status endpoint
    assert GuideTagsClient(http).get_status("../admin").state is TagsJobState.PENDING


# -- the media dialect ------------------------------------------------------------------------------


def test_media_create_job_maps_assets_to_creatives_and_tags_to_an_object(rsps, http):
    # Given Vidmob accepts the job
    rsps.post(
        f"{BASE}/v1/media/aperture",
        json=ok({"job_id": "j-1", "status": "QUEUED", "creativeIdentifiers": ["own-a", "asset-1"]}),
    )

    # When assets with and without own ids are submitted, with a repeated label
    job_id = MediaTagsClient(http).create_job(
        [AssetRef("https://cdn.example.com/a.mp4", id="own-a"), AssetRef("https://cdn.example.com/b.mp4")],
        [ClientTag("lifestyle", "first"), ClientTag("product-forward"), ClientTag("lifestyle", "second")],
    )

    # Then creatives carry the own id or a positional one, and tags become {label: description or label}
    assert job_id == "j-1"
    assert json.loads(rsps.calls[0].request.body) == {
        "creatives": [
            {"id": "own-a", "url": "https://cdn.example.com/a.mp4"},
            {"id": "asset-1", "url": "https://cdn.example.com/b.mp4"},
        ],
        "clientTags": {"lifestyle": "second", "product-forward": "product-forward"},
    }


def test_media_more_than_ten_client_tags_is_refused_before_any_http_call(rsps, http, attempts, gate_calls):
    # Given eleven distinct client tags (no HTTP response is registered: any call would fail the test)
    tags = [ClientTag(f"tag-{i}", "d") for i in range(11)]

    # When a media-dialect job is created
    with pytest.raises(UnsupportedRequestError) as caught:
        MediaTagsClient(http).create_job([AssetRef("https://cdn.example.com/a.mp4")], tags)

    # Then it is terminal with a clear message, and nothing was sent, gated or recorded
    assert not caught.value.retryable
    assert isinstance(caught.value, TerminalApiError)
    assert "at most 10 client tags" in str(caught.value)
    assert len(rsps.calls) == 0
    assert gate_calls == []
    assert attempts == []


def test_media_ten_distinct_labels_are_accepted_even_if_more_tags_were_given(rsps, http):
    # Given eleven client tags of which two share a label (so ten pairs)
    rsps.post(f"{BASE}/v1/media/aperture", json=ok({"job_id": "j-1"}))
    tags = [ClientTag(f"tag-{i}") for i in range(10)] + [ClientTag("tag-0", "again")]

    # When the job is created, then it is sent with ten pairs
    MediaTagsClient(http).create_job([AssetRef("https://cdn.example.com/a.mp4")], tags)
    assert len(json.loads(rsps.calls[0].request.body)["clientTags"]) == 10


@pytest.mark.parametrize(
    "assets",
    [
        [],
        [AssetRef(f"https://cdn.example.com/{i}.mp4") for i in range(201)],
        [AssetRef("https://cdn.example.com/a.mp4", id="asset-1"), AssetRef("https://cdn.example.com/b.mp4")],
    ],
    ids=["no-creatives", "too-many-creatives", "clashing-ids"],
)
def test_media_creatives_it_cannot_express_are_refused_before_any_http_call(rsps, http, assets):
    # Given assets the media dialect cannot take; when the job is created, then nothing is sent
    with pytest.raises(UnsupportedRequestError):
        MediaTagsClient(http).create_job(assets, [])
    assert len(rsps.calls) == 0


@pytest.mark.parametrize(
    ("result", "state", "message", "errors"),
    [
        ({"status": "QUEUED"}, TagsJobState.PENDING, None, {}),
        (
            {"status": "PROCESSING", "message": "Processed 4 out of 12 media."},
            TagsJobState.PROCESSING,
            "Processed 4 out of 12 media.",
            {},
        ),
        (
            {"status": "FAILED", "errors": {"asset-0": "could not download"}},
            TagsJobState.FAILED,
            None,
            {"asset-0": "could not download"},
        ),
    ],
)
def test_media_states_are_normalized_to_the_guide_vocabulary(rsps, http, result, state, message, errors):
    # Given the media status endpoint reports a non-complete state
    rsps.get(f"{BASE}/v1/media/aperture/j-1", json=ok({"job_id": "j-1", **result}))

    # When the job is polled
    status = MediaTagsClient(http).get_status("j-1")

    # Then the state is normalized and progress/errors are passed through
    assert (status.state, status.message, status.errors, status.annotations) == (state, message, errors, ())


def test_media_completed_downloads_the_results_without_the_api_key(rsps, http, attempts, gate_calls):
    # Given a COMPLETED job whose tags sit behind a signed link on another host
    rsps.get(
        f"{BASE}/v1/media/aperture/j-1",
        json=ok(
            {
                "job_id": "j-1",
                "status": "COMPLETED",
                "download_url_json": DOWNLOAD_URL,
                "download_url_csv": DOWNLOAD_URL.replace(".json", ".csv"),
            }
        ),
    )
    rsps.get(
        DOWNLOAD_URL,
        json={
            "job_id": "j-1",
            "creatives": [
                {
                    "id": "own-a",
                    "url": "https://cdn.example.com/a.mp4",
                    "tags": [{"category": "brand", "label": "logo visible"}],
                },
                {"id": "asset-1", "url": "https://cdn.example.com/b.mp4", "tags": []},
            ],
        },
        content_type="binary/octet-stream",
    )

    # When the job is polled
    status = MediaTagsClient(http).get_status("j-1")

    # Then the state is COMPLETE and annotations map back by creative id
    assert status.state is TagsJobState.COMPLETE
    assert status.annotations == (
        AssetAnnotation("https://cdn.example.com/a.mp4", "own-a", (Tag("brand", "logo visible"),)),
        AssetAnnotation("https://cdn.example.com/b.mp4", "asset-1", ()),
    )
    # And the key went to Vidmob but not to the download host
    assert rsps.calls[0].request.headers["Authorization"] == f"Bearer {KEY}"
    assert "Authorization" not in rsps.calls[1].request.headers
    # And both attempts are recorded under stable labels (no signed URL in a label)
    assert [(a.endpoint, a.outcome) for a in attempts] == [
        ("GET /v1/media/aperture/{job_id}", "ok"),
        ("GET {download_url_json}", "ok"),
    ]
    assert gate_calls == ["GET /v1/media/aperture/{job_id}", "GET {download_url_json}"]


@pytest.mark.parametrize(
    ("download", "expected_error"),
    [
        ({"status": 403, "body": "<Error><Code>AccessDenied</Code></Error>"}, ResultsDownloadError),
        ({"status": 200, "body": "not json"}, MalformedResponseError),
        (
            {"status": 200, "json": {"job_id": "j-1", "creatives": [{"url": "u", "tags": []}]}},
            MalformedResponseError,
        ),
        ({"status": 200, "json": {"job_id": "other-job", "creatives": []}}, MalformedResponseError),
        ({"body": requests.ConnectionError("reset")}, TransportError),
    ],
    ids=["expired-link", "not-json", "creative-without-id", "other-job", "connection-reset"],
)
def test_media_results_download_that_fails_is_retryable(rsps, http, download, expected_error):
    # Given a COMPLETED job whose results link fails or returns something else
    rsps.get(
        f"{BASE}/v1/media/aperture/j-1",
        json=ok({"job_id": "j-1", "status": "COMPLETED", "download_url_json": DOWNLOAD_URL}),
    )
    rsps.get(DOWNLOAD_URL, **download)

    # When the job is polled, then the caller is told to try again (a new poll gives a new link)
    with pytest.raises(expected_error) as caught:
        MediaTagsClient(http).get_status("j-1")
    assert caught.value.retryable


def test_media_completed_without_download_link_is_retryable(rsps, http):
    # Given COMPLETED without the documented link; when polled, then retryable
    rsps.get(f"{BASE}/v1/media/aperture/j-1", json=ok({"job_id": "j-1", "status": "COMPLETED"}))
    with pytest.raises(MalformedResponseError):
        MediaTagsClient(http).get_status("j-1")


def test_media_dialect_does_not_accept_the_guide_status_words(rsps, http):
    # Given the media endpoint answering in the guide's vocabulary; when polled, then retryable
    rsps.get(f"{BASE}/v1/media/aperture/j-1", json=ok({"job_id": "j-1", "status": "COMPLETE"}))
    with pytest.raises(MalformedResponseError):
        MediaTagsClient(http).get_status("j-1")


def test_make_tags_client_picks_the_dialect(http):
    # Given the configured dialect, when the client is made, then it speaks that dialect
    assert isinstance(make_tags_client("guide", http), GuideTagsClient)
    assert isinstance(make_tags_client("media", http), MediaTagsClient)
    with pytest.raises(ValueError, match="unknown tags dialect"):
        make_tags_client("soap", http)


# -- the error taxonomy -----------------------------------------------------------------------------

# Built when the module is imported, read up to minutes later (the suite's other tests run between):
# an hour ahead, checked as "about an hour", holds whenever the test runs.
IN_AN_HOUR = format_datetime(datetime.now(UTC) + timedelta(seconds=3600), usegmt=True)

UNAUTHORIZED_FLAT = {"statusCode": 401, "message": "Request is Unauthorized", "error": "Unauthorized"}
NOT_JSON = "<html>maintenance</html>"

# (responses kwargs, error class, status code, expected retry_after), one row per rule of the taxonomy.
TAXONOMY = [
    pytest.param({"body": requests.ConnectionError("refused")}, TransportError, None, None, id="conn-error"),
    pytest.param({"body": requests.ReadTimeout("timed out")}, TransportError, None, None, id="read-timeout"),
    pytest.param({"body": requests.ConnectTimeout("timed out")}, TransportError, None, None, id="conn-timeout"),
    pytest.param({"status": 429, "headers": {"Retry-After": "7"}}, RateLimitedError, 429, 7.0, id="429-secs"),
    pytest.param(
        {"status": 429, "headers": {"Retry-After": IN_AN_HOUR}},
        RateLimitedError,
        429,
        "~3600",
        id="429-date",
    ),
    pytest.param({"status": 429, "json": {"message": "slow"}}, RateLimitedError, 429, None, id="429-bare"),
    pytest.param({"status": 500, "body": "Internal Server Error"}, ServerError, 500, None, id="500"),
    pytest.param({"status": 503, "headers": {"Retry-After": "3"}}, ServerError, 503, 3.0, id="503"),
    pytest.param({"status": 200, "body": NOT_JSON}, MalformedResponseError, 200, None, id="200-not-json"),
    pytest.param({"status": 200, "json": {"status": "OK"}}, MalformedResponseError, 200, None, id="200-no-result"),
    pytest.param(
        {"status": 200, "json": {"status": "ERROR", "result": {}}},
        MalformedResponseError,
        200,
        None,
        id="200-error",
    ),
    pytest.param({"status": 200, "json": [1, 2]}, MalformedResponseError, 200, None, id="200-json-list"),
    pytest.param({"status": 204}, MalformedResponseError, 204, None, id="204-unexpected"),
    pytest.param({"status": 400, "json": vidmob_error("bad")}, BadRequestError, 400, None, id="400"),
    pytest.param({"status": 401, "json": UNAUTHORIZED_FLAT}, UnauthorizedError, 401, None, id="401-flat"),
    pytest.param({"status": 403, "json": {"message": "Forbidden"}}, UnauthorizedError, 403, None, id="403"),
    pytest.param(
        {"status": 404, "json": vidmob_error("job not found", "NOTFOUNDEXCEPTION")},
        NotFoundError,
        404,
        None,
        id="404",
    ),
    pytest.param(
        {"status": 409, "json": vidmob_error("exists", "CONFLICTEXCEPTION")},
        ConflictError,
        409,
        None,
        id="409",
    ),
    pytest.param({"status": 422, "json": {"message": "nope"}}, TerminalApiError, 422, None, id="422-other-4xx"),
    pytest.param(
        {"status": 302, "headers": {"Location": "https://elsewhere.example.com/"}},
        RedirectError,
        302,
        None,
        id="302",
    ),
]


@pytest.mark.parametrize(
    ("response", "error_class", "status_code", "retry_after"),
    TAXONOMY,
)
def test_every_failure_maps_to_one_error_class_and_one_recorded_attempt(
    rsps, http, attempts, response, error_class, status_code, retry_after
):
    # Given Vidmob (or the network) fails in one specific way
    rsps.get(GUIDE_STATUS_URL, **response)

    # When a request is made
    with pytest.raises(ApiError) as caught:
        call_guide_status(http)

    # Then the error is exactly the class callers branch on, with a retryable flag to match
    error = caught.value
    assert type(error) is error_class
    should_retry = issubclass(error_class, RetryableApiError)
    assert error.retryable is should_retry
    assert isinstance(error, RetryableApiError if should_retry else TerminalApiError)
    assert error.status_code == status_code
    assert error.endpoint == "GET /v1/aperture/jobs/{job_id}/status"
    if retry_after == "~3600":
        assert error.retry_after is not None and 3000 < error.retry_after <= 3601
    else:
        assert error.retry_after == retry_after
    # And exactly one attempt was recorded, under the template, with the same outcome
    assert len(attempts) == 1
    attempt = attempts[0]
    assert attempt.endpoint == "GET /v1/aperture/jobs/{job_id}/status"
    assert attempt.status_code == status_code
    assert attempt.outcome == ("retryable" if should_retry else "terminal")
    assert attempt.error == error.detail
    assert attempt.retry_after == error.retry_after
    # And the client did not retry nor follow a redirect: one HTTP call only
    assert len(rsps.calls) == 1


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("creatives must contain at least 1 elements", ("creatives must contain at least 1 elements",)),
        (
            ["creatives must contain no more than 200 elements", "clientTags must be an object"],
            ("creatives must contain no more than 200 elements", "clientTags must be an object"),
        ),
    ],
    ids=["string-message", "list-message"],
)
def test_bad_request_carries_vidmob_messages_and_trace_id(rsps, http, message, expected):
    # Given a 400 with Vidmob's error body
    rsps.post(f"{BASE}/v1/media/aperture", status=400, json=vidmob_error(message, trace_id="trace-7"))

    # When the job is created
    with pytest.raises(BadRequestError) as caught:
        MediaTagsClient(http).create_job([AssetRef("https://cdn.example.com/a.mp4")], [])

    # Then the messages are available one by one and the detail names the trace id
    assert caught.value.messages == expected
    assert all(m in caught.value.detail for m in expected)
    assert "traceId=trace-7" in caught.value.detail
    assert "BADREQUESTEXCEPTION" in caught.value.detail


def test_flat_401_body_is_read_into_the_detail(rsps, http):
    # Given the flat 401 body; when a request is made, then its message is in the detail
    rsps.get(
        GUIDE_STATUS_URL,
        status=401,
        json={"statusCode": 401, "message": "Request is Unauthorized", "error": "Unauthorized"},
    )
    with pytest.raises(UnauthorizedError) as caught:
        call_guide_status(http)
    assert "Request is Unauthorized" in caught.value.detail


def test_parse_retry_after_reads_seconds_and_http_dates():
    # Given a fixed clock, when Retry-After values are parsed, then both forms give seconds
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("30", now=now) == 30.0
    assert parse_retry_after("Thu, 01 Jan 2026 12:01:30 GMT", now=now) == 90.0
    assert parse_retry_after("Thu, 01 Jan 2026 11:00:00 GMT", now=now) == 0.0  # in the past: go now
    assert parse_retry_after("-5", now=now) == 0.0
    assert parse_retry_after("soon", now=now) is None
    assert parse_retry_after(None) is None


def test_a_retry_after_of_years_is_cut_to_a_day_and_never_overflows():
    # Given servers asking for absurd waits (they used to overflow the scheduler's datetime)
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    # Then the wait is a day at most
    assert parse_retry_after("1e300", now=now) == 86400.0
    assert parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT", now=now) == 86400.0


@pytest.mark.parametrize("job_id", ["j" * 256, "job\x00id", "job\nid"], ids=["too-long", "nul", "newline"])
def test_a_job_id_we_could_not_store_or_send_back_is_a_malformed_answer(rsps, http, job_id):
    # Given Vidmob answers a create call with an id longer than any id, or with control characters
    rsps.post(f"{BASE}/v1/aperture/jobs", json=ok({"job_id": job_id}), status=201)
    # Then it is not taken as a job id: a malformed (retryable, outcome-unknown) answer
    with pytest.raises(MalformedResponseError) as caught:
        GuideTagsClient(http).create_job([AssetRef("https://cdn.example.com/a.mp4")], [])
    assert "result.job_id is not an id" in caught.value.detail


def test_errors_survive_pickling_for_celery(rsps, http):
    # Given a rate-limit error as Celery would serialize it
    rsps.get(GUIDE_STATUS_URL, status=429, headers={"Retry-After": "5"})
    with pytest.raises(RateLimitedError) as caught:
        call_guide_status(http)

    # When it is pickled and restored, then it keeps its class, message and attributes
    restored = pickle.loads(pickle.dumps(caught.value))  # noqa: S301 - bytes we just made
    assert type(restored) is RateLimitedError
    assert str(restored) == str(caught.value)
    assert (restored.endpoint, restored.status_code, restored.retry_after, restored.retryable) == (
        "GET /v1/aperture/jobs/{job_id}/status",
        429,
        5.0,
        True,
    )


# -- the API key never leaks ------------------------------------------------------------------------


def test_repr_of_the_client_does_not_show_the_key():
    # Given clients built from a str and a SecretStr; when shown, then the key is not there
    assert_no_key(repr(VidmobHttp(BASE, KEY)), repr(VidmobHttp(BASE, SecretStr(KEY))))
    assert_no_key(vars(VidmobHttp(BASE, KEY)))


def test_key_echoed_by_the_server_is_scrubbed_everywhere(rsps, http, attempts, caplog):
    # Given Vidmob echoes the key (raw and URL-encoded) in its error message
    caplog.set_level(logging.DEBUG)
    rsps.get(
        GUIDE_STATUS_URL,
        status=400,
        json=vidmob_error([f"invalid key {KEY}", f"see ?key={quote(KEY, safe='')}"]),
    )

    # When a request is made
    with pytest.raises(BadRequestError) as caught:
        call_guide_status(http)

    # Then the error is still useful but the key is nowhere
    assert "invalid key [REDACTED]" in caught.value.messages
    assert_error_has_no_key(caught.value)
    assert_no_key(attempts, caplog.text)


def test_key_in_a_server_error_page_is_scrubbed(rsps, http, attempts, caplog):
    # Given a 500 plain-text page that prints the Authorization header
    caplog.set_level(logging.DEBUG)
    rsps.get(GUIDE_STATUS_URL, status=500, body=f"upstream failed; Authorization: Bearer {KEY}")

    # When a request is made, then the key is in no error, attempt or log line
    with pytest.raises(ServerError) as caught:
        call_guide_status(http)
    assert "[REDACTED]" in caught.value.detail
    assert_error_has_no_key(caught.value)
    assert_no_key(attempts, caplog.text)


def test_key_in_a_connection_error_message_is_scrubbed(rsps, http, attempts, caplog):
    # Given requests raises a connection error whose message contains the key
    caplog.set_level(logging.DEBUG)
    rsps.get(GUIDE_STATUS_URL, body=requests.ConnectionError(f"proxy said: bad credentials {KEY}"))

    # When a request is made
    with pytest.raises(TransportError) as caught:
        call_guide_status(http)

    # Then the error says what happened, without the key, and without chaining the original exception
    assert "ConnectionError" in caught.value.detail
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert_error_has_no_key(caught.value)
    assert_no_key(attempts, caplog.text)


def test_key_in_an_unknown_status_is_scrubbed_from_the_warning(rsps, http, caplog):
    # Given a status string that contains the key; when polled, then the warning does not show it
    caplog.set_level(logging.DEBUG)
    rsps.get(GUIDE_STATUS_URL, json=ok({"status": f"WEIRD-{KEY}"}))
    with pytest.raises(MalformedResponseError) as caught:
        GuideTagsClient(http).get_status(JOB)
    assert_error_has_no_key(caught.value)
    assert_no_key(caplog.text)


def test_each_attempt_is_logged_at_debug_with_endpoint_status_and_latency_only(rsps, http, caplog):
    # Given a successful call
    caplog.set_level(logging.DEBUG, logger="clients")
    rsps.get(GUIDE_STATUS_URL, json=ok({"status": "PENDING"}))

    # When it is made
    call_guide_status(http)

    # Then one DEBUG line names the template and status, and neither the key nor the job id
    lines = [r.getMessage() for r in caplog.records if r.name == "clients.http"]
    assert len(lines) == 1
    assert "GET /v1/aperture/jobs/{job_id}/status" in lines[0]
    assert "status=200" in lines[0]
    assert "latency_ms=" in lines[0]
    assert JOB not in lines[0]
    assert_no_key(caplog.text)


def test_authorization_is_only_sent_to_the_api_base_url(rsps, http):
    # Given absolute URLs on the API host, on an allowed download host and on a look-alike host
    rsps.get(f"{BASE}/v1/exports/1.json", json={"ok": True})
    rsps.get("https://results.s3.amazonaws.com/x.json", json={"ok": True})

    # When all three are fetched
    http.request("GET", "{export}", absolute_url=f"{BASE}/v1/exports/1.json", envelope=False)
    http.request("GET", "{export}", absolute_url="https://results.s3.amazonaws.com/x.json", envelope=False)
    with pytest.raises(DisallowedHostError):
        http.request("GET", "{export}", absolute_url="https://public-api.vidmob.com.evil.example/x.json")

    # Then only the API host received the key, and the look-alike host was never called at all
    assert rsps.calls[0].request.headers["Authorization"] == f"Bearer {KEY}"
    assert "Authorization" not in rsps.calls[1].request.headers
    assert len(rsps.calls) == 2


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "http://localhost:6379/",
        "http://aperture-postgres.default.svc.cluster.local:5432/",
        "https://evil.amazonaws.com.example.org/x.json",
    ],
)
def test_a_download_url_off_the_allowed_hosts_is_never_fetched(rsps, http, attempts, url):
    # Given a COMPLETED status whose download link points at an internal or foreign address
    rsps.get(
        f"{BASE}/v1/media/aperture/j-1", json=ok({"job_id": "j-1", "status": "COMPLETED", "download_url_json": url})
    )
    # When the job is polled, then the link is refused without a request, as a terminal error
    with pytest.raises(DisallowedHostError) as caught:
        MediaTagsClient(http).get_status("j-1")
    assert not caught.value.retryable
    assert len(rsps.calls) == 1  # the status only
    assert attempts[-1].outcome == "terminal"


def test_a_response_over_the_size_cap_is_refused_whole(rsps, attempts):
    # Given a client that reads at most 1 KiB per response, and a 5 KiB answer
    small = VidmobHttp(BASE, KEY, on_attempt=attempts.append, max_response_bytes=1024)
    rsps.get(GUIDE_STATUS_URL, json=ok({"status": "PROCESSING", "pad": "x" * 5000}))
    # Then it is a terminal error that says so, and the attempt is recorded
    with pytest.raises(TerminalApiError) as caught:
        small.request("GET", GUIDE_STATUS_TEMPLATE, path_params={"job_id": JOB})
    assert "response body over 1024 bytes" in caught.value.detail
    assert attempts[-1].status_code == 200 and attempts[-1].outcome == "terminal"


# -- scoring ----------------------------------------------------------------------------------------


def test_submit_media_sends_the_documented_body_and_returns_the_unique_id(rsps, http, attempts):
    # Given Vidmob accepts the media
    rsps.post(f"{BASE}/v1/media", status=201, json=ok({"uniqueId": "u-1"}))

    # When it is submitted with aliased channels
    unique_id = ScoringClient(http).submit_media(
        media_id="m-1",
        url="https://cdn.example.com/a.mp4",
        version="2",
        channels=["facebook", "Instagram", "tiktok"],
        workspace_id=12,
        name="Spring ad",
    )

    # Then the unique id comes back and the channels are canonical and unique
    assert unique_id == "u-1"
    assert json.loads(rsps.calls[0].request.body) == {
        "id": "m-1",
        "url": "https://cdn.example.com/a.mp4",
        "version": "2",
        "name": "Spring ad",
        "channels": ["META", "TIKTOK"],
        "workspaceId": 12,
    }
    assert [(a.endpoint, a.status_code) for a in attempts] == [("POST /v1/media", 201)]


def test_submit_media_twice_is_a_conflict(rsps, http):
    # Given the same id + version was already submitted
    rsps.post(f"{BASE}/v1/media", status=409, json=vidmob_error("media already exists", "CONFLICTEXCEPTION"))

    # When it is submitted again, then a terminal ConflictError says so
    with pytest.raises(ConflictError) as caught:
        ScoringClient(http).submit_media(media_id="m-1", url="https://cdn.example.com/a.mp4")
    assert not caught.value.retryable
    assert "media already exists" in caught.value.detail


def test_submit_media_with_an_unknown_channel_fails_before_any_http_call(rsps, http):
    with pytest.raises(ValueError, match="unknown scoring channel"):
        ScoringClient(http).submit_media(media_id="m-1", url="u", channels=["MYSPACE"])
    assert len(rsps.calls) == 0


@pytest.mark.parametrize(
    ("vidmob_status", "is_final", "worth_retrying"),
    [
        ("COMPLETE", True, False),
        ("PROCESSING", False, False),
        ("UNSUPPORTED", True, False),
        ("FAILED", True, False),
        ("ERROR", False, True),
    ],
)
def test_scoring_status_tells_whether_to_stop_or_retry(rsps, http, vidmob_status, is_final, worth_retrying):
    # Given a media in some scoring status
    rsps.get(f"{BASE}/v1/media/u-1/status", json=ok({"status": vidmob_status}))

    # When it is polled
    status = ScoringClient(http).get_status("u-1")

    # Then the enum says whether polling is over and whether a resubmit may help
    assert status is MediaScoringStatus(vidmob_status)
    assert (status.is_final, status.worth_retrying) == (is_final, worth_retrying)


def test_scoring_unknown_status_is_retryable(rsps, http):
    rsps.get(f"{BASE}/v1/media/u-1/status", json=ok({"status": "THINKING"}))
    with pytest.raises(MalformedResponseError):
        ScoringClient(http).get_status("u-1")


SUMMARY_FIELDS = {
    "adherencePercent": 66.7,
    "passCount": 2,
    "failCount": 1,
    "applicableCount": 3,
    "notApplicableCount": 1,
    "notAvailableCount": 1,
}
DETAIL = [
    {
        "name": "Logo early",
        "rule": "logo in first 3s",
        "channelIdentifier": "TIKTOK",
        "result": "PASS",
        "weight": 1,
    },
    {
        "name": "Human presence",
        "rule": "person on screen",
        "channelIdentifier": "META",
        "result": "NO_DATA_MEDIA_NOT_TAGGED",
        "weight": 0.5,
    },
]


@pytest.mark.parametrize(
    "summary",
    [
        {"TIKTOK": SUMMARY_FIELDS, "META": {**SUMMARY_FIELDS, "adherencePercent": None}},
        [
            {"channel": "TIKTOK", **SUMMARY_FIELDS},
            {"channelIdentifier": "META", **SUMMARY_FIELDS, "adherencePercent": None},
        ],
    ],
    ids=["summary-keyed-by-channel", "summary-as-list"],
)
def test_get_scores_parses_summary_and_detail(rsps, http, summary):
    # Given detailed scores for two channels
    rsps.get(
        f"{BASE}/v1/scoring/media/u-1/scores",
        match=[matchers.query_param_matcher({"format": "detail", "channel": "TIKTOK,META"})],
        json=ok({"media": {"id": "m-1", "name": "Spring ad"}, "summary": summary, "detail": DETAIL}),
    )

    # When scores are fetched for aliased channels
    scores = ScoringClient(http).get_scores("u-1", channels=["tiktok", "facebook"])

    # Then the summary is per channel and each guideline says what to do next
    assert scores.media == {"id": "m-1", "name": "Spring ad"}
    assert scores.summary["TIKTOK"] == ChannelSummary(66.7, 2, 1, 3, 1, 1)
    assert scores.summary["META"].adherence_percent is None
    assert scores.detail == (
        GuidelineResult("Logo early", "logo in first 3s", "TIKTOK", "PASS", 1.0),
        GuidelineResult("Human presence", "person on screen", "META", "NO_DATA_MEDIA_NOT_TAGGED", 0.5),
    )
    assert [g.action for g in scores.detail] == [ScoreAction.SCORED, ScoreAction.TAG_THEN_RESCORE]


def test_get_scores_without_channels_asks_only_for_detail(rsps, http, attempts):
    # Given scores for all channels
    rsps.get(
        f"{BASE}/v1/scoring/media/u-1/scores",
        match=[matchers.query_param_matcher({"format": "detail"})],
        json=ok({"media": {}, "summary": {}, "detail": []}),
    )

    # When fetched without channels, then no channel filter is sent and the label is the template
    assert ScoringClient(http).get_scores("u-1").detail == ()
    assert attempts[0].endpoint == "GET /v1/scoring/media/{media_id}/scores"


@pytest.mark.parametrize(
    "result",
    [
        {"summary": {}},  # no detail
        {"summary": "all good", "detail": []},
        {"summary": {"TIKTOK": {"passCount": "2"}}, "detail": []},
        {"summary": {}, "detail": [{"name": "x", "channelIdentifier": "META"}]},  # no result
    ],
)
def test_get_scores_with_an_undocumented_shape_is_retryable(rsps, http, result):
    rsps.get(f"{BASE}/v1/scoring/media/u-1/scores", json=ok(result))
    with pytest.raises(MalformedResponseError):
        ScoringClient(http).get_scores("u-1")


@pytest.mark.parametrize(
    ("result", "action"),
    [
        ("PASS", ScoreAction.SCORED),
        ("FAIL", ScoreAction.SCORED),
        ("NOT_APPLICABLE", ScoreAction.SCORED),
        ("NO_DATA_MEDIA_NOT_TAGGED", ScoreAction.TAG_THEN_RESCORE),
        ("NO_DATA_MEDIA_TAGGING_FAILURE", ScoreAction.RETAG_THEN_RESCORE),
        ("NO_DATA_SCORING_BACKLOG", ScoreAction.WAIT_AND_REFETCH),
        ("NO_DATA_NEW_CRITERIA", ScoreAction.RESCORE),
        ("NO_DATA_MISSING_REQUIRED_TAGS", ScoreAction.RESCORE),
        ("NO_DATA_ERROR_RETRIEVING_TAGS", ScoreAction.RESCORE),
        ("NO_DATA_MEDIA_DOWNLOAD_FAILURE", ScoreAction.NOT_FIXABLE),
        ("NO_DATA_MEDIA_RECOGNITION_FAIL", ScoreAction.NOT_FIXABLE),
        ("NO_DATA_MEDIA_PREDATES_MODEL", ScoreAction.NOT_FIXABLE),
        ("NO_DATA", ScoreAction.NOT_FIXABLE),
        ("no_data_scoring_backlog", ScoreAction.WAIT_AND_REFETCH),
    ],
)
def test_classify_result_says_what_to_do_next(result, action):
    assert classify_result(result) is action


def test_classify_result_refuses_a_value_it_does_not_know():
    with pytest.raises(ValueError, match="unknown guideline result"):
        classify_result("MAYBE")


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        ("facebook", "META"),
        ("INSTAGRAM", "META"),
        ("Twitter", "X"),
        ("google", "ADWORDS"),
        ("YouTube", "DV360"),
        ("amazon", "AMAZONADVERTISING"),
        ("amazonadvertisingdsp", "AMAZONADVERTISINGDSP"),
        (" tiktok ", "TIKTOK"),
        ("all_platforms", "ALL_PLATFORMS"),
        ("X", "X"),
    ],
)
def test_normalize_channel_resolves_aliases_case_insensitively(name, canonical):
    assert normalize_channel(name) == canonical


def test_normalize_channel_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown scoring channel"):
        normalize_channel("MYSPACE")
