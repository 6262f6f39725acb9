"""What the engine needs to know about a kind of durable row, declared once per domain."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Generic, Protocol, TypeVar

from sqlalchemy.orm import InstrumentedAttribute, Session

from models import Durable
from services.durable.messages import Outcome

M = TypeVar("M", bound=Durable)
S = TypeVar("S", bound=StrEnum)
S_contra = TypeVar("S_contra", bound=StrEnum, contravariant=True)


class EndListener(Protocol[S_contra]):
    """Runs inside the transaction that ended a row of the kind, with the state it ended in, and
    returns what its own changes owe (messages, callbacks): they are sent after the same commit.
    Called with positional arguments, so a listener names them as it likes (``job_id`` for the row)."""

    def __call__(self, session: Session, row_id: uuid.UUID, state: S_contra, now: dt.datetime, /) -> Outcome: ...


class EndHook(Generic[S]):
    """The one way a domain learns that a row of another domain ended (no import between
    them): the scoring loop listens to tagging jobs. Connected by services/domains.wire()."""

    def __init__(self) -> None:
        self._listeners: list[EndListener[S]] = []

    def connect(self, listener: EndListener[S]) -> None:
        if listener not in self._listeners:
            self._listeners.append(listener)

    @property
    def listeners(self) -> tuple[EndListener[S], ...]:
        return tuple(self._listeners)


@dataclass(frozen=True, eq=False)
class DurableKind(Generic[M, S]):
    name: str  # in logs and metrics: "job", "scored_media"
    model: type[M]
    # The model's state enum: every state the engine is given or reads back is one of its members.
    states: type[S]
    # The keyword argument that names the row in this kind's messages (and the log field).
    id_kwarg: str
    # The states whose next look ``next_poll_at`` drives (the model's looked-at states), and the task
    # that looks at a row in each.
    look_tasks: Mapping[S, str]
    # Not ended: the states a row can end from (the model's active states).
    active_states: frozenset[S]
    # The caller's callback: the task id prefix (a stable, public contract) and its arguments.
    callback_prefix: str
    callback_kwargs: Callable[[Session, M], dict[str, Any]]
    # The api_attempts column that names an attempt's owner of this kind.
    attempt_owner: str
    # A task other than ``look_tasks[state]`` for some rows (None: the state's own), decided from the
    # row's ``route_columns``: given a claim, or a due row the dispatcher read back with them.
    route: Callable[[S, Any], str | None] | None = None
    route_columns: tuple[InstrumentedAttribute[Any], ...] = ()
    ended: EndHook[S] = field(default_factory=EndHook)

    def look_task(self, state: S, row: object) -> str:
        """The task that looks at ``row`` (a claim, or a due row with ``route_columns``) in ``state``."""
        routed = self.route(state, row) if self.route is not None else None
        return routed or self.look_tasks[state]

    def callback_task_id(self, row_id: uuid.UUID, generation: int = 0) -> str:
        """Stable per end of the row: the same id when the same end is re-sent (a receiver
        drops the repeat), a new one after an operator retry (a new end, a new callback)."""
        base = f"{self.callback_prefix}-{row_id}"
        return base if generation == 0 else f"{base}-retry-{generation}"


# A kind of any model and state enum: what the engine's shared code (claims, attempts, callbacks,
# the sweeper) takes.
AnyKind = DurableKind[Any, Any]
