"""What PostgreSQL can store, from values nobody here controls (callers' payloads, Vidmob's answers).

PostgreSQL stores neither NUL in text or JSON, nor Infinity or NaN in JSON, nor unpaired surrogates: such a value would
fail its whole transaction with a DataError, and the request or result would be lost with it. A
value is kept instead, with U+FFFD in their place (the contract rejects such input anyway; an
answer from Vidmob is kept as close to what was said as the column allows).
"""

from __future__ import annotations

import json
import math
import re
from enum import Enum
from typing import Any, overload

MAX_STORED_PAYLOAD_CHARS = 64_000
_UNSTORABLE = re.compile("[\\x00\\ud800-\\udfff]")


@overload
def pg_safe(value: str) -> str: ...
@overload
def pg_safe(value: Any) -> Any: ...
def pg_safe(value: Any) -> Any:
    """``value`` with every string (keys included) storable by PostgreSQL."""
    if isinstance(value, Enum):
        return value
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no Infinity or NaN; the stored payload says what was sent
    if isinstance(value, str):
        return _UNSTORABLE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {pg_safe(str(k)): pg_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [pg_safe(v) for v in value]
    return value


def clipped(value: str, length: int) -> str:
    """Storable and at most ``length`` characters (a VARCHAR column's)."""
    return pg_safe(value)[:length]


def storable(payload: Any) -> dict[str, Any]:
    """A request as received, for audit and retry; absurdly large ones keep their head only."""
    text = json.dumps(payload, default=repr)
    if len(text) <= MAX_STORED_PAYLOAD_CHARS:
        return payload if isinstance(payload, dict) else {"payload": payload}
    return {"truncated": True, "size": len(text), "head": text[:MAX_STORED_PAYLOAD_CHARS]}
