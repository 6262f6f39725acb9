"""All mutable simulator state, behind one lock, and the business logic of every endpoint.

Why lazy: a job's state is a pure function of its creation time and the timings snapshotted into it
(``TagJob.state``), so no thread or timer exists per job and the simulator holds thousands of them at no cost.
The same goes for "which URLs have been tagged": a job's completion time and outcome are known when it is
created, so the job registers its future completion time per URL at once, and "was this URL tagged at time t"
is a bisect in a sorted list of completion times, checked only when scoring asks.

Scoring rules (``MediaSubmission`` + ``SimState.media_scores``), by precedence:

1. URL contains ``sim-download-failure``: every guideline is ``NO_DATA_MEDIA_DOWNLOAD_FAILURE``, every round.
2. First round of a media id only (its first ``POST /v1/media``; later versions are normal):
   ``sim-scoring-backlog``: every guideline is ``NO_DATA_SCORING_BACKLOG`` on the first scores GET of that
   submission, then normal.
3. ``config.never_tagged`` or URL contains ``sim-never-tagged``: tag-dependent guidelines are
   ``NO_DATA_MEDIA_NOT_TAGGED`` forever, even after tagging.
4. First round only, on tag-dependent guidelines: ``sim-new-criteria`` -> ``NO_DATA_NEW_CRITERIA``,
   ``sim-missing-required-tags`` -> ``NO_DATA_MISSING_REQUIRED_TAGS``, ``sim-error-retrieving-tags`` ->
   ``NO_DATA_ERROR_RETRIEVING_TAGS``, ``sim-tagging-failure`` -> ``NO_DATA_MEDIA_TAGGING_FAILURE`` until a tagging
   job containing the URL completes after that submission was made (then rule 5 applies).
5. Causal rule: tag-dependent guidelines are PASS/FAIL (from the URL's tags) if a tagging job of either dialect
   containing the URL had COMPLETEd at or before the submission's scoring completion time
   (``created_at + scoring_s``), else ``NO_DATA_MEDIA_NOT_TAGGED``. A completed score therefore never changes
   later: tag, then submit a new version to rescore.

Status rules (``GET /v1/media/{mediaId}/status``): PROCESSING for ``scoring_s``, then COMPLETE, except URL
``sim-unsupported`` -> UNSUPPORTED and ``sim-scoring-failed`` -> FAILED (both after ``scoring_s``), and
``sim-scoring-error`` -> ERROR on the first status read of each submission, normal afterwards.
"""

from __future__ import annotations

import bisect
import random
import secrets
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from simulator import downloads, scoring, tagging, workload
from simulator.config import SimulatorConfig
from simulator.errors import SYSTEM_APERTURE, SYSTEM_BFF, SYSTEM_SCORING, ApiError
from simulator.scoring import MediaFields
from simulator.tagging import ClientTag
from simulator.traffic import Traffic

PENDING = "PENDING"
PROCESSING = "PROCESSING"
COMPLETE = "COMPLETE"
FAILED = "FAILED"

# How the media dialect spells the shared internal states.
_MEDIA_STATUS = {PENDING: "QUEUED", PROCESSING: "PROCESSING", COMPLETE: "COMPLETED", FAILED: "FAILED"}

MAX_PER_PAGE = 100
DEFAULT_PER_PAGE = 10


def iso(ts: float, millis: bool = False) -> str:
    moment = datetime.fromtimestamp(ts, tz=UTC)
    if millis:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class TagJob:
    """A tagging job of either dialect. Immutable after creation except for ``polls``."""

    job_id: str
    dialect: str  # "guide" | "media"
    urls: list[str]
    creative_ids: list[str]  # media dialect only
    client_tags: tuple[ClientTag, ...]
    raw_client_tags: Any  # echoed back as submitted
    created_at: float
    pending_s: float
    processing_s: float
    failed: bool
    polls: int = 0
    _tags: list[list[dict[str, str]]] | None = field(default=None, repr=False)

    @property
    def processing_at(self) -> float:
        return self.created_at + self.pending_s

    @property
    def done_at(self) -> float:
        return self.processing_at + self.processing_s

    def state(self, now: float) -> str:
        if now < self.processing_at:
            return PENDING
        if now < self.done_at:
            return PROCESSING
        return FAILED if self.failed else COMPLETE

    def tags(self) -> list[list[dict[str, str]]]:
        """Per-asset tag lists, computed once (a benign race may compute them twice; the result is the same)."""
        if self._tags is None:
            self._tags = [tagging.annotate(url, self.client_tags) for url in self.urls]
        return self._tags

    def record(self, now: float) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "dialect": self.dialect,
            "urls": list(self.urls),
            "creative_ids": list(self.creative_ids),
            "client_tags": self.raw_client_tags,
            "created_at": self.created_at,
            "date_created": iso(self.created_at),
            "pending_s": self.pending_s,
            "processing_s": self.processing_s,
            "processing_at": self.processing_at,
            "done_at": self.done_at,
            "will_fail": self.failed,
            "state": self.state(now),
            "polls": self.polls,
        }


@dataclass
class MediaSubmission:
    """One ``POST /v1/media`` (a scoring round)."""

    unique_id: str
    fields: MediaFields
    created_at: float
    scoring_s: float
    round: int  # 1 for the first submission of this media id, 2 for the next version, ...
    status_reads: int = 0
    score_reads: int = 0

    @property
    def url(self) -> str:
        return self.fields.url

    @property
    def complete_at(self) -> float:
        return self.created_at + self.scoring_s

    def final_status(self) -> str:
        if "sim-unsupported" in self.url:
            return "UNSUPPORTED"
        if "sim-scoring-failed" in self.url:
            return "FAILED"
        return COMPLETE

    def status(self, now: float) -> str:
        return PROCESSING if now < self.complete_at else self.final_status()

    def media_block(self) -> dict[str, Any]:
        f = self.fields
        return {
            "uniqueId": self.unique_id,
            "id": f.media_id,
            "version": f.version,
            "source": f.source,
            "name": f.name,
            "url": f.url,
            "dateUploaded": iso(self.created_at),
            "type": "IMAGE" if scoring.is_image_url(f.url) else "VIDEO",
        }

    def record(self, now: float) -> dict[str, Any]:
        f = self.fields
        return {
            "uniqueId": self.unique_id,
            "id": f.media_id,
            "version": f.version,
            "source": f.source,
            "url": f.url,
            "channels": f.channels,
            "workspaceId": f.workspace_id,
            "round": self.round,
            "created_at": self.created_at,
            "complete_at": self.complete_at,
            "status": self.status(now),
            "status_reads": self.status_reads,
            "score_reads": self.score_reads,
        }


@dataclass
class Fault:
    """An injected failure for the next ``times`` requests matching method + path template (-1 = forever)."""

    method: str
    path: str
    status: int | None
    times: int
    retry_after: float | None
    body: Any
    delay_s: float
    hits: int = 0

    def matches(self, method: str, template: str, path: str) -> bool:
        return self.method in ("*", method) and self.path in (template, path)

    def exhausted(self) -> bool:
        return self.times >= 0 and self.hits >= self.times

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": self.path,
            "status": self.status,
            "times": self.times,
            "retry_after": self.retry_after,
            "body": self.body,
            "delay_s": self.delay_s,
            "hits": self.hits,
        }


def parse_fault(body: Any) -> tuple[Fault | None, list[str]]:
    """Validate a ``POST /_sim/faults`` body (see ``server`` for the semantics of each field)."""
    if not isinstance(body, dict):
        return None, ["fault must be a JSON object"]
    errors: list[str] = []
    method = body.get("method", "*")
    path = body.get("path")
    status = body.get("status")
    times = body.get("times", 1)
    retry_after = body.get("retry_after")
    delay_s = body.get("delay_s") or 0
    payload = body.get("body")
    if not isinstance(method, str) or not method:
        errors.append("method must be a string")
    if not isinstance(path, str) or not path.startswith("/"):
        errors.append("path must be a path template such as /v1/aperture/jobs/{job_id}/status")
    if status is not None and (isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599):
        errors.append("status must be an HTTP status code")
    if times is None:
        times = 1
    if isinstance(times, bool) or not isinstance(times, int) or times == 0 or times < -1:
        errors.append("times must be a positive integer, or -1 for every matching request")
    if retry_after is not None and (isinstance(retry_after, bool) or not isinstance(retry_after, int | float)):
        errors.append("retry_after must be a number of seconds")
    if isinstance(delay_s, bool) or not isinstance(delay_s, int | float) or delay_s < 0:
        errors.append("delay_s must be a non-negative number")
    if errors:
        return None, errors
    assert isinstance(path, str)  # checked above
    if status is None and payload is None and not delay_s:
        status = 500
    return Fault(method.upper(), path, status, times, retry_after, payload, float(delay_s)), []


class SimState:
    """Everything the simulator remembers. Public methods take the lock; ``clock`` is injectable for tests."""

    def __init__(self, config: SimulatorConfig | None = None, clock: Callable[[], float] = time.time) -> None:
        self.config = config or SimulatorConfig()
        self.clock = clock
        self.lock = threading.Lock()
        self.signer = downloads.DownloadSigner(secrets.token_bytes(32))
        self._clear()

    # ----------------------------------------------------------------- bookkeeping
    def _clear(self) -> None:
        self.jobs: dict[str, TagJob] = {}
        self.media: dict[str, MediaSubmission] = {}
        self.media_keys: dict[tuple[str, str | None, str | None], str] = {}
        self.media_by_external_id: dict[str, list[str]] = {}
        self.tagged_at: dict[str, list[float]] = {}
        self.faults: list[Fault] = []
        self.requests: Counter[str] = Counter()
        self.responses: Counter[str] = Counter()
        self.counters: Counter[str] = Counter()
        self.jobs_by_dialect: Counter[str] = Counter()
        self.traffic = Traffic(self.config.stats_keep_s)
        self.started_at = self.clock()
        self._noise = random.Random(self.config.noise_seed)

    def reset(self) -> None:
        with self.lock:
            self._clear()

    def begin_request(self, method: str, template: str, path: str, faultable: bool = True) -> Fault | None:
        """Count the request and take the first armed fault that matches it (if any)."""
        with self.lock:
            self.requests[f"{method} {template}"] += 1
            self.counters["requests_total"] += 1
            if template.startswith("/v1/"):
                self.traffic.arrived(f"{method} {template}", self.clock())
            if not faultable or not self.faults:
                return None
            for fault in self.faults:
                if fault.matches(method, template, path):
                    fault.hits += 1
                    self.counters["faults_injected"] += 1
                    if fault.exhausted():
                        self.faults.remove(fault)
                    return fault
            return None

    def admit(self, method: str, template: str) -> float | None:
        """None when the optional rate limit lets the request through, else its Retry-After."""
        with self.lock:
            return self.traffic.admit(f"{method} {template}", self.clock(), self.config.rate_limit_per_s)

    def end_request(self, status: int) -> None:
        with self.lock:
            self.responses[str(status)] += 1
            if status == 401:
                self.counters["unauthorized"] += 1

    def add_fault(self, body: Any) -> dict[str, Any]:
        fault, errors = parse_fault(body)
        if fault is None:
            raise ApiError(400, errors, system="simulator")
        with self.lock:
            self.faults.append(fault)
        return fault.to_dict()

    def clear_faults(self) -> int:
        with self.lock:
            count = len(self.faults)
            self.faults.clear()
            return count

    def list_faults(self) -> list[dict[str, Any]]:
        with self.lock:
            return [f.to_dict() for f in self.faults]

    def update_config(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise ApiError(400, ["config must be a JSON object"], system="simulator")
        with self.lock:
            errors = self.config.update(body)
            if errors:
                raise ApiError(400, errors, system="simulator")
            if "noise_seed" in body:
                # Setting a seed (even the same one) restarts the noise: a run can be repeated exactly.
                self._noise = random.Random(self.config.noise_seed)
            return self.config.public_dict()

    def config_dict(self) -> dict[str, Any]:
        with self.lock:
            return self.config.public_dict()

    # ----------------------------------------------------------------- tagging
    def _register_job(self, job: TagJob) -> None:
        self.jobs[job.job_id] = job
        self.jobs_by_dialect[job.dialect] += 1
        self.counters["jobs_created"] += 1
        self.counters["assets_created"] += len(job.urls)
        if not job.failed:
            for url in set(job.urls):
                bisect.insort(self.tagged_at.setdefault(url, []), job.done_at)

    def _tagged_by(self, url: str, moment: float) -> bool:
        times = self.tagged_at.get(url)
        if not times:
            return False
        return times[0] <= moment

    def _tagged_between(self, url: str, after: float, until: float) -> bool:
        times = self.tagged_at.get(url)
        if not times:
            return False
        index = bisect.bisect_right(times, after)
        return index < len(times) and times[index] <= until

    def _processing_s(self, urls: list[str]) -> float:
        """This job's PROCESSING time (simulator/workload.py)."""
        return workload.processing_seconds(urls, self.config, self._noise)

    def create_guide_job(self, body: Any) -> dict[str, Any]:
        urls, client_tags, errors = tagging.parse_guide_job(body)
        if errors:
            raise ApiError(400, errors)
        raw_tags = [{"label": t.label, "description": t.description} for t in client_tags]
        with self.lock:
            job = self._new_job("guide", urls, [], tuple(client_tags), raw_tags)
        return {"job_id": job.job_id}

    def _new_job(self, dialect: str, urls: list[str], ids: list[str], tags: tuple[ClientTag, ...], raw: Any) -> TagJob:
        job = TagJob(
            job_id=str(uuid.uuid4()),
            dialect=dialect,
            urls=urls,
            creative_ids=ids,
            client_tags=tags,
            raw_client_tags=raw,
            created_at=self.clock(),
            pending_s=self.config.pending_s,
            processing_s=self._processing_s(urls),
            failed=any(tagging.url_fails_tagging(url) for url in urls),
        )
        self._register_job(job)
        return job

    def _poll_job(self, job_id: str, dialect: str) -> tuple[TagJob, str, float]:
        with self.lock:
            job = self.jobs.get(job_id)
            if job is None or job.dialect != dialect:
                raise ApiError(404, f"Job with id {job_id} not found", system=SYSTEM_APERTURE)
            job.polls += 1
            self.counters["status_polls"] += 1
            self.counters[f"status_polls_{dialect}"] += 1
            now = self.clock()
            return job, job.state(now), now

    def guide_status(self, job_id: str) -> dict[str, Any]:
        job, state, _ = self._poll_job(job_id, "guide")
        result: dict[str, Any] = {"job_id": job.job_id, "status": state}
        if state == COMPLETE:
            result["annotations"] = [{"url": url, "tags": tags} for url, tags in zip(job.urls, job.tags(), strict=True)]
        return result

    def create_media_job(self, body: Any) -> dict[str, Any]:
        creatives, client_tags, errors = tagging.parse_media_job(body)
        if errors:
            raise ApiError(400, errors)
        tags = tuple(ClientTag(label, description) for label, description in client_tags.items())
        with self.lock:
            job = self._new_job(
                "media", [url for _, url in creatives], [cid for cid, _ in creatives], tags, dict(client_tags)
            )
        return {
            "job_id": job.job_id,
            "status": "QUEUED",
            "date_created": iso(job.created_at),
            "creativeIdentifiers": list(job.creative_ids),
            "clientTags": dict(client_tags),
        }

    def media_job_status(self, job_id: str, base_url: str) -> dict[str, Any]:
        job, state, now = self._poll_job(job_id, "media")
        result: dict[str, Any] = {
            "job_id": job.job_id,
            "status": _MEDIA_STATUS[state],
            "date_created": iso(job.created_at),
        }
        total = len(job.urls)
        if state == PROCESSING:
            fraction = (now - job.processing_at) / job.processing_s if job.processing_s else 1.0
            done = min(total - 1, int(total * fraction))
            result["message"] = f"Job is in progress. Processed {done} out of {total} media."
        elif state == COMPLETE:
            ttl = self.config.download_ttl_s
            result["date_updated"] = iso(job.done_at)
            result["download_url_csv"] = self.signer.link(base_url, job.job_id, "csv", now, ttl)
            result["download_url_json"] = self.signer.link(base_url, job.job_id, "json", now, ttl)
        elif state == FAILED:
            result["date_updated"] = iso(job.done_at)
            result["errors"] = {
                cid: "Failed to process during validation."
                for cid, url in zip(job.creative_ids, job.urls, strict=True)
                if tagging.url_fails_tagging(url)
            }
        result["creativeIdentifiers"] = list(job.creative_ids)
        result["clientTags"] = dict(job.raw_client_tags)
        return result

    def download(self, job_id: str, fmt: str, expires: str | None, sig: str | None) -> tuple[int, str, bytes]:
        """(status, content type, body) for a signed download link."""
        now = self.clock()
        refusal = self.signer.refusal(job_id, fmt, expires, sig, now)
        with self.lock:
            if refusal:
                self.counters["downloads_refused"] += 1
                message = "Request has expired" if refusal == "AccessDenied" and sig else "Access Denied"
                if refusal == "SignatureDoesNotMatch":
                    message = "The request signature we calculated does not match the signature you provided."
                return 403, "application/xml", downloads.s3_error(refusal, message)
            job = self.jobs.get(job_id)
            if job is None or job.dialect != "media" or job.state(now) != COMPLETE:
                return 404, "application/xml", downloads.s3_error("NoSuchKey", "The specified key does not exist.")
            self.counters["downloads"] += 1
        creatives = [
            {"id": cid, "url": url, "tags": tags}
            for cid, url, tags in zip(job.creative_ids, job.urls, job.tags(), strict=True)
        ]
        if fmt == "json":
            return 200, "application/json", downloads.render_json(job.job_id, creatives)
        return 200, "text/csv; charset=utf-8", downloads.render_csv(creatives)

    # ----------------------------------------------------------------- scoring
    def submit_media(self, body: Any) -> dict[str, Any]:
        fields, errors = scoring.parse_media_submission(body)
        if fields is None:
            raise ApiError(400, errors, system=SYSTEM_SCORING)
        key = (fields.media_id, fields.version, fields.source)
        with self.lock:
            if key in self.media_keys:
                raise ApiError(
                    409,
                    f"A media entry with id '{fields.media_id}' and version '{_text(fields.version)}' already exists",
                    system=SYSTEM_SCORING,
                    identifier_system=SYSTEM_BFF,
                )
            previous = self.media_by_external_id.setdefault(fields.media_id, [])
            submission = MediaSubmission(
                unique_id=str(uuid.uuid4()),
                fields=fields,
                created_at=self.clock(),
                scoring_s=self.config.scoring_s,
                round=len(previous) + 1,
            )
            previous.append(submission.unique_id)
            self.media[submission.unique_id] = submission
            self.media_keys[key] = submission.unique_id
            self.counters["media_submissions"] += 1
        return {"uniqueId": submission.unique_id}

    def _find_media(self, media_id: str, query: dict[str, str]) -> MediaSubmission:
        """By uniqueId, or by the caller's own id (+ ``version`` / ``source`` query) as Vidmob allows."""
        submission = self.media.get(media_id)
        if submission is not None:
            return submission
        version, source = query.get("version"), query.get("source")
        for unique_id in reversed(self.media_by_external_id.get(media_id, [])):
            candidate = self.media[unique_id]
            if (version is None or candidate.fields.version == version) and (
                source is None or candidate.fields.source == source
            ):
                return candidate
        message = f"No API media record found for external media ID: {media_id} with source: {source}"
        if version is not None:
            message += f" and version: {version}"
        raise ApiError(404, message, system=SYSTEM_SCORING)

    def media_status(self, media_id: str, query: dict[str, str]) -> dict[str, Any]:
        with self.lock:
            submission = self._find_media(media_id, query)
            submission.status_reads += 1
            self.counters["scoring_status_polls"] += 1
            status = submission.status(self.clock())
            if "sim-scoring-error" in submission.url and submission.status_reads == 1:
                status = "ERROR"
        f = submission.fields
        return {
            "uniqueId": submission.unique_id,
            "source": f.source,
            "id": f.media_id,
            "version": f.version,
            "status": status,
        }

    def _codes(self, submission: MediaSubmission, now: float) -> tuple[str | None, str | None]:
        """(tag_code, global_code) for a COMPLETE submission, per the rules in the module docstring."""
        url = submission.url
        first_round = submission.round == 1
        if "sim-download-failure" in url:
            return None, scoring.NO_DATA_MEDIA_DOWNLOAD_FAILURE
        if first_round and "sim-scoring-backlog" in url and submission.score_reads == 1:
            return None, scoring.NO_DATA_SCORING_BACKLOG
        if self.config.never_tagged or "sim-never-tagged" in url:
            return scoring.NO_DATA_MEDIA_NOT_TAGGED, None
        if first_round:
            if "sim-new-criteria" in url:
                return scoring.NO_DATA_NEW_CRITERIA, None
            if "sim-missing-required-tags" in url:
                return scoring.NO_DATA_MISSING_REQUIRED_TAGS, None
            if "sim-error-retrieving-tags" in url:
                return scoring.NO_DATA_ERROR_RETRIEVING_TAGS, None
            if "sim-tagging-failure" in url and not self._tagged_between(url, submission.created_at, now):
                return scoring.NO_DATA_MEDIA_TAGGING_FAILURE, None
        if self._tagged_by(url, submission.complete_at):
            return None, None
        return scoring.NO_DATA_MEDIA_NOT_TAGGED, None

    def media_scores(self, media_id: str, query: dict[str, str]) -> dict[str, Any]:
        requested: list[str] | None = None
        if query.get("channel"):
            requested, errors = scoring.parse_channels([c for c in query["channel"].split(",") if c.strip()], "channel")
            if errors:
                raise ApiError(400, errors, system=SYSTEM_SCORING)
        fmt = query.get("format", "summary")
        if fmt not in ("summary", "detail"):
            raise ApiError(400, ["format must be one of the following values: summary, detail"], system=SYSTEM_SCORING)
        with self.lock:
            submission = self._find_media(media_id, query)
            now = self.clock()
            status = submission.status(now)
            self.counters["score_fetches"] += 1
            if status != COMPLETE:
                raise ApiError(
                    400,
                    f"Media {submission.unique_id} has no scores: scoring status is {status}",
                    system=SYSTEM_SCORING,
                )
            submission.score_reads += 1
            tag_code, global_code = self._codes(submission, now)
        channels = requested or submission.fields.channels or list(scoring.DEFAULT_CHANNELS)
        summary, detail = scoring.score(submission.url, channels, tag_code, global_code)
        result: dict[str, Any] = {"media": submission.media_block(), "summary": summary}
        if fmt == "detail":
            result["detail"] = detail
        return result

    def updated_scores(self, query: dict[str, str]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Media whose scoring completed since ``updatedSince``, in completion order, paged by offset.

        Submissions made without a ``workspaceId`` are organisation-level and appear for every workspace.
        ``nextOffset`` is always ``offset + perPage``, as in Vidmob's published examples (even past the end):
        clients must stop on ``offset + perPage >= totalSize``.
        """
        errors: list[str] = []
        workspace_id = _int_param(query, "workspaceId", None, errors, required=True)
        offset = _int_param(query, "offset", 0, errors, minimum=0)
        per_page = _int_param(query, "perPage", DEFAULT_PER_PAGE, errors, minimum=1)
        if per_page is not None and per_page > MAX_PER_PAGE:
            errors.append(f"perPage must not be greater than {MAX_PER_PAGE}")
        since = _time_param(query.get("updatedSince"), errors)
        if errors:
            raise ApiError(400, errors, system=SYSTEM_SCORING)
        assert offset is not None and per_page is not None
        with self.lock:
            now = self.clock()
            matching = [
                s
                for s in self.media.values()
                if s.status(now) == COMPLETE
                and s.complete_at >= since
                and (s.fields.workspace_id is None or s.fields.workspace_id == workspace_id)
            ]
        matching.sort(key=lambda s: (s.complete_at, s.unique_id))
        page = matching[offset : offset + per_page]
        items = [
            {
                "uniqueId": s.unique_id,
                "id": s.fields.media_id,
                "version": s.fields.version,
                "source": s.fields.source,
                "name": s.fields.name,
                "url": s.fields.url,
                "workspaceId": s.fields.workspace_id,
                "channels": s.fields.channels or list(scoring.DEFAULT_CHANNELS),
                "status": COMPLETE,
                "lastUpdated": iso(s.complete_at, millis=True),
            }
            for s in page
        ]
        pagination = {
            "offset": offset,
            "perPage": per_page,
            "nextOffset": offset + per_page,
            "totalSize": len(matching),
        }
        return items, pagination

    # ----------------------------------------------------------------- inspection
    def job_record(self, job_id: str) -> dict[str, Any]:
        with self.lock:
            job = self.jobs.get(job_id)
            if job is None:
                raise ApiError(404, f"Job with id {job_id} not found", system="simulator")
            return job.record(self.clock())

    def media_record(self, unique_id: str) -> dict[str, Any]:
        with self.lock:
            submission = self.media.get(unique_id)
            if submission is None:
                raise ApiError(404, f"Media with uniqueId {unique_id} not found", system="simulator")
            return submission.record(self.clock())

    def is_tagged(self, url: str, moment: float | None = None) -> bool:
        """Whether a tagging job containing ``url`` had completed by ``moment`` (default: now)."""
        with self.lock:
            return self._tagged_by(url, self.clock() if moment is None else moment)

    def stats(self) -> dict[str, Any]:
        with self.lock:
            now = self.clock()
            states: Counter[str] = Counter(job.state(now) for job in self.jobs.values())
            c = self.counters
            return {
                "uptime_s": round(now - self.started_at, 3),
                "requests_total": c["requests_total"],
                "requests": dict(self.requests),
                "responses": dict(self.responses),
                "jobs_created": c["jobs_created"],
                "assets_created": c["assets_created"],  # assets those jobs carried
                "jobs_created_by_dialect": {
                    "guide": self.jobs_by_dialect["guide"],
                    "media": self.jobs_by_dialect["media"],
                },
                "jobs_held": len(self.jobs),
                "jobs_by_state": {s: states[s] for s in (PENDING, PROCESSING, COMPLETE, FAILED)},
                "status_polls": c["status_polls"],
                "status_polls_by_dialect": {"guide": c["status_polls_guide"], "media": c["status_polls_media"]},
                "job_polls": {job_id: job.polls for job_id, job in self.jobs.items()},
                "tagged_urls": sum(1 for times in self.tagged_at.values() if times[0] <= now),
                "downloads": c["downloads"],
                "downloads_refused": c["downloads_refused"],
                "media_submissions": c["media_submissions"],
                "media_held": len(self.media),
                "scoring_status_polls": c["scoring_status_polls"],
                "score_fetches": c["score_fetches"],
                "unauthorized": c["unauthorized"],
                "faults_injected": c["faults_injected"],
                "faults_armed": len(self.faults),
                "requests_per_second": self.traffic.stats(now),
            }


def _text(value: str | None) -> str:
    """How a missing optional value reads in messages (the real service is a JavaScript one)."""
    return "null" if value is None else value


def _int_param(
    query: dict[str, str],
    name: str,
    default: int | None,
    errors: list[str],
    minimum: int | None = None,
    required: bool = False,
) -> int | None:
    raw = query.get(name)
    if raw is None or raw == "":
        if required:
            errors.append(f"{name} is required")
        return default
    try:
        value = int(raw)
    except ValueError:
        errors.append(f"{name} must be an integer number")
        return default
    if minimum is not None and value < minimum:
        errors.append(f"{name} must not be less than {minimum}")
        return default
    return value


def _time_param(raw: str | None, errors: list[str]) -> float:
    """``updatedSince`` as epoch seconds: ISO 8601 (naive = UTC) or a unix timestamp in s or ms."""
    if raw is None or raw == "":
        return 0.0
    try:
        number = float(raw)
    except ValueError:
        pass
    else:
        return number / 1000 if number > 1e11 else number
    try:
        moment = datetime.fromisoformat(raw.replace(" ", "+"))
    except ValueError:
        errors.append("updatedSince must be a valid ISO 8601 date string")
        return 0.0
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()
