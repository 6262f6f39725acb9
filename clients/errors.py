"""The one error taxonomy for every Vidmob call.

Why a taxonomy instead of raw ``requests`` exceptions: the retry policy lives in one place (the caller: a
Celery task or a service), and it only has to ask ``exc.retryable``. The HTTP client never retries.

- ``RetryableApiError``: might succeed on the next try. Connection errors and timeouts
  (``TransportError``), 429 (``RateLimitedError``, with ``retry_after`` when the server sent one), 5xx
  (``ServerError``), a 2xx whose body is not the documented JSON (``MalformedResponseError``), and calls
  the fleet's own gates held back before sending (``CircuitOpenError``, ``FleetRateLimitedError``).
- ``TerminalApiError``: will fail the same way again. 3xx (``RedirectError``: redirects are never
  followed), 400 (``BadRequestError``), 401/403 (``UnauthorizedError``), 404 (``NotFoundError``),
  409 (``ConflictError``), any other 4xx, and requests this client refuses to send
  (``UnsupportedRequestError``).

Every message, ``detail`` and ``messages`` entry has already been scrubbed of the API key by the client
before the exception is built; exceptions never hold the response, the request or the headers.
"""

from __future__ import annotations

from typing import Any, ClassVar


class ResponseShapeError(ValueError):
    """A 2xx body does not have the documented shape.

    Raised by the parsers of the typed clients; ``VidmobHttp.request`` turns it into a
    ``MalformedResponseError`` (retryable) so the attempt is recorded with the right outcome.
    """


class ApiError(Exception):
    """Any failed Vidmob call. ``retryable`` tells the caller whether trying again can help."""

    retryable: ClassVar[bool] = False

    def __init__(
        self,
        detail: str,
        *,
        endpoint: str,
        status_code: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.detail = detail
        self.endpoint = endpoint
        self.status_code = status_code
        self.retry_after = retry_after
        super().__init__(self._message())

    def _message(self) -> str:
        status = "no response" if self.status_code is None else f"HTTP {self.status_code}"
        return f"{self.endpoint} -> {status}: {self.detail}"

    def __reduce__(self) -> tuple[Any, ...]:
        # Celery pickles exceptions (retries, result/backends); keyword-only __init__ arguments would
        # break the default Exception pickling, so rebuild from the attribute dict instead.
        return (_rebuild_api_error, (type(self), self.args, dict(self.__dict__)))


def _rebuild_api_error(cls: type[ApiError], args: tuple[Any, ...], state: dict[str, Any]) -> ApiError:
    error = cls.__new__(cls, *args)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


class RetryableApiError(ApiError):
    """Might succeed on the next try: the caller may retry with backoff (honoring ``retry_after``)."""

    retryable: ClassVar[bool] = True


class TerminalApiError(ApiError):
    """Will fail the same way again: never retry it."""

    retryable: ClassVar[bool] = False


class TransportError(RetryableApiError):
    """No HTTP response: connection refused/reset, DNS failure, connect or read timeout, broken body."""


class CircuitOpenError(RetryableApiError):
    """Not sent: the endpoint is failing for the whole fleet, and this call is not the one probe
    allowed per interval (clients/circuit.py). Retry later, like a 503."""


class FleetRateLimitedError(RetryableApiError):
    """Not sent: the fleet's rate limit for this endpoint family is reached (or a 429 paused it for
    the whole fleet) and waiting for a slot would hold the worker longer than
    ``APERTURE_RATE_LIMIT_MAX_WAIT_S`` (clients/ratelimit.py). ``retry_after`` is the wait that was
    still ahead; the row is looked at again later instead."""


class RateLimitedError(RetryableApiError):
    """429. ``retry_after`` is set when the server sent a usable Retry-After (seconds or HTTP-date)."""


class ServerError(RetryableApiError):
    """Any 5xx. ``retry_after`` is set when the server sent one (e.g. with a 503)."""


class MalformedResponseError(RetryableApiError):
    """A 2xx that is not the documented JSON (not JSON, no ``{"status":"OK","result":...}``, bad fields)."""


class ResultsDownloadError(RetryableApiError):
    """Fetching a signed results link failed; polling again yields a fresh link, so it is retryable."""


class RedirectError(TerminalApiError):
    """3xx: redirects are never followed (the bearer key must not travel to another place)."""


class BadRequestError(TerminalApiError):
    """400. ``messages`` holds Vidmob's ``error.message`` (a string or a list of strings) as a tuple."""

    def __init__(
        self,
        detail: str,
        *,
        endpoint: str,
        status_code: int | None = 400,
        retry_after: float | None = None,
        messages: tuple[str, ...] = (),
    ) -> None:
        self.messages = messages
        super().__init__(detail, endpoint=endpoint, status_code=status_code, retry_after=retry_after)


class UnauthorizedError(TerminalApiError):
    """401 or 403: a missing, wrong or under-scoped key. Retrying does not fix it; an operator must."""


class NotFoundError(TerminalApiError):
    """404: the job or media does not exist (for this key's organization)."""


class ConflictError(TerminalApiError):
    """409: e.g. the same media ``id`` + ``version`` was already submitted for scoring."""


class DisallowedHostError(TerminalApiError):
    """An absolute URL (a signed download) on a host that is neither the API's nor allowed; never fetched."""


class UnsupportedRequestError(TerminalApiError):
    """The request cannot be expressed in the chosen API dialect; raised before any HTTP call."""
