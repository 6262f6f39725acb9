"""Vidmob's two error envelopes, built in one place so every endpoint answers errors the same way.

* Application errors (400, 404, 409)::

    {"status": "ERROR", "traceId": "<digits>",
     "error": {"identifier": "vidmob.<system>.<exception>", "type": "BADREQUESTEXCEPTION", "system": "...",
               "message": "<string or list of strings>"}}

  Validation failures use a list of strings (class-validator style, as in Vidmob's OpenAPI examples); semantic
  failures (not found, conflict, not scored yet) use one string.
* Gateway errors (401 and anything the gateway itself produces: injected 429/5xx, unknown routes)::

    {"statusCode": 401, "message": "Request is Unauthorized", "error": "Unauthorized"}
"""

from __future__ import annotations

import secrets
from http import HTTPStatus
from typing import Any

_TYPES = {
    400: "BADREQUESTEXCEPTION",
    404: "NOTFOUNDEXCEPTION",
    409: "CONFLICTEXCEPTION",
}

# Systems named in Vidmob's published examples.
SYSTEM_BFF = "api-bff"
SYSTEM_SCORING = "scoring"
SYSTEM_APERTURE = "aperture"


class ApiError(Exception):
    """An error answered with the application envelope.

    ``identifier_system`` differs from ``system`` in one published case: the 409 on ``POST /v1/media`` has
    identifier ``vidmob.api-bff.conflictexception`` but system ``scoring``.
    """

    def __init__(
        self,
        status: int,
        message: str | list[str],
        system: str = SYSTEM_BFF,
        identifier_system: str | None = None,
    ) -> None:
        super().__init__(message if isinstance(message, str) else "; ".join(message))
        self.status = status
        self.message = message
        self.system = system
        self.identifier_system = identifier_system or system

    def body(self) -> dict[str, Any]:
        error_type = _TYPES.get(self.status, "BADREQUESTEXCEPTION")
        return {
            "status": "ERROR",
            "traceId": new_trace_id(),
            "error": {
                "identifier": f"vidmob.{self.identifier_system}.{error_type.lower()}",
                "type": error_type,
                "system": self.system,
                "message": self.message,
            },
        }


def new_trace_id() -> str:
    """A numeric trace id like the published examples ("6697071182135860597")."""
    return str(secrets.randbelow(9 * 10**18) + 10**18)


UNAUTHORIZED_BODY: dict[str, Any] = {
    "statusCode": 401,
    "message": "Request is Unauthorized",
    "error": "Unauthorized",
}


def gateway_body(status: int, message: str | None = None) -> dict[str, Any]:
    """The flat gateway shape for a status the application layer never produces (429, 5xx, route 404)."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    if status == 429 and message is None:
        message = "ThrottlerException: Too Many Requests"
    return {"statusCode": status, "message": message or phrase, "error": phrase}
