"""Who sent a request, and what that caller may ask for.

A caller is an application's name. On RabbitMQ it is the message's AMQP ``user_id`` property, which
the broker checks against the user of the connection that published it (a message claiming another
user is refused by RabbitMQ, never delivered), so it cannot be forged by another application that has
a broker user of its own. On Redis there is no such check: the caller is the request's declared
``caller`` field, self-declared (give each application its own Redis ACL user so that at least the
broker access is its own; docs/operations.md). A request that names none is the ``default`` caller's:
every caller of the system before callers existed.

``APERTURE_CALLERS`` configures callers by name (weight, callback allowlist, budget); a name not
configured is accepted as ``default``, accepted under its own name (with its own names only for
callbacks), or refused, as ``APERTURE_UNKNOWN_CALLER`` says.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from config import Settings
from config.settings import CALLER_PATTERN, DEFAULT_CALLER, CallerSettings

CALLER_FIELD = "caller"
_NAME = re.compile(CALLER_PATTERN)


@dataclass(frozen=True)
class Caller:
    """The caller a request is stored under, and the reason it is refused (None: accepted)."""

    name: str
    refused: str | None = None


def resolve(payload: dict[str, Any], broker_user: str | None, settings: Settings) -> Caller:
    """The request's caller: the broker's user (RabbitMQ's checked ``user_id``) when the broker
    gives one, else the declared ``caller`` field, else ``default``."""
    declared = payload.get(CALLER_FIELD)
    if declared is not None and not (isinstance(declared, str) and _NAME.match(declared)):
        return Caller(DEFAULT_CALLER, f"caller: must be a name matching {CALLER_PATTERN}")
    if broker_user is not None:
        if not _NAME.match(broker_user):
            return Caller(DEFAULT_CALLER, f"the broker user {broker_user[:100]!r} is not a caller name")
        if declared is not None and declared != broker_user:
            return Caller(
                broker_user, f"caller: {declared!r} is not the broker user that sent the request ({broker_user!r})"
            )
        name = broker_user
    else:
        name = declared or DEFAULT_CALLER
    if name == DEFAULT_CALLER or name in settings.callers:
        return Caller(name)
    if settings.unknown_caller == "reject":
        return Caller(name, f"caller: {name!r} is not a configured caller (APERTURE_CALLERS)")
    if settings.unknown_caller == "accept":
        return Caller(name)
    return Caller(DEFAULT_CALLER)


def config_of(name: str, settings: Settings) -> CallerSettings:
    return settings.caller(name) or CallerSettings()


def weight(name: str, settings: Settings) -> float:
    return config_of(name, settings).weight


def callback_refusal(name: str, task: str, queue: str | None, settings: Settings) -> str | None:
    """Why ``name`` may not have its callback sent as ``task`` on ``queue`` (None: it may).

    A configured allowlist is exact for queues and by prefix for task names; without one a caller
    may use only its own names (a queue ``<caller>`` or ``<caller>.*``, tasks ``<caller>.*``), and the
    default caller the contract's rules alone (any queue and task but this system's and the broker's)."""
    config = settings.caller(name)
    queues = config.callback_queues if config else None
    prefixes = config.callback_task_prefixes if config else None
    if name != DEFAULT_CALLER:
        queues = queues if queues is not None else (name,)
        prefixes = prefixes if prefixes is not None else (f"{name}.",)
    shown = queue if queue is not None else "the default queue"
    if queues is not None and not (queue in queues or (queue is not None and _own_queue(name, queue, config))):
        return f"callback.queue: {shown!r} is not a queue caller {name!r} may send callbacks to"
    if prefixes is not None and not task.startswith(tuple(prefixes)):
        return f"callback.task: {task!r} is not a task caller {name!r} may name (allowed: {', '.join(prefixes)}*)"
    return None


def _own_queue(name: str, queue: str, config: CallerSettings | None) -> bool:
    # Unconfigured queues: the caller's own name, or a queue under it.
    return (
        (config is None or config.callback_queues is None) and name != DEFAULT_CALLER and queue.startswith(f"{name}.")
    )


def metric_label(name: str, settings: Settings) -> str:
    """Bounded cardinality for metrics: configured callers and ``default`` by name, the rest ``other``."""
    return name if name == DEFAULT_CALLER or name in settings.callers else "other"
