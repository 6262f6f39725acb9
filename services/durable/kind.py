"""What the engine needs to know about a kind of durable row, declared once per domain."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from models import Durable
from services.durable.messages import Outcome

# A listener runs inside the transaction that ended a row, and returns what its own
# changes owe (messages, callbacks): they are sent after the same commit.
EndListener = Callable[[Session, uuid.UUID, Any, dt.datetime], Outcome]


class EndHook:
    """The one way a domain learns that a row of another domain ended (no import between
    them): the scoring loop listens to tagging jobs. Wired in services/domains.py."""

    def __init__(self) -> None:
        self._listeners: list[EndListener] = []

    def connect(self, listener: EndListener) -> None:
        if listener not in self._listeners:
            self._listeners.append(listener)

    @property
    def listeners(self) -> tuple[EndListener, ...]:
        return tuple(self._listeners)


@dataclass(frozen=True, eq=False)
class DurableKind:
    name: str  # in logs and metrics: "job", "scored_media"
    model: type[Durable]
    # The keyword argument that names the row in this kind's messages (and the log field).
    id_kwarg: str
    # The states whose next look is driven by next_poll_at, and the task that looks at each.
    look_tasks: Mapping[str, str]
    # The states a row can end from by the engine's end(); bulk ends name their own.
    active_states: tuple[str, ...]
    # The caller's callback: the task id prefix (a stable, public contract) and its arguments.
    callback_prefix: str
    callback_kwargs: Callable[[Session, Any], dict[str, Any]]
    # The api_attempts column that names an attempt's owner of this kind.
    attempt_owner: str
    ended: EndHook = field(default_factory=EndHook)

    def callback_task_id(self, row_id: uuid.UUID, generation: int = 0) -> str:
        """Stable per end of the row: the same id when the same end is re-sent (a receiver
        drops the repeat), a new one after an operator retry (a new end, a new callback)."""
        base = f"{self.callback_prefix}-{row_id}"
        return base if generation == 0 else f"{base}-retry-{generation}"
