"""What a step decided, as plain values, to be sent once its transaction has committed.

A ``Message`` is a task name, its keyword arguments and a countdown: nothing Celery-specific,
so services never import the broker, and tests read a decision as data. An ``Outcome`` is the
result of one step: the state reached, the messages owed, and the callbacks owed.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from services.durable.kind import AnyKind


@dataclass(frozen=True)
class Message:
    task: str
    kwargs: dict[str, Any]
    countdown: float = 0.0
    task_id: str | None = None  # stable ids (callbacks) let a receiver drop a repeat
    queue: str | None = None  # None: the task's own route (config/tasks.py)


@dataclass(frozen=True, eq=False)
class OwedCallback:
    """A row whose callback may be owed: delivered after commit if it is still pending."""

    kind: AnyKind
    row_id: uuid.UUID


@dataclass
class Outcome:
    state: StrEnum | None = None
    messages: list[Message] = field(default_factory=list)
    callbacks: list[OwedCallback] = field(default_factory=list)
    stale: bool = False  # the token did not match: someone else owns the row now
    moved: list[uuid.UUID] = field(default_factory=list)  # the rows a bulk transition (end_where, wake_where) moved

    def extend(self, other: Outcome) -> Outcome:
        self.messages.extend(other.messages)
        self.callbacks.extend(other.callbacks)
        return self
