"""The Creative Tags ("Aperture") API behind one interface, in its two published dialects.

Why two: Vidmob's Overview guide (the "guide" dialect) and its published OpenAPI (the "media" dialect)
describe different endpoints for the same job. Services depend only on ``TagsClient``; the dialect is
configuration (``make_tags_client``).

Mapping between the interface and each dialect:

- ``create_job(assets, client_tags) -> job id``
  - guide: ``POST /v1/aperture/jobs`` with ``{"assets": [{"url"}], "clientTags": [{"label", "description"}]}``
    (description omitted when None; ``AssetRef.id`` is not sent: the guide has no asset id);
    returns ``result.job_id``.
  - media: ``POST /v1/media/aperture`` with ``{"creatives": [{"id", "url"}], "clientTags": {label: value}}``.
    The creative id is ``AssetRef.id`` when given, else ``"asset-<position>"`` (``creative_id_for``), so
    results map back to assets. Each ``ClientTag`` becomes ``label: description`` (``label: label`` when
    it has no description); a repeated label: the LAST one wins. More than 10 distinct labels, or other
    than 1 to 200 creatives, or clashing creative ids -> ``UnsupportedRequestError`` before any HTTP call.
    Returns ``result.job_id``.
- ``get_status(job_id) -> TagsJobStatus``
  - guide: ``GET /v1/aperture/jobs/{job_id}/status``; PENDING | PROCESSING | COMPLETE | FAILED as is. On
    COMPLETE, ``result.annotations`` (``[{"url", "tags": [{"category", "label"}]}]``) becomes
    ``AssetAnnotation(url, id=None, tags)`` (id is read if Vidmob ever sends one).
  - media: ``GET /v1/media/aperture/{job_id}``; QUEUED -> PENDING, PROCESSING (``message`` is progress
    text), COMPLETED -> COMPLETE, FAILED (``errors``: {creative id: message}). On COMPLETED the results are
    fetched from ``download_url_json`` (signed, short-lived, sent WITHOUT the Authorization header) whose
    body ``{"job_id", "creatives": [{"id", "url", "tags"}]}`` becomes ``AssetAnnotation(url, id, tags)``.
  - ``message`` and ``errors`` are passed through when present (both dialects), scrubbed of the key.

Client tags come back as tags with ``category == "client"``. In the guide dialect results map back to
assets by URL; in the media dialect by creative id (see ``creative_id_for``) or URL.

A 2xx that lacks a documented field, or carries an unknown status, raises ``MalformedResponseError``
(retryable), and so does a results download that fails in any way: polling again gives a fresh link.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar, Literal, Protocol

from clients._shape import (
    as_object,
    optional_str,
    require_id,
    require_list,
    require_str,
    result_of,
)
from clients.errors import (
    DisallowedHostError,
    ResponseShapeError,
    ResultsDownloadError,
    TerminalApiError,
    UnsupportedRequestError,
)
from clients.http import VidmobHttp

logger = logging.getLogger(__name__)

MEDIA_MAX_CREATIVES = 200
MEDIA_MAX_CLIENT_TAGS = 10


@dataclass(frozen=True)
class AssetRef:
    """An asset to tag: a URL Vidmob can fetch, and optionally the caller's own id for it."""

    url: str
    id: str | None = None


@dataclass(frozen=True)
class ClientTag:
    """A caller-defined tag; the description tells Vidmob's AI what the label means."""

    label: str
    description: str | None = None


@dataclass(frozen=True)
class Tag:
    category: str
    label: str


@dataclass(frozen=True)
class AssetAnnotation:
    """The tags found in one asset. ``id`` is the creative id (media dialect) or None (guide)."""

    url: str
    id: str | None
    tags: tuple[Tag, ...]


class TagsJobState(StrEnum):
    """Job states, normalized across dialects (media QUEUED -> PENDING, COMPLETED -> COMPLETE)."""

    PENDING = "PENDING"
    PROCESSING = "PROCESSING"
    COMPLETE = "COMPLETE"
    FAILED = "FAILED"

    @property
    def is_final(self) -> bool:
        return self in (TagsJobState.COMPLETE, TagsJobState.FAILED)


@dataclass(frozen=True)
class TagsJobStatus:
    """A job's state; ``annotations`` only when COMPLETE; ``message``/``errors`` when Vidmob sent them."""

    state: TagsJobState
    annotations: tuple[AssetAnnotation, ...] = ()
    message: str | None = None
    errors: dict[str, str] = field(default_factory=dict)


class TagsClient(Protocol):
    """What services need from the Tags API, whatever the dialect."""

    def create_job(self, assets: Sequence[AssetRef], client_tags: Sequence[ClientTag]) -> str:
        """Submit the assets as one job; return Vidmob's job id."""
        ...

    def get_status(self, job_id: str) -> TagsJobStatus:
        """Poll the job once; on COMPLETE the annotations are included."""
        ...


def creative_id_for(asset: AssetRef, position: int) -> str:
    """The creative id the media dialect sends for ``asset``: its own id, else ``"asset-<position>"``."""
    return asset.id if asset.id else f"asset-{position}"


# -- guide dialect --------------------------------------------------------------------------------

_GUIDE_CREATE = "/v1/aperture/jobs"
_GUIDE_STATUS = "/v1/aperture/jobs/{job_id}/status"
_GUIDE_STATES = {
    "PENDING": TagsJobState.PENDING,
    "PROCESSING": TagsJobState.PROCESSING,
    "COMPLETE": TagsJobState.COMPLETE,
    "FAILED": TagsJobState.FAILED,
}


class GuideTagsClient:
    """The dialect of Vidmob's Overview guide: results come inline with the COMPLETE status."""

    dialect: ClassVar[str] = "guide"

    def __init__(self, http: VidmobHttp) -> None:
        self._http = http

    def create_job(self, assets: Sequence[AssetRef], client_tags: Sequence[ClientTag]) -> str:
        if not assets:
            raise UnsupportedRequestError("a job needs at least one asset", endpoint=f"POST {_GUIDE_CREATE}")
        payload = {
            "assets": [{"url": asset.url} for asset in assets],
            "clientTags": [_guide_client_tag(tag) for tag in client_tags],
        }
        return self._http.request("POST", _GUIDE_CREATE, json=payload, parse=_parse_job_id)

    def get_status(self, job_id: str) -> TagsJobStatus:
        return self._http.request(
            "GET", _GUIDE_STATUS, path_params={"job_id": job_id}, expected=(200,), parse=self._parse_status
        )

    def _parse_status(self, body: dict[str, Any]) -> TagsJobStatus:
        result = result_of(body)
        state = _state(result, _GUIDE_STATES, self._http.redact)
        annotations: tuple[AssetAnnotation, ...] = ()
        if state is TagsJobState.COMPLETE:
            entries = require_list(result, "annotations", "result")
            annotations = tuple(
                _annotation(entry, f"result.annotations[{i}]", id_key=None) for i, entry in enumerate(entries)
            )
        return TagsJobStatus(
            state=state,
            annotations=annotations,
            message=_lenient_message(result, self._http.redact),
            errors=_lenient_errors(result, self._http.redact),
        )


def _guide_client_tag(tag: ClientTag) -> dict[str, str]:
    entry = {"label": tag.label}
    if tag.description is not None:
        entry["description"] = tag.description
    return entry


# -- media dialect --------------------------------------------------------------------------------

_MEDIA_CREATE = "/v1/media/aperture"
_MEDIA_STATUS = "/v1/media/aperture/{job_id}"
# A label, not a path: the signed link changes on every poll and must not become a metric label.
_MEDIA_DOWNLOAD = "{download_url_json}"
_MEDIA_STATES = {
    "QUEUED": TagsJobState.PENDING,
    "PROCESSING": TagsJobState.PROCESSING,
    "COMPLETED": TagsJobState.COMPLETE,
    "FAILED": TagsJobState.FAILED,
}


@dataclass(frozen=True)
class _MediaPoll:
    state: TagsJobState
    message: str | None
    errors: dict[str, str]
    download_url: str | None


class MediaTagsClient:
    """The dialect of Vidmob's published OpenAPI: results are fetched from a signed link once COMPLETED."""

    dialect: ClassVar[str] = "media"

    def __init__(self, http: VidmobHttp) -> None:
        self._http = http

    def create_job(self, assets: Sequence[AssetRef], client_tags: Sequence[ClientTag]) -> str:
        payload = {"creatives": _media_creatives(assets), "clientTags": _media_client_tags(client_tags)}
        return self._http.request("POST", _MEDIA_CREATE, json=payload, parse=_parse_job_id)

    def get_status(self, job_id: str) -> TagsJobStatus:
        poll = self._http.request(
            "GET", _MEDIA_STATUS, path_params={"job_id": job_id}, expected=(200,), parse=self._parse_poll
        )
        annotations: tuple[AssetAnnotation, ...] = ()
        if poll.download_url is not None:  # set exactly when COMPLETED
            annotations = self._download(job_id, poll.download_url)
        return TagsJobStatus(state=poll.state, annotations=annotations, message=poll.message, errors=poll.errors)

    def _parse_poll(self, body: dict[str, Any]) -> _MediaPoll:
        result = result_of(body)
        state = _state(result, _MEDIA_STATES, self._http.redact)
        download_url = None
        if state is TagsJobState.COMPLETE:
            download_url = require_str(result, "download_url_json", "result")
            if not download_url.startswith(("https://", "http://")):
                raise ResponseShapeError("result.download_url_json is not an http(s) URL")
        redact = self._http.redact
        return _MediaPoll(state, _lenient_message(result, redact), _lenient_errors(result, redact), download_url)

    def _download(self, job_id: str, url: str) -> tuple[AssetAnnotation, ...]:
        try:
            return self._http.request(
                "GET",
                _MEDIA_DOWNLOAD,
                absolute_url=url,
                expected=(200,),
                envelope=False,
                parse=lambda body: _parse_download(body, job_id),
            )
        except DisallowedHostError:
            raise  # terminal: no fresh link makes that host allowed
        except TerminalApiError as exc:
            # An expired signature answers 403 and the like; the next poll hands out a fresh link.
            raise ResultsDownloadError(
                f"results download failed: {exc.detail}",
                endpoint=exc.endpoint,
                status_code=exc.status_code,
            ) from None


def _media_creatives(assets: Sequence[AssetRef]) -> list[dict[str, str]]:
    endpoint = f"POST {_MEDIA_CREATE}"
    if not 1 <= len(assets) <= MEDIA_MAX_CREATIVES:
        raise UnsupportedRequestError(
            f"the media dialect takes 1 to {MEDIA_MAX_CREATIVES} creatives per job, got {len(assets)}",
            endpoint=endpoint,
        )
    creatives = [{"id": creative_id_for(asset, i), "url": asset.url} for i, asset in enumerate(assets)]
    ids = [creative["id"] for creative in creatives]
    if len(set(ids)) != len(ids):
        raise UnsupportedRequestError(
            "creative ids must be unique within a job (an own id may clash with a generated asset-N)",
            endpoint=endpoint,
        )
    return creatives


def _media_client_tags(client_tags: Sequence[ClientTag]) -> dict[str, str]:
    """``{label: description or label}``; a repeated label keeps its last description."""
    pairs: dict[str, str] = {}
    for tag in client_tags:
        pairs[tag.label] = tag.description if tag.description else tag.label
    if len(pairs) > MEDIA_MAX_CLIENT_TAGS:
        raise UnsupportedRequestError(
            f"the media dialect accepts at most {MEDIA_MAX_CLIENT_TAGS} client tags, got {len(pairs)} "
            "distinct labels; split the tags or use the guide dialect",
            endpoint=f"POST {_MEDIA_CREATE}",
        )
    return pairs


def _parse_download(body: dict[str, Any], job_id: str) -> tuple[AssetAnnotation, ...]:
    returned_job = body.get("job_id")
    if returned_job is not None and returned_job != job_id:
        raise ResponseShapeError("download.job_id does not match the polled job")
    creatives = require_list(body, "creatives", "download")
    return tuple(_annotation(entry, f"download.creatives[{i}]", id_key="id") for i, entry in enumerate(creatives))


# -- shared parsing -------------------------------------------------------------------------------


def _parse_job_id(body: dict[str, Any]) -> str:
    return require_id(result_of(body), "job_id", "result")


def _state(result: dict[str, Any], states: Mapping[str, TagsJobState], redact: Callable[[str], str]) -> TagsJobState:
    raw = result.get("status")
    if not isinstance(raw, str):
        raise ResponseShapeError("result.status is missing or not a string")
    state = states.get(raw)
    if state is None:
        shown = redact(raw)[:64]
        logger.warning("vidmob tags: unknown job status %r (expected one of %s)", shown, ", ".join(states))
        raise ResponseShapeError(f"unknown job status {shown!r}")
    return state


def _annotation(entry: Any, where: str, *, id_key: str | None) -> AssetAnnotation:
    obj = as_object(entry, where)
    tags = require_list(obj, "tags", where)
    return AssetAnnotation(
        url=require_str(obj, "url", where),
        id=require_str(obj, id_key, where) if id_key else optional_str(obj, "id", where),
        tags=tuple(_tag(tag, f"{where}.tags[{j}]") for j, tag in enumerate(tags)),
    )


def _tag(entry: Any, where: str) -> Tag:
    obj = as_object(entry, where)
    return Tag(category=require_str(obj, "category", where), label=require_str(obj, "label", where))


def _lenient_message(result: dict[str, Any], redact: Callable[[str], str]) -> str | None:
    # Informational only: an odd type must not turn a FAILED job into an endless retry.
    message = result.get("message")
    return redact(message) if isinstance(message, str) else None


def _lenient_errors(result: dict[str, Any], redact: Callable[[str], str]) -> dict[str, str]:
    errors = result.get("errors")
    if not isinstance(errors, dict):
        return {}
    return {redact(str(key)): redact(str(value)) for key, value in errors.items()}


def make_tags_client(dialect: Literal["guide", "media"], http: VidmobHttp) -> TagsClient:
    """The ``TagsClient`` for the configured dialect."""
    if dialect == "guide":
        return GuideTagsClient(http)
    if dialect == "media":
        return MediaTagsClient(http)
    raise ValueError(f"unknown tags dialect {dialect!r}; expected 'guide' or 'media'")


__all__ = [
    "MEDIA_MAX_CLIENT_TAGS",
    "MEDIA_MAX_CREATIVES",
    "AssetAnnotation",
    "AssetRef",
    "ClientTag",
    "GuideTagsClient",
    "MediaTagsClient",
    "Tag",
    "TagsClient",
    "TagsJobState",
    "TagsJobStatus",
    "creative_id_for",
    "make_tags_client",
]
