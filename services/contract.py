"""The public task contract, as pydantic models.

These models are the single source of truth for what other applications may
send: the tasks validate with them, and docs/schemas/*.json is generated from
them. Changing a field here changes a public API (architecture.md).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from clients.scoring import CHANNELS as SCORING_CHANNELS
from clients.scoring import normalize_channel
from config.settings import CALLER_PATTERN
from config.tasks import CREATE_JOB, SCORE_MEDIA

# Set by the worker in place of a message's arguments it refused to decode (too large, nested too
# deeply: workers/bounded_json.py); the value is the reason, stored on the rejected row.
REFUSED_FIELD = "__aperture_refused__"

MAX_ASSETS = 200
MAX_CLIENT_TAGS = 100
MAX_URL_LENGTH = 2048
MAX_COLLECTION_LENGTH = 100  # jobs.collection


def _http_url(value: str) -> str:
    # Kept as the caller wrote it (no normalisation): Vidmob echoes the URL back and
    # annotations are matched to assets by it.
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc or " " in value:
        raise ValueError("must be an absolute http(s) URL")
    return value


# Control characters (NUL included) and lone surrogates: PostgreSQL cannot store the first in JSON
# nor the second at all, and neither belongs in a URL, an id or a label.
_CONTROL = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")
_CONTROL_BUT_WHITESPACE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")


def _one_line(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters or unpaired surrogates")
    return value


def _text(value: str) -> str:
    if _CONTROL_BUT_WHITESPACE.search(value):
        raise ValueError("must not contain control characters (other than tab and newline) or unpaired surrogates")
    return value


HttpUrlStr = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_URL_LENGTH),
    AfterValidator(_one_line),
    AfterValidator(_http_url),
]
Identifier = Annotated[
    str, StringConstraints(min_length=1, max_length=255, strip_whitespace=True), AfterValidator(_one_line)
]

# A callback is a message this system sends on the caller's behalf: it may name only the caller's
# own task and queue, never one of ours (``aperture.*``, Celery's ``celery.*``) nor a key the
# broker uses for itself (kombu keeps ``unacked`` and friends in the same Redis keyspace).
CALLBACK_TASK_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$"
CALLBACK_QUEUE_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.:-]*$"
RESERVED_TASK_NAMESPACES = ("aperture.", "celery.")
RESERVED_QUEUES = frozenset({"unacked", "unacked_index", "unacked_mutex"})
RESERVED_QUEUE_PREFIXES = ("aperture.", "_kombu", "celeryev", "celery@")


def _callers_task(value: str) -> str:
    if value.startswith(RESERVED_TASK_NAMESPACES):
        raise ValueError(f"must be the caller's own task, not one in {' or '.join(RESERVED_TASK_NAMESPACES)}")
    return value


def _callers_queue(value: str) -> str:
    if value in RESERVED_QUEUES or value.startswith(RESERVED_QUEUE_PREFIXES) or value.endswith(".pidbox"):
        raise ValueError("must be the caller's own queue, not one the broker or this system uses")
    return value


CallbackTask = Annotated[
    str, StringConstraints(min_length=1, max_length=200, pattern=CALLBACK_TASK_PATTERN), AfterValidator(_callers_task)
]
CallbackQueue = Annotated[
    str, StringConstraints(min_length=1, max_length=200, pattern=CALLBACK_QUEUE_PATTERN), AfterValidator(_callers_queue)
]


CallerName = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=CALLER_PATTERN)]
CALLER_DESCRIPTION = (
    "The sending application's name. On Redis it is self-declared (give each application its own Redis ACL "
    "user); on RabbitMQ the caller is the message's user_id property, which the broker checks, and this "
    "field, when given, must equal it. Absent: the `default` caller. Request ids are keys per caller."
)
Priority = Literal["interactive", "bulk"]


class _Strict(BaseModel):
    # Unknown fields are refused: a typo in an optional field must not be silently ignored.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class AssetIn(_Strict):
    url: HttpUrlStr = Field(description="Where Vidmob can fetch the asset (http or https).")
    id: Identifier | None = Field(None, description="The caller's own id for the asset, echoed in results.")


class ClientTagIn(_Strict):
    label: Annotated[
        str, StringConstraints(min_length=1, max_length=100, strip_whitespace=True), AfterValidator(_one_line)
    ]
    description: Annotated[str, StringConstraints(max_length=1000), AfterValidator(_text)] | None = None


class CallbackIn(_Strict):
    task: CallbackTask = Field(
        description="Name of the caller's task to send when the job ends (not aperture.* or celery.*)."
    )
    queue: CallbackQueue | None = Field(
        None, description="The caller's queue to send it to (the broker's default if absent)."
    )


class CreateJobRequest(_Strict):
    """Keyword arguments of `aperture.create_job`."""

    assets: list[AssetIn] = Field(min_length=1, max_length=MAX_ASSETS)
    client_tags: list[ClientTagIn] = Field(default_factory=list, max_length=MAX_CLIENT_TAGS)
    request_id: Identifier | None = Field(
        None,
        description="Idempotency key, per caller: the same key with the same request again never creates a "
        "second Vidmob job; with a different request it is refused (rejected, with the reason and a callback).",
    )
    caller: CallerName | None = Field(None, description=CALLER_DESCRIPTION)
    priority: Priority = Field(
        "interactive",
        description="While the open-jobs cap makes work wait: the order within the caller's own waiting "
        "requests (`interactive` first, then `bulk`; first come first served within each).",
    )
    collection: (
        Annotated[
            str,
            StringConstraints(min_length=1, max_length=MAX_COLLECTION_LENGTH, strip_whitespace=True),
            AfterValidator(_one_line),
        ]
        | None
    ) = Field(
        None,
        description="A label of the caller's for a set of jobs (a campaign, a brand, a market), stored with the "
        "job: the library's questions (tag frequency, comparisons, exports) can be asked of one collection.",
    )
    callback: CallbackIn | None = None
    fresh: bool = Field(
        False,
        description="Tag the assets at Vidmob even when every one of them was tagged recently with the same "
        "client tags (by default such a request is answered from those tags, with no Vidmob call, and its "
        "callback's annotations say `reused`).",
    )
    batch: bool = Field(
        True,
        description="May share one Vidmob job with other requests of the same client tags that arrive within "
        "the batch window (APERTURE_BATCH_WINDOW_S; only requests of a few assets are packed). The request keeps "
        "its own job row, tags and callback either way; `false` sends it to Vidmob as a job of its own, "
        "without waiting for the window.",
    )


def _scoring_channel(value: str) -> str:
    # Vidmob's canonical spelling (aliases such as FACEBOOK -> META resolved); unknown -> refused here,
    # not at Vidmob.
    return normalize_channel(value)


ScoringChannel = Annotated[str, StringConstraints(min_length=1, max_length=64), AfterValidator(_scoring_channel)]


class ScoreMediaRequest(_Strict):
    """Keyword arguments of `aperture.score_media`."""

    id: Identifier = Field(description="The caller's id for the media; Vidmob's media id for scoring.")
    url: HttpUrlStr = Field(description="Where Vidmob can fetch the media (http or https).")
    # Rescores are sent as "<version or 1>-r<n>", so the caller's version leaves room for the suffix.
    version: Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True)] | None = Field(
        None, description="The media's version; the same id + version is one scoring at Vidmob."
    )
    channels: list[ScoringChannel] = Field(
        default_factory=list, max_length=len(SCORING_CHANNELS), description="Channels to score on (default: all)."
    )
    workspace_id: Annotated[int, Field(gt=0)] | None = None
    request_id: Identifier | None = Field(
        None,
        description="Idempotency key, per caller: the same key with the same request again never scores the "
        "media a second time; with a different request it is refused (rejected, with the reason and a callback).",
    )
    caller: CallerName | None = Field(None, description=CALLER_DESCRIPTION)
    callback: CallbackIn | None = None


# The model of each public task's keyword arguments (the JSON Schemas are generated from them).
MODELS: dict[str, type[BaseModel]] = {
    CREATE_JOB.name: CreateJobRequest,
    SCORE_MEDIA.name: ScoreMediaRequest,
}


def describe_errors(error: ValidationError) -> str:
    """A reason a person can act on: one clause per problem, with its location."""
    clauses = []
    for item in error.errors(include_url=False):
        where = ".".join(str(p) for p in item["loc"]) or "payload"
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown field"
        clauses.append(f"{where}: {message}")
    return "; ".join(clauses)


def parse_callback(raw: Any) -> CallbackIn | None:
    """The callback of a payload that may be invalid elsewhere: a rejected job still
    tells its caller, when the caller said how."""
    if raw is None:
        return None
    try:
        return CallbackIn.model_validate(raw)
    except ValidationError:
        return None
