"""The Vidmob API simulator, over real HTTP: what a client of it can rely on.

One simulator for the module with tiny timings; every test starts from ``POST /_sim/reset`` and the default
config, so tests are independent and the whole file runs in a few seconds.
"""

from __future__ import annotations

import csv
import io
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from simulator import SimulatorConfig, start_simulator
from simulator.tagging import derive_tags

KEY = "test-key-123"
FAST = 0.05
DEFAULT_CONFIG: dict[str, Any] = {
    "api_key": KEY,
    "pending_s": FAST,
    "processing_s": FAST,
    "scoring_s": FAST,
    "download_ttl_s": 300,
    "never_tagged": False,
    "processing_per_asset_s": 0,
    "processing_noise_sigma": 0,
    "hash_asset_sizes": False,
    "noise_seed": None,
}
CDN = "https://cdn.example.com"
TAG_DEPENDENT = {"Brand Name or Logo Early", "Human Early", "Audio Present"}


class Api:
    """A keep-alive session to the simulator with the bearer key set."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {KEY}"

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.session.get(self.url + path, timeout=5, **kwargs)

    def post(self, path: str, body: Any = None, **kwargs: Any) -> requests.Response:
        return self.session.post(self.url + path, json=body, timeout=5, **kwargs)

    def control(self, method: str, path: str, body: Any = None) -> Any:
        response = requests.request(method, self.url + path, json=body, timeout=5)
        assert response.status_code < 300, response.text
        return response.json()

    def stats(self) -> dict[str, Any]:
        return self.control("GET", "/_sim/stats")

    def config(self, **changes: Any) -> None:
        self.control("POST", "/_sim/config", changes)

    def fault(self, **fault: Any) -> None:
        self.control("POST", "/_sim/faults", fault)

    # -- flows
    def create_guide_job(self, urls: list[str], client_tags: list[dict[str, str]] | None = None) -> str:
        body: dict[str, Any] = {"assets": [{"url": u} for u in urls]}
        if client_tags is not None:
            body["clientTags"] = client_tags
        response = self.post("/v1/aperture/jobs", body)
        assert response.status_code == 200, response.text
        return response.json()["result"]["job_id"]

    def wait_guide_job(self, job_id: str) -> tuple[list[str], dict[str, Any]]:
        """Poll until terminal; return the distinct statuses seen, in order, and the last result."""
        return _poll(lambda: self.get(f"/v1/aperture/jobs/{job_id}/status"), {"COMPLETE", "FAILED"})

    def tag(self, urls: list[str]) -> None:
        _, result = self.wait_guide_job(self.create_guide_job(urls))
        assert result["status"] == "COMPLETE"

    def submit_media(self, media_id: str, url: str, **extra: Any) -> str:
        response = self.post("/v1/media", {"id": media_id, "url": url, **extra})
        assert response.status_code == 201, response.text
        return response.json()["result"]["uniqueId"]

    def wait_scored(self, unique_id: str) -> str:
        _, result = _poll(lambda: self.get(f"/v1/media/{unique_id}/status"), {"COMPLETE", "UNSUPPORTED", "FAILED"})
        return result["status"]

    def scores(self, unique_id: str, channel: str | None = None) -> dict[str, Any]:
        params = {"format": "detail", **({"channel": channel} if channel else {})}
        response = self.get(f"/v1/scoring/media/{unique_id}/scores", params=params)
        assert response.status_code == 200, response.text
        return response.json()["result"]

    def score_now(self, media_id: str, url: str, **extra: Any) -> dict[str, Any]:
        unique_id = self.submit_media(media_id, url, **extra)
        assert self.wait_scored(unique_id) == "COMPLETE"
        return self.scores(unique_id)


def _poll(fetch: Callable[[], requests.Response], terminal: set[str]) -> tuple[list[str], dict[str, Any]]:
    seen: list[str] = []
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        response = fetch()
        assert response.status_code == 200, response.text
        result = response.json()["result"]
        if not seen or seen[-1] != result["status"]:
            seen.append(result["status"])
        if result["status"] in terminal:
            return seen, result
        time.sleep(0.005)
    raise AssertionError(f"never reached {terminal}: {seen}")


def _results(scores: dict[str, Any], tag_dependent: bool) -> set[str]:
    return {d["result"] for d in scores["detail"] if (d["name"] in TAG_DEPENDENT) == tag_dependent}


def _error(response: requests.Response, status: int, error_type: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["status"] == "ERROR" and body["traceId"]
    assert body["error"]["type"] == error_type
    assert body["error"]["identifier"].startswith("vidmob.") and body["error"]["identifier"].endswith(
        error_type.lower()
    )
    assert body["error"]["system"]
    return body["error"]


@pytest.fixture(scope="module")
def sim() -> Iterator[Any]:
    handle = start_simulator(port=0, config=SimulatorConfig(**DEFAULT_CONFIG))
    yield handle
    handle.stop()


@pytest.fixture
def api(sim: Any) -> Iterator[Api]:
    client = Api(sim.url)
    client.control("POST", "/_sim/reset")
    client.config(**DEFAULT_CONFIG)
    yield client
    client.session.close()


# --------------------------------------------------------------------------- guide dialect
def test_guide_job_goes_pending_processing_complete_with_one_annotation_per_asset(api: Api) -> None:
    api.config(pending_s=0.1, processing_s=0.1)
    urls = [f"{CDN}/creative-a.mp4", f"{CDN}/creative-b.mp4"]
    response = api.post("/v1/aperture/jobs", {"assets": [{"url": u} for u in urls]})
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "OK" and set(body["result"]) == {"job_id"}
    seen, result = api.wait_guide_job(body["result"]["job_id"])
    assert seen == ["PENDING", "PROCESSING", "COMPLETE"]
    assert [a["url"] for a in result["annotations"]] == urls
    for annotation in result["annotations"]:
        categories = {t["category"] for t in annotation["tags"]}
        assert categories == {"visual", "people", "brand", "audio"}


def test_tags_are_a_pure_function_of_the_url(api: Api) -> None:
    url = f"{CDN}/same.mp4"
    _, first = api.wait_guide_job(api.create_guide_job([url, f"{CDN}/other.mp4"]))
    _, second = api.wait_guide_job(api.create_guide_job([url]))
    assert first["annotations"][0]["tags"] == second["annotations"][0]["tags"]
    assert first["annotations"][0]["tags"] != first["annotations"][1]["tags"]
    assert [(t["category"], t["label"]) for t in first["annotations"][0]["tags"]] == list(derive_tags(url))


def test_client_tags_come_back_when_a_keyword_matches_the_url_or_a_standard_tag(api: Api) -> None:
    url = f"{CDN}/summer-lifestyle.mp4"
    standard_word = derive_tags(url)[0][1].split()[0]  # a word of one of the asset's own tags
    client_tags = [
        {"label": "lifestyle", "description": "Assets featuring real-life settings or activities"},
        {"label": "xylophone-solo", "description": "Zebras playing xylophones"},
        {"label": "house-style", "description": f"Anything with {standard_word}"},
    ]
    _, result = api.wait_guide_job(api.create_guide_job([url], client_tags))
    client = [t["label"] for t in result["annotations"][0]["tags"] if t["category"] == "client"]
    assert client == ["lifestyle", "house-style"]


def test_a_url_containing_fail_ends_the_job_failed_without_annotations(api: Api) -> None:
    seen, result = api.wait_guide_job(api.create_guide_job([f"{CDN}/ok.mp4", f"{CDN}/will-fail.mp4"]))
    assert seen[-1] == "FAILED" and "annotations" not in result
    # the scoring rule markers that contain "fail" do not trip the tagging rule
    _, result = api.wait_guide_job(api.create_guide_job([f"{CDN}/sim-tagging-failure.mp4"]))
    assert result["status"] == "COMPLETE"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"assets": []}, "assets must contain at least 1 elements"),
        ({"assets": [{"url": f"{CDN}/a.mp4"}] * 201}, "assets must contain no more than 200 elements"),
        ({}, "assets must be an array"),
        ({"assets": [{"href": "x"}]}, "assets.0.url must be a string"),
        ({"assets": [{"url": "not a url"}]}, "assets.0.url must be a URL address"),
        ({"assets": [{"url": f"{CDN}/a.mp4"}], "clientTags": {"a": "b"}}, "clientTags must be an array"),
        ({"assets": [{"url": f"{CDN}/a.mp4"}], "clientTags": [{"description": "x"}]}, "clientTags.0.label"),
    ],
)
def test_invalid_guide_jobs_get_a_400_envelope_with_readable_messages(api: Api, body: Any, message: str) -> None:
    error = _error(api.post("/v1/aperture/jobs", body), 400, "BADREQUESTEXCEPTION")
    assert any(message in m for m in error["message"]), error
    assert api.stats()["jobs_created"] == 0


def test_a_body_that_is_not_json_is_a_400(api: Api) -> None:
    response = api.session.post(
        api.url + "/v1/aperture/jobs", data=b"{not json", headers={"Content-Type": "application/json"}, timeout=5
    )
    _error(response, 400, "BADREQUESTEXCEPTION")


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}])
def test_a_missing_or_wrong_key_gets_the_flat_401(sim: Any, api: Api, headers: dict[str, str]) -> None:
    for method, path in [("POST", "/v1/aperture/jobs"), ("GET", "/v1/media/x/status"), ("POST", "/v1/media")]:
        response = requests.request(method, sim.url + path, json={}, headers=headers, timeout=5)
        assert response.status_code == 401
        assert response.json() == {"statusCode": 401, "message": "Request is Unauthorized", "error": "Unauthorized"}
    assert api.stats()["unauthorized"] == 3


def test_the_key_can_be_rotated_live(api: Api) -> None:
    api.config(api_key="rotated")
    assert api.post("/v1/aperture/jobs", {"assets": [{"url": f"{CDN}/a.mp4"}]}).status_code == 401
    assert api.control("GET", "/_sim/config")["api_key"] == "***"


def test_unknown_jobs_media_and_routes_are_404(api: Api) -> None:
    error = _error(api.get("/v1/aperture/jobs/nope/status"), 404, "NOTFOUNDEXCEPTION")
    assert "nope" in error["message"]
    _error(api.get("/v1/media/aperture/nope"), 404, "NOTFOUNDEXCEPTION")
    _error(api.get("/v1/media/nope/status"), 404, "NOTFOUNDEXCEPTION")
    _error(api.get("/v1/scoring/media/nope/scores"), 404, "NOTFOUNDEXCEPTION")
    # a guide job is not visible through the media dialect
    job_id = api.create_guide_job([f"{CDN}/a.mp4"])
    _error(api.get(f"/v1/media/aperture/{job_id}"), 404, "NOTFOUNDEXCEPTION")
    response = api.get("/v2/whatever")
    assert response.status_code == 404 and response.json()["statusCode"] == 404


# --------------------------------------------------------------------------- faults and stats
def test_an_injected_500_fails_once_and_creates_no_job(api: Api) -> None:
    api.fault(method="POST", path="/v1/aperture/jobs", status=500, times=1)
    body = {"assets": [{"url": f"{CDN}/a.mp4"}]}
    failed = api.post("/v1/aperture/jobs", body)
    assert failed.status_code == 500 and failed.json()["statusCode"] == 500
    assert api.stats()["jobs_created"] == 0
    assert api.post("/v1/aperture/jobs", body).status_code == 200
    stats = api.stats()
    assert stats["jobs_created"] == 1
    assert stats["requests"]["POST /v1/aperture/jobs"] == 2  # the faulted one counts too
    assert stats["faults_injected"] == 1 and stats["faults_armed"] == 0


def test_an_injected_429_carries_retry_after_and_matches_the_path_template(api: Api) -> None:
    job_id = api.create_guide_job([f"{CDN}/a.mp4"])
    api.fault(method="GET", path="/v1/aperture/jobs/{job_id}/status", status=429, times=2, retry_after=3)
    for _ in range(2):
        response = api.get(f"/v1/aperture/jobs/{job_id}/status")
        assert response.status_code == 429 and response.headers["Retry-After"] == "3"
    assert api.get(f"/v1/aperture/jobs/{job_id}/status").status_code == 200
    assert api.stats()["requests"]["GET /v1/aperture/jobs/{job_id}/status"] == 3


def test_a_garbage_body_is_a_200_that_is_not_json(api: Api) -> None:
    api.fault(method="POST", path="/v1/aperture/jobs", body="garbage")
    response = api.post("/v1/aperture/jobs", {"assets": [{"url": f"{CDN}/a.mp4"}]})
    assert response.status_code == 200
    with pytest.raises(ValueError):
        response.json()
    assert api.stats()["jobs_created"] == 0


def test_a_delay_fault_makes_a_client_time_out_then_answers_normally(api: Api) -> None:
    job_id = api.create_guide_job([f"{CDN}/a.mp4"])
    api.fault(method="GET", path="/v1/aperture/jobs/{job_id}/status", delay_s=0.3)
    with pytest.raises(requests.Timeout):
        api.session.get(f"{api.url}/v1/aperture/jobs/{job_id}/status", timeout=0.1)
    assert api.get(f"/v1/aperture/jobs/{job_id}/status").status_code == 200


def test_faults_can_be_listed_and_cleared(api: Api) -> None:
    api.fault(method="POST", path="/v1/media", status=503, times=-1)
    assert api.control("GET", "/_sim/faults")["faults"][0]["status"] == 503
    assert api.post("/v1/media", {"id": "a", "url": f"{CDN}/a.mp4"}).status_code == 503
    assert api.post("/v1/media", {"id": "a", "url": f"{CDN}/a.mp4"}).status_code == 503
    assert api.control("DELETE", "/_sim/faults") == {"cleared": 1}
    assert api.post("/v1/media", {"id": "a", "url": f"{CDN}/a.mp4"}).status_code == 201


def test_stats_count_jobs_per_dialect_requests_and_polls_and_reset_clears_them(api: Api) -> None:
    job_id = api.create_guide_job([f"{CDN}/a.mp4", f"{CDN}/a2.mp4"])
    api.post("/v1/media/aperture", {"creatives": [{"id": "c", "url": f"{CDN}/b.mp4"}], "clientTags": {}})
    for _ in range(3):
        api.get(f"/v1/aperture/jobs/{job_id}/status")
    stats = api.stats()
    assert stats["jobs_created"] == 2 and stats["jobs_created_by_dialect"] == {"guide": 1, "media": 1}
    assert stats["assets_created"] == 3
    assert stats["job_polls"][job_id] == 3 and stats["status_polls"] == 3
    assert stats["requests"]["POST /v1/media/aperture"] == 1
    record = api.control("GET", f"/_sim/jobs/{job_id}")
    assert record["dialect"] == "guide" and record["urls"] == [f"{CDN}/a.mp4", f"{CDN}/a2.mp4"] and record["polls"] == 3
    api.control("POST", "/_sim/reset")
    assert api.stats()["jobs_created"] == 0 and api.stats()["assets_created"] == 0
    _error(api.get(f"/v1/aperture/jobs/{job_id}/status"), 404, "NOTFOUNDEXCEPTION")


def test_by_default_every_job_processes_for_exactly_processing_s(api: Api) -> None:
    api.config(processing_s=7.0)
    small = api.create_guide_job([f"{CDN}/one.mp4"])
    large = api.create_guide_job([f"{CDN}/clip-{i}.mp4" for i in range(200)])
    assert [api.control("GET", f"/_sim/jobs/{j}")["processing_s"] for j in (small, large)] == [7.0, 7.0]


def test_processing_grows_with_the_assets_and_their_size_from_the_url(api: Api) -> None:
    # given 2 min per job plus 30 s per average asset, no noise
    api.config(processing_s=120, processing_per_asset_s=30)
    jobs = {
        "one asset": api.create_guide_job([f"{CDN}/a.mp4"]),
        "ten assets": api.create_guide_job([f"{CDN}/a-{i}.mp4" for i in range(10)]),
        "a 3x asset": api.create_guide_job([f"{CDN}/long.mp4?sim_size=3"]),
    }
    seconds = {name: api.control("GET", f"/_sim/jobs/{j}")["processing_s"] for name, j in jobs.items()}
    assert seconds == {"one asset": 150.0, "ten assets": 420.0, "a 3x asset": 210.0}
    # and a size drawn from the URL's hash is the same for the same URL, between 0.5 and 2
    api.config(hash_asset_sizes=True)
    first, again = (api.create_guide_job([f"{CDN}/hashed.mp4"]) for _ in range(2))
    hashed = [api.control("GET", f"/_sim/jobs/{j}")["processing_s"] for j in (first, again)]
    assert hashed[0] == hashed[1] and 120 + 15 <= hashed[0] <= 120 + 60


def test_log_normal_noise_is_reproducible_with_a_seed_and_centred_on_the_median(api: Api) -> None:
    api.config(processing_s=100, processing_noise_sigma=0.5, noise_seed=7)
    runs = []
    for _ in range(2):
        api.config(noise_seed=7)  # setting the seed again restarts the noise
        jobs = [api.create_guide_job([f"{CDN}/n-{i}.mp4"]) for i in range(200)]
        runs.append([api.control("GET", f"/_sim/jobs/{j}")["processing_s"] for j in jobs])
    assert runs[0] == runs[1]  # the same seed, the same durations
    ordered = sorted(runs[0])
    median = (ordered[99] + ordered[100]) / 2
    assert 80 < median < 125 and ordered[0] < 60 and ordered[-1] > 160  # spread: sigma 0.5


def test_the_workload_settings_are_validated(api: Api) -> None:
    response = requests.post(
        api.url + "/_sim/config", json={"processing_noise_sigma": -1, "noise_seed": "x"}, timeout=5
    )
    assert response.status_code == 400
    assert "processing_noise_sigma must be a non-negative number" in response.text
    assert "noise_seed must be an integer or null" in response.text


# --------------------------------------------------------------------------- media dialect
def _media_job(api: Api, creatives: list[dict[str, str]], client_tags: dict[str, str] | None = None) -> str:
    response = api.post("/v1/media/aperture", {"creatives": creatives, "clientTags": client_tags or {}})
    assert response.status_code == 200, response.text
    result = response.json()["result"]
    assert result["status"] == "QUEUED" and result["creativeIdentifiers"] == [c["id"] for c in creatives]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", result["date_created"])
    return result["job_id"]


def test_media_job_is_queued_processing_completed_with_signed_downloads(sim: Any, api: Api) -> None:
    api.config(pending_s=0.1, processing_s=0.2)
    creatives = [{"id": f"c{i}", "url": f"{CDN}/m{i}.mp4"} for i in range(4)]
    client_tags = {"brand": "Example brand colors", "zzz": "qqq"}
    job_id = _media_job(api, creatives, client_tags)
    messages: list[str] = []

    def fetch() -> requests.Response:
        response = api.get(f"/v1/media/aperture/{job_id}")
        if response.json()["result"]["status"] == "PROCESSING":
            messages.append(response.json()["result"]["message"])
        return response

    seen, result = _poll(fetch, {"COMPLETED", "FAILED"})
    assert seen == ["QUEUED", "PROCESSING", "COMPLETED"]
    assert re.fullmatch(r"Job is in progress\. Processed [0-3] out of 4 media\.", messages[0])
    assert result["clientTags"] == client_tags and result["date_updated"]
    # the links need no key
    downloaded = requests.get(result["download_url_json"], timeout=5)
    assert downloaded.status_code == 200
    payload = downloaded.json()
    assert payload["job_id"] == job_id
    assert [(c["id"], c["url"]) for c in payload["creatives"]] == [(c["id"], c["url"]) for c in creatives]
    _, guide = api.wait_guide_job(
        api.create_guide_job([creatives[0]["url"]], [{"label": k, "description": v} for k, v in client_tags.items()])
    )
    assert payload["creatives"][0]["tags"] == guide["annotations"][0]["tags"]
    assert {"category": "client", "label": "zzz"} not in payload["creatives"][0]["tags"]
    rows = list(csv.reader(io.StringIO(requests.get(result["download_url_csv"], timeout=5).text)))
    assert rows[0] == ["creative_id", "url", "category", "label"]
    assert len(rows) - 1 == sum(len(c["tags"]) for c in payload["creatives"])


def test_download_links_expire_and_refuse_a_bad_signature(api: Api) -> None:
    api.config(download_ttl_s=0.5)
    job_id = _media_job(api, [{"id": "c", "url": f"{CDN}/a.mp4"}])
    _, result = _poll(lambda: api.get(f"/v1/media/aperture/{job_id}"), {"COMPLETED"})
    link = result["download_url_json"]
    assert requests.get(link, timeout=5).status_code == 200
    tampered = re.sub(r"sig=[0-9a-f]+", "sig=" + "0" * 64, link)
    refused = requests.get(tampered, timeout=5)
    assert refused.status_code == 403 and "SignatureDoesNotMatch" in refused.text
    longer = re.sub(r"expires=(\d+)", lambda m: f"expires={int(m.group(1)) + 10**6}", link)
    assert requests.get(longer, timeout=5).status_code == 403
    time.sleep(0.55)
    expired = requests.get(link, timeout=5)
    assert expired.status_code == 403 and "expired" in expired.text
    assert api.stats()["downloads_refused"] == 3


def test_media_job_with_a_failing_url_reports_errors_by_creative(api: Api) -> None:
    job_id = _media_job(api, [{"id": "good", "url": f"{CDN}/a.mp4"}, {"id": "bad", "url": f"{CDN}/fail.mp4"}])
    _, result = _poll(lambda: api.get(f"/v1/media/aperture/{job_id}"), {"COMPLETED", "FAILED"})
    assert result["status"] == "FAILED"
    assert list(result["errors"]) == ["bad"] and "download_url_json" not in result


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"creatives": [], "clientTags": {}}, "creatives must contain at least 1 elements"),
        (
            {"creatives": [{"id": str(i), "url": f"{CDN}/{i}.mp4"} for i in range(201)], "clientTags": {}},
            "creatives must contain no more than 200 elements",
        ),
        ({"creatives": [{"id": "a", "url": f"{CDN}/a.mp4"}], "clientTags": ["x"]}, "clientTags must be an object"),
        ({"creatives": [{"id": "a", "url": f"{CDN}/a.mp4"}]}, "clientTags must be an object"),
        (
            {"creatives": [{"id": "a", "url": f"{CDN}/a.mp4"}], "clientTags": {f"k{i}": "v" for i in range(11)}},
            "clientTags must contain no more than 10 keys",
        ),
    ],
    ids=["empty", "201", "not-object", "missing-tags", "11-tags"],
)
def test_invalid_media_jobs_get_the_documented_messages(api: Api, body: Any, message: str) -> None:
    error = _error(api.post("/v1/media/aperture", body), 400, "BADREQUESTEXCEPTION")
    assert error["identifier"] == "vidmob.api-bff.badrequestexception" and error["system"] == "api-bff"
    assert message in error["message"]
    assert api.stats()["jobs_created"] == 0


def test_ten_client_tags_and_two_hundred_creatives_are_accepted(api: Api) -> None:
    creatives = [{"id": str(i), "url": f"{CDN}/{i}.mp4"} for i in range(200)]
    _media_job(api, creatives, {f"k{i}": "v" for i in range(10)})


# --------------------------------------------------------------------------- scoring
def test_scoring_is_causal_not_tagged_first_then_pass_fail_after_tagging(api: Api) -> None:
    url = f"{CDN}/causal.mp4"
    first_round = api.submit_media("causal", url, version="1", channels=["TIKTOK"])
    api.wait_scored(first_round)
    before = api.scores(first_round)
    assert _results(before, tag_dependent=True) == {"NO_DATA_MEDIA_NOT_TAGGED"}
    assert _results(before, tag_dependent=False) <= {"PASS", "FAIL", "NOT_APPLICABLE"}
    assert before["summary"]["TIKTOK"]["notAvailableCount"] == 3
    assert before["media"] == {**before["media"], "id": "causal", "version": "1", "url": url}
    # tagging through the media dialect counts as well as the guide dialect
    job_id = _media_job(api, [{"id": "x", "url": url}])
    _poll(lambda: api.get(f"/v1/media/aperture/{job_id}"), {"COMPLETED"})
    after = api.score_now("causal", url, version="2", channels=["TIKTOK"])
    labels = {label for _, label in derive_tags(url)}
    expected = {
        "Brand Name or Logo Early": "PASS" if "logo visible" in labels else "FAIL",
        "Human Early": "PASS" if "human presence" in labels else "FAIL",
        "Audio Present": "PASS" if labels & {"music presence", "voiceover"} else "FAIL",
    }
    assert {d["name"]: d["result"] for d in after["detail"] if d["name"] in TAG_DEPENDENT} == expected
    summary = after["summary"]["TIKTOK"]
    assert summary["notAvailableCount"] == 0
    assert summary["applicableCount"] == summary["passCount"] + summary["failCount"]
    assert summary["adherencePercent"] == round(summary["passCount"] / summary["applicableCount"], 4)
    # the first round is a completed score: tagging afterwards does not change it retroactively
    assert _results(api.scores(first_round), tag_dependent=True) == {"NO_DATA_MEDIA_NOT_TAGGED"}


def test_same_id_and_version_is_a_409_and_a_new_version_is_accepted(api: Api) -> None:
    first = api.submit_media("dup", f"{CDN}/dup.mp4", version="1")
    error = _error(
        api.post("/v1/media", {"id": "dup", "url": f"{CDN}/dup.mp4", "version": "1"}), 409, "CONFLICTEXCEPTION"
    )
    assert error["identifier"] == "vidmob.api-bff.conflictexception" and "dup" in error["message"]
    second = api.submit_media("dup", f"{CDN}/dup.mp4", version="2")
    assert second != first
    # the caller's own id (+ version) also addresses the media
    status = api.get("/v1/media/dup/status", params={"version": "1"}).json()["result"]
    assert status["uniqueId"] == first and status["version"] == "1"


def test_invalid_media_submissions_are_400(api: Api) -> None:
    assert (
        "id should not be empty"
        in _error(api.post("/v1/media", {"url": f"{CDN}/a.mp4"}), 400, "BADREQUESTEXCEPTION")["message"]
    )
    assert (
        "url should not be empty" in _error(api.post("/v1/media", {"id": "a"}), 400, "BADREQUESTEXCEPTION")["message"]
    )
    error = _error(
        api.post("/v1/media", {"id": "a", "url": f"{CDN}/a.mp4", "channels": ["myspace"]}), 400, "BADREQUESTEXCEPTION"
    )
    assert "myspace" in error["message"][0]


def test_scores_before_completion_are_refused(api: Api) -> None:
    api.config(scoring_s=5)
    unique_id = api.submit_media("slow", f"{CDN}/slow.mp4")
    assert api.get(f"/v1/media/{unique_id}/status").json()["result"]["status"] == "PROCESSING"
    error = _error(api.get(f"/v1/scoring/media/{unique_id}/scores"), 400, "BADREQUESTEXCEPTION")
    assert "PROCESSING" in error["message"]


@pytest.mark.parametrize(("marker", "status"), [("sim-unsupported", "UNSUPPORTED"), ("sim-scoring-failed", "FAILED")])
def test_terminal_scoring_statuses_come_from_the_url(api: Api, marker: str, status: str) -> None:
    unique_id = api.submit_media(marker, f"{CDN}/{marker}.mp4")
    assert api.wait_scored(unique_id) == status


def test_sim_scoring_error_answers_error_on_the_first_status_read_only(api: Api) -> None:
    api.config(scoring_s=0)
    unique_id = api.submit_media("err", f"{CDN}/sim-scoring-error.mp4")
    assert api.get(f"/v1/media/{unique_id}/status").json()["result"]["status"] == "ERROR"
    assert api.get(f"/v1/media/{unique_id}/status").json()["result"]["status"] == "COMPLETE"


@pytest.mark.parametrize(
    ("marker", "code"),
    [
        ("sim-new-criteria", "NO_DATA_NEW_CRITERIA"),
        ("sim-missing-required-tags", "NO_DATA_MISSING_REQUIRED_TAGS"),
        ("sim-error-retrieving-tags", "NO_DATA_ERROR_RETRIEVING_TAGS"),
    ],
)
def test_rescore_codes_appear_on_the_first_round_only(api: Api, marker: str, code: str) -> None:
    url = f"{CDN}/{marker}.mp4"
    api.tag([url])
    assert _results(api.score_now(marker, url, version="1"), tag_dependent=True) == {code}
    assert _results(api.score_now(marker, url, version="2"), tag_dependent=True) <= {"PASS", "FAIL"}


def test_scoring_backlog_on_the_first_scores_read_then_normal(api: Api) -> None:
    url = f"{CDN}/sim-scoring-backlog.mp4"
    api.tag([url])
    unique_id = api.submit_media("backlog", url)
    api.wait_scored(unique_id)
    first = api.scores(unique_id)
    assert {d["result"] for d in first["detail"]} == {"NO_DATA_SCORING_BACKLOG"}
    assert _results(api.scores(unique_id), tag_dependent=True) <= {"PASS", "FAIL"}


def test_tagging_failure_until_the_url_is_tagged_again(api: Api) -> None:
    url = f"{CDN}/sim-tagging-failure.mp4"
    api.tag([url])
    unique_id = api.submit_media("tf", url)
    api.wait_scored(unique_id)
    assert _results(api.scores(unique_id), tag_dependent=True) == {"NO_DATA_MEDIA_TAGGING_FAILURE"}
    api.tag([url])
    # tagged again after that round: the same round now reads normally (it was tagged before it was scored)
    assert _results(api.scores(unique_id), tag_dependent=True) <= {"PASS", "FAIL"}
    assert _results(api.score_now("tf", url, version="2"), tag_dependent=True) <= {"PASS", "FAIL"}


def test_download_failure_is_permanent(api: Api) -> None:
    url = f"{CDN}/sim-download-failure.mp4"
    api.tag([url])
    for version in ("1", "2"):
        scores = api.score_now("dl", url, version=version)
        assert {d["result"] for d in scores["detail"]} == {"NO_DATA_MEDIA_DOWNLOAD_FAILURE"}


def test_never_tagged_by_url_and_by_config_flag(api: Api) -> None:
    url = f"{CDN}/sim-never-tagged.mp4"
    api.tag([url])
    for version in ("1", "2"):
        scores = api.score_now("nt", url, version=version)
        assert _results(scores, tag_dependent=True) == {"NO_DATA_MEDIA_NOT_TAGGED"}
    plain = f"{CDN}/plain.mp4"
    api.tag([plain])
    api.config(never_tagged=True)
    assert _results(api.score_now("flag", plain), tag_dependent=True) == {"NO_DATA_MEDIA_NOT_TAGGED"}
    api.config(never_tagged=False)
    assert _results(api.score_now("flag", plain, version="2"), tag_dependent=True) <= {"PASS", "FAIL"}


def test_channels_are_case_insensitive_with_aliases(api: Api) -> None:
    scores = api.score_now("ch", f"{CDN}/ch.mp4", channels=["facebook", "YouTube", "tiktok", "Instagram"])
    assert list(scores["summary"]) == ["META", "DV360", "TIKTOK"]
    assert {d["channelIdentifier"] for d in scores["detail"]} == {"META", "DV360", "TIKTOK"}
    unique_id = api.submit_media("ch2", f"{CDN}/ch2.mp4")
    api.wait_scored(unique_id)
    assert list(api.scores(unique_id, channel="twitter,GOOGLE,amazon")["summary"]) == [
        "X",
        "ADWORDS",
        "AMAZONADVERTISING",
    ]
    _error(
        api.get(f"/v1/scoring/media/{unique_id}/scores", params={"channel": "friendster"}), 400, "BADREQUESTEXCEPTION"
    )
    summary_only = api.get(f"/v1/scoring/media/{unique_id}/scores").json()["result"]
    assert "detail" not in summary_only and list(summary_only["summary"]) == ["ALL_PLATFORMS"]


def test_updated_scores_are_paged_by_offset(api: Api) -> None:
    api.config(scoring_s=0)
    ids = [api.submit_media(f"p{i}", f"{CDN}/p{i}.mp4", workspaceId=7) for i in range(5)]
    api.submit_media("elsewhere", f"{CDN}/e.mp4", workspaceId=8)
    pages = []
    offset = 0
    while True:
        response = api.get("/v1/media/updated-scores", params={"workspaceId": 7, "offset": offset, "perPage": 2})
        assert response.status_code == 200
        body = response.json()
        pages.append([item["uniqueId"] for item in body["result"]])
        pagination = body["pagination"]
        assert pagination["totalSize"] == 5 and pagination["perPage"] == 2 and pagination["offset"] == offset
        assert pagination["nextOffset"] == offset + 2
        if pagination["nextOffset"] >= pagination["totalSize"]:
            break
        offset = pagination["nextOffset"]
    assert [len(p) for p in pages] == [2, 2, 1]
    assert [i for p in pages for i in p] == ids
    future = api.get("/v1/media/updated-scores", params={"workspaceId": 7, "updatedSince": "2999-01-01T00:00:00Z"})
    assert future.json()["result"] == [] and future.json()["pagination"]["totalSize"] == 0
    _error(api.get("/v1/media/updated-scores", params={"workspaceId": 7, "perPage": 101}), 400, "BADREQUESTEXCEPTION")
    _error(api.get("/v1/media/updated-scores"), 400, "BADREQUESTEXCEPTION")


def test_a_handle_can_be_started_and_stopped_twice(api: Api) -> None:
    handle = start_simulator()
    assert requests.get(handle.url + "/_sim/stats", timeout=5).json()["jobs_created"] == 0
    assert handle.port > 0 and handle.url.endswith(str(handle.port))
    handle.stop()
    handle.stop()
    with pytest.raises(requests.ConnectionError):
        requests.get(handle.url + "/_sim/stats", timeout=1)
