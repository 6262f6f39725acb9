"""Small readers for 2xx bodies that raise ``ResponseShapeError`` instead of KeyError/TypeError.

Why: a 2xx that is not the documented JSON must become a retryable ``MalformedResponseError`` with a
message naming the field, not a crash deep inside a task.
"""

from __future__ import annotations

import re
from typing import Any

from clients.errors import ResponseShapeError


def result_of(body: dict[str, Any]) -> dict[str, Any]:
    """``body["result"]`` as an object (the envelope itself is checked by ``VidmobHttp``)."""
    return require_dict(body, "result", "body")


def require_dict(obj: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = obj.get(key)
    if not isinstance(value, dict):
        raise ResponseShapeError(f"{where}.{key} is missing or not an object")
    return value


def require_list(obj: dict[str, Any], key: str, where: str) -> list[Any]:
    value = obj.get(key)
    if not isinstance(value, list):
        raise ResponseShapeError(f"{where}.{key} is missing or not a list")
    return value


def require_str(obj: dict[str, Any], key: str, where: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise ResponseShapeError(f"{where}.{key} is missing or not a non-empty string")
    return value


_NOT_IN_AN_ID = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")


def require_id(obj: dict[str, Any], key: str, where: str, max_length: int = 255) -> str:
    """An identifier Vidmob hands out, which we store and send back in a path: a short string
    with no control characters. Anything else is an undocumented body, not an id to keep."""
    value = require_str(obj, key, where)
    if len(value) > max_length or _NOT_IN_AN_ID.search(value):
        raise ResponseShapeError(f"{where}.{key} is not an id (over {max_length} characters, or control characters)")
    return value


def optional_str(obj: dict[str, Any], key: str, where: str) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ResponseShapeError(f"{where}.{key} is not a string")
    return value


def optional_int(obj: dict[str, Any], key: str, where: str, default: int = 0) -> int:
    value = obj.get(key)
    if value is None:
        return default
    # bool is an int in Python, never a count in JSON.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ResponseShapeError(f"{where}.{key} is not an integer")
    return value


def optional_number(obj: dict[str, Any], key: str, where: str) -> float | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ResponseShapeError(f"{where}.{key} is not a number")
    return float(value)


def as_object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ResponseShapeError(f"{where} is not an object")
    return value
