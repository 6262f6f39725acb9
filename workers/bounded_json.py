"""What a message may hold before it reaches the prefork pool.

The worker's main process decodes every message and pickles its arguments to hand them to a
pool process. A message nested a few hundred levels deep makes that pickling raise
RecursionError in the main process: the worker dies, and with ``acks_late`` the message goes
back to the queue to kill the next one. So the worker decodes JSON through ``bounded_loads``:
a body over ``APERTURE_MAX_MESSAGE_BYTES`` or nested deeper than ``APERTURE_MAX_MESSAGE_DEPTH``
is replaced by arguments that say why (``services.contract.REFUSED_FIELD``), keeping the
caller's ``request_id`` and ``callback`` when they are usable, so the task stores a rejected
row with that reason and tells the caller. Nothing else in the message is ever looked at.

Other content types (pickle, YAML, ...) never get this far: ``accept_content = ["json"]``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from kombu.serialization import register
from kombu.utils.json import dumps
from kombu.utils.json import loads as kombu_loads

from services.contract import REFUSED_FIELD

log = logging.getLogger(__name__)

# Celery's message embed (protocol 2) for a task that has no callbacks of its own.
_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
_KEPT_MAX_CHARS = 255
# Bodies this many times over the limit are refused without being decoded at all.
_UNREAD_FACTOR = 8


def depth_exceeds(value: Any, limit: int) -> bool:
    """True when ``value`` nests lists/dicts more than ``limit`` levels deep (no recursion)."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children: Iterable[Any]
        if isinstance(node, dict):
            children = node.values()
        elif isinstance(node, list | tuple):
            children = node
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list | tuple))
    return False


def refused_body(reason: str, decoded: Any = None) -> list[Any]:
    """A protocol-2 body ``[args, kwargs, embed]`` whose kwargs carry only the reason, and the
    caller's request_id and callback when they are short, flat strings."""
    kwargs: dict[str, Any] = {REFUSED_FIELD: reason}
    original = decoded[1] if isinstance(decoded, list) and len(decoded) == 3 else None
    if isinstance(original, dict):
        request_id = original.get("request_id")
        if isinstance(request_id, str) and len(request_id) <= _KEPT_MAX_CHARS:
            kwargs["request_id"] = request_id
        callback = original.get("callback")
        if isinstance(callback, dict) and all(
            isinstance(k, str) and isinstance(v, str) and len(v) <= _KEPT_MAX_CHARS for k, v in callback.items()
        ):
            kwargs["callback"] = callback
    return [[], kwargs, _EMBED]


def make_bounded_loads(max_bytes: int, max_depth: int) -> Callable[[str | bytes], Any]:
    def bounded_loads(data: str | bytes) -> Any:
        if len(data) > _UNREAD_FACTOR * max_bytes:
            log.warning("refused a message of %d bytes unread (limit %d)", len(data), max_bytes)
            return refused_body(f"message of {len(data)} bytes refused: at most {max_bytes} bytes")
        try:
            value = kombu_loads(data)
        except RecursionError:
            log.warning("refused a message nested too deeply to decode")
            return refused_body(f"message refused: nested more than {max_depth} levels deep")
        if len(data) > max_bytes:
            # Read only to find who sent it (request_id, callback), so the caller hears why.
            log.warning("refused a message of %d bytes (limit %d)", len(data), max_bytes)
            return refused_body(f"message of {len(data)} bytes refused: at most {max_bytes} bytes", value)
        if depth_exceeds(value, max_depth):
            log.warning("refused a message nested more than %d levels deep", max_depth)
            return refused_body(f"message refused: nested more than {max_depth} levels deep", value)
        return value

    return bounded_loads


def install(max_bytes: int, max_depth: int) -> None:
    """Decode ``application/json`` with the bounds, in this process (the worker's)."""
    register(
        "json",
        dumps,
        make_bounded_loads(max_bytes, max_depth),
        content_type="application/json",
        content_encoding="utf-8",
    )
