"""One configured HTTP client for Vidmob: the only place in the project that speaks HTTP to it.

Why one wrapper: timeouts, "never follow redirects", the bearer key, the error taxonomy
(``clients.errors``) and the per-attempt record are decided here once. Callers only see parsed bodies
(or typed results through ``parse``) and one ``ApiError`` family. The client never retries: it raises,
and the caller decides, so the retry policy lives in one place.

The API key is a secret: it is sent only as ``Authorization: Bearer`` to URLs on the API base URL, and it
is scrubbed from every text that ends up in an exception, an ``Attempt`` or a log line. Only method,
endpoint template, status and latency are logged.
"""

from __future__ import annotations

import json as jsonlib
import logging
import math
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Literal, TypeVar, overload
from urllib.parse import quote, quote_plus, urlsplit

import requests
from pydantic import SecretStr
from requests.auth import AuthBase

from clients.errors import (
    ApiError,
    BadRequestError,
    ConflictError,
    DisallowedHostError,
    MalformedResponseError,
    NotFoundError,
    RateLimitedError,
    RedirectError,
    ResponseShapeError,
    ServerError,
    TerminalApiError,
    TransportError,
    UnauthorizedError,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")
AttemptOutcome = Literal["ok", "retryable", "terminal", "not_sent"]

USER_AGENT = "aperture-workers/0.1 (vidmob-client; python-requests)"
REDACTED = "[REDACTED]"
# Rows and log lines stay small; the full text of an HTML error page helps nobody.
_MAX_DETAIL_CHARS = 500

# Failures below the HTTP layer that may go away on the next try. ConnectTimeout is both a Timeout and a
# ConnectionError; ChunkedEncodingError/ContentDecodingError are bodies broken in transit.
_TRANSIENT_TRANSPORT_ERRORS = (
    requests.Timeout,
    requests.ConnectionError,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
)


@dataclass(frozen=True)
class Attempt:
    """One HTTP attempt, handed to ``on_attempt`` so the caller can store a row per attempt.

    ``endpoint`` is the METHOD plus the path TEMPLATE (``"GET /v1/aperture/jobs/{job_id}/status"``),
    never the concrete URL, so metrics and rows get one label per endpoint, not one per job.
    """

    method: str
    endpoint: str
    status_code: int | None
    latency_ms: float
    outcome: AttemptOutcome
    error: str | None = None
    retry_after: float | None = None


class _BearerAuth(AuthBase):
    """Adds the key at send time, so no local variable of ours holds the header (think frame locals
    captured by error trackers)."""

    def __init__(self, api_key: SecretStr) -> None:
        self._api_key = api_key

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self._api_key.get_secret_value()}"
        return request

    def __repr__(self) -> str:
        return "_BearerAuth(api_key=SecretStr('**********'))"


MAX_RETRY_AFTER_S = 24 * 3600.0


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP-date; None when unusable.

    Past dates give 0.0 (retry now); garbage gives None so the caller falls back to its own backoff; a
    wait longer than ``MAX_RETRY_AFTER_S`` is cut to it (a server's wish, not a reason to park a job for
    years or to overflow a date).
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return min(max(0.0, seconds), MAX_RETRY_AFTER_S) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return min(max(0.0, (when - (now or datetime.now(UTC))).total_seconds()), MAX_RETRY_AFTER_S)


class _BodyError(Exception):
    def __init__(self, error: ApiError) -> None:
        self.error = error


class VidmobHttp:
    """A configured ``requests.Session`` wrapper: timeouts, no redirects, auth, taxonomy, attempt hooks.

    ``before_request(endpoint)`` runs before every HTTP call: the place for a global rate limiter or an
    open-jobs cap. ``on_attempt(attempt)`` runs once per HTTP attempt, success or failure, before the
    result is returned or the error raised.

    One instance per process: a ``requests.Session`` holds sockets and must not be shared across fork.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | SecretStr,
        *,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        session: requests.Session | None = None,
        on_attempt: Callable[[Attempt], None] | None = None,
        before_request: Callable[[str], None] | None = None,
        download_hosts: Collection[str] = (),
        max_response_bytes: int = 64 * 1024 * 1024,
        max_response_seconds: float = 120.0,
    ) -> None:
        secret = api_key if isinstance(api_key, SecretStr) else SecretStr(api_key)
        if not secret.get_secret_value():
            raise ValueError("api_key must not be empty")
        if connect_timeout <= 0 or read_timeout <= 0:
            raise ValueError("timeouts must be positive")
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("base_url must be an absolute http(s) URL")
        self.base_url = base_url.rstrip("/")
        self._api_key = secret
        self._auth = _BearerAuth(secret)
        self._timeout = (connect_timeout, read_timeout)
        self._session = session if session is not None else requests.Session()
        self._on_attempt = on_attempt
        self._before_request = before_request
        # Absolute URLs (signed downloads) are fetched only from these hosts ("*.example.com" matches
        # subdomains) besides the API's own: a body must never make a worker call an internal address.
        self._download_hosts = tuple(h.strip().lower() for h in download_hosts if h.strip())
        self._max_response_bytes = max_response_bytes
        self._max_response_seconds = max_response_seconds
        key = secret.get_secret_value()
        # Every form the key may come back in; longest first, so a form that contains another is replaced
        # whole. Kept as SecretStr so that vars(client) or a debugger's repr does not show them either.
        forms = sorted({key, quote(key, safe=""), quote_plus(key)}, key=len, reverse=True)
        self._secret_forms = tuple(SecretStr(form) for form in forms)

    def __repr__(self) -> str:
        return f"VidmobHttp(base_url={self.base_url!r})"

    def close(self) -> None:
        """Release pooled connections (e.g. on worker shutdown)."""
        self._session.close()

    def redact(self, text: str) -> str:
        """The text with every form of the API key (raw, URL-encoded) replaced by ``[REDACTED]``."""
        for form in self._secret_forms:
            text = text.replace(form.get_secret_value(), REDACTED)
        return text

    def _clip(self, text: str) -> str:
        # Scrub before clipping: clipping first could leave half a key behind.
        text = self.redact(text).strip()
        return text if len(text) <= _MAX_DETAIL_CHARS else text[: _MAX_DETAIL_CHARS - 3] + "..."

    @overload
    def request(
        self,
        method: str,
        path_template: str,
        *,
        path_params: Mapping[str, object] | None = ...,
        json: Any = ...,
        params: Mapping[str, str] | None = ...,
        expected: Collection[int] = ...,
        absolute_url: str | None = ...,
        envelope: bool = ...,
        parse: None = ...,
    ) -> dict[str, Any]: ...

    @overload
    def request(
        self,
        method: str,
        path_template: str,
        *,
        path_params: Mapping[str, object] | None = ...,
        json: Any = ...,
        params: Mapping[str, str] | None = ...,
        expected: Collection[int] = ...,
        absolute_url: str | None = ...,
        envelope: bool = ...,
        parse: Callable[[dict[str, Any]], T],
    ) -> T: ...

    def request(
        self,
        method: str,
        path_template: str,
        *,
        path_params: Mapping[str, object] | None = None,
        json: Any = None,
        params: Mapping[str, str] | None = None,
        expected: Collection[int] = (200, 201),
        absolute_url: str | None = None,
        envelope: bool = True,
        parse: Callable[[dict[str, Any]], Any] | None = None,
    ) -> Any:
        """Send one request and return the parsed JSON body (or ``parse(body)``), else raise ``ApiError``.

        - ``path_template`` (e.g. ``"/v1/aperture/jobs/{job_id}/status"``) is filled from ``path_params``
          (each value URL-quoted, so an id can never change the path) and reported as the endpoint.
        - ``absolute_url`` replaces the URL (signed download links); the Authorization header is only
          sent when that URL is on the API base URL.
        - ``envelope``: require Vidmob's ``{"status":"OK","result":...}``; pass False for bodies that
          are plain JSON objects (signed downloads).
        - ``parse`` turns the body into a typed result inside the attempt; it raises
          ``ResponseShapeError`` for an undocumented body, which becomes ``MalformedResponseError``.
        """
        method = method.upper()
        endpoint = f"{method} {path_template}"
        url = absolute_url if absolute_url is not None else self._url(path_template, path_params)
        auth = self._auth if self._is_api_url(url) else None
        started = time.perf_counter()
        if auth is None and not self._is_allowed_host(url):
            host = urlsplit(url).hostname or "?"
            error: ApiError = DisallowedHostError(
                f"refused to fetch from {host[:100]}: not the API's host nor in APERTURE_DOWNLOAD_HOSTS",
                endpoint=endpoint,
            )
            self._record(method, endpoint, None, started, error)
            raise error
        if self._before_request is not None:
            try:
                self._before_request(endpoint)
            except ApiError as refused:  # a gate (rate limit, open circuit) said no: recorded, never sent
                self._record(method, endpoint, None, started, refused, sent=False)
                raise
        started = time.perf_counter()
        try:
            response = self._session.request(
                method,
                url,
                json=json,
                params=params,
                headers={"Accept": "application/json", "User-Agent": USER_AGENT},
                auth=auth,
                timeout=self._timeout,
                allow_redirects=False,
                stream=True,  # the body is read under a size and time cap (_read_body)
            )
            self._read_body(response, started, endpoint)
        except _BodyError as exc:
            self._record(method, endpoint, exc.error.status_code, started, exc.error)
            raise exc.error from None
        except _TRANSIENT_TRANSPORT_ERRORS as exc:
            error = TransportError(self._describe_exception(exc), endpoint=endpoint)
            self._record(method, endpoint, None, started, error)
            # "from None": the chained requests exception could carry the key into a logged traceback.
            raise error from None
        except requests.RequestException as exc:
            # Invalid URL/schema and the like: a bug or bad config, not something the network fixes.
            error = TerminalApiError(self._describe_exception(exc), endpoint=endpoint)
            self._record(method, endpoint, None, started, error)
            raise error from None

        status = response.status_code
        if 200 <= status < 300 and status in expected:
            try:
                body = self._decode(response, envelope=envelope)
                result = parse(body) if parse is not None else body
            except ResponseShapeError as exc:
                error = MalformedResponseError(self._clip(str(exc)), endpoint=endpoint, status_code=status)
                self._record(method, endpoint, status, started, error)
                raise error from None
            self._record(method, endpoint, status, started, None)
            return result

        error = self._error_from_response(response, endpoint)
        self._record(method, endpoint, status, started, error)
        raise error

    def _read_body(self, response: requests.Response, started: float, endpoint: str) -> None:
        """Read the body whole, or fail: over ``max_response_bytes`` is terminal (no retry makes it
        smaller); a body still trickling in after ``max_response_seconds`` is a transport error."""
        chunks: list[bytes] = []
        size = 0
        try:
            for chunk in response.iter_content(64 * 1024):
                size += len(chunk)
                if size > self._max_response_bytes:
                    raise _BodyError(
                        TerminalApiError(
                            f"response body over {self._max_response_bytes} bytes",
                            endpoint=endpoint,
                            status_code=response.status_code,
                        )
                    )
                if time.perf_counter() - started > self._max_response_seconds:
                    raise _BodyError(
                        TransportError(
                            f"response body still arriving after {self._max_response_seconds:g} s",
                            endpoint=endpoint,
                        )
                    )
                chunks.append(chunk)
        finally:
            response.close()
        response._content = b"".join(chunks)  # what .content and .json() read from now on

    def _is_allowed_host(self, url: str) -> bool:
        host = (urlsplit(url).hostname or "").lower()
        for allowed in self._download_hosts:
            if host == allowed or (allowed.startswith("*.") and host.endswith(allowed[1:])):
                return True
        return False

    # -- building the request -------------------------------------------------------------------

    def _url(self, path_template: str, path_params: Mapping[str, object] | None) -> str:
        quoted = {name: quote(str(value), safe="") for name, value in (path_params or {}).items()}
        return self.base_url + path_template.format_map(quoted)

    def _is_api_url(self, url: str) -> bool:
        """True only for the API's own scheme, host and port (and base path): the key goes nowhere else."""
        base, target = urlsplit(self.base_url), urlsplit(url)
        return (
            target.scheme.lower() == base.scheme.lower()
            and target.netloc.lower() == base.netloc.lower()
            and (target.path + "/").startswith(base.path.rstrip("/") + "/")
        )

    # -- reading the response -------------------------------------------------------------------

    @staticmethod
    def _decode(response: requests.Response, *, envelope: bool) -> dict[str, Any]:
        try:
            body = jsonlib.loads(response.content)
        except ValueError:  # JSONDecodeError and UnicodeDecodeError are both ValueErrors
            raise ResponseShapeError("body is not JSON") from None
        if not isinstance(body, dict):
            raise ResponseShapeError("body is not a JSON object")
        if envelope and (body.get("status") != "OK" or "result" not in body):
            raise ResponseShapeError('body is not {"status": "OK", "result": ...}')
        return body

    def _error_from_response(self, response: requests.Response, endpoint: str) -> ApiError:
        status = response.status_code
        messages, detail = self._error_text(response)
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        common: dict[str, Any] = {"endpoint": endpoint, "status_code": status}
        if 200 <= status < 300:
            return MalformedResponseError(f"undocumented success status {status}: {detail}", **common)
        if 300 <= status < 400:
            return RedirectError(f"redirect not followed: {detail}", **common)
        if status == 429:
            return RateLimitedError(detail, retry_after=retry_after, **common)
        if 500 <= status < 600:
            return ServerError(detail, retry_after=retry_after, **common)
        if status == 400:
            return BadRequestError(detail, messages=messages, **common)
        if status in (401, 403):
            return UnauthorizedError(detail, **common)
        if status == 404:
            return NotFoundError(detail, **common)
        if status == 409:
            return ConflictError(detail, **common)
        return TerminalApiError(detail, **common)

    def _error_text(self, response: requests.Response) -> tuple[tuple[str, ...], str]:
        """Vidmob's error message(s) and a one-line detail, both scrubbed.

        Understands ``{"status":"ERROR","traceId","error":{"type","message"}}`` and the flat 401
        ``{"statusCode","message","error"}``; anything else falls back to the raw text or the reason.
        """
        try:
            body: Any = jsonlib.loads(response.content)
        except ValueError:
            body = None
        messages: tuple[str, ...] = ()
        kind: object = None
        trace_id: object = None
        if isinstance(body, dict):
            nested = body.get("error")
            if isinstance(nested, dict):
                messages = _as_messages(nested.get("message"))
                kind = nested.get("type") or nested.get("identifier")
            else:
                messages = _as_messages(body.get("message"))
                kind = nested
            trace_id = body.get("traceId")
        messages = tuple(self._clip(m) for m in messages)
        parts = ["; ".join(messages) or self._clip(response.text) or f"{response.reason or 'no body'}"]
        if isinstance(kind, str) and kind:
            parts.append(f"[{kind}]")
        if isinstance(trace_id, str | int) and str(trace_id):
            parts.append(f"(traceId={trace_id})")
        return messages, self._clip(" ".join(parts))

    def _describe_exception(self, exc: requests.RequestException) -> str:
        return self._clip(f"{type(exc).__name__}: {exc}")

    # -- reporting ------------------------------------------------------------------------------

    def _record(
        self,
        method: str,
        endpoint: str,
        status: int | None,
        started: float,
        error: ApiError | None,
        *,
        sent: bool = True,
    ) -> None:
        latency_ms = (time.perf_counter() - started) * 1000.0
        logger.debug("vidmob %s status=%s latency_ms=%.1f", endpoint, status, latency_ms)
        if self._on_attempt is None:
            return
        outcome: AttemptOutcome = "ok" if error is None else ("retryable" if error.retryable else "terminal")
        if not sent:
            outcome = "not_sent"
        self._on_attempt(
            Attempt(
                method=method,
                endpoint=endpoint,
                status_code=status,
                latency_ms=latency_ms,
                outcome=outcome,
                error=None if error is None else error.detail,
                retry_after=None if error is None else error.retry_after,
            )
        )


def _as_messages(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,) if value else ()
    if isinstance(value, list):
        return tuple(str(item) for item in value if item is not None and str(item))
    return ()
