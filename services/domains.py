"""The kinds of durable row this system runs, and how they listen to each other.

Tagging knows nothing of scoring (no import cycle): the scoring loop learns that a tagging job
ended through the tagging kind's end hook, inside the transaction that ended it. ``wire()`` connects
the hooks; every process that runs steps calls it once at start (the Celery app factory,
workers/application.create_app, which the dispatcher and Flower use too; the tests' in-process tier).
"""

from __future__ import annotations

from typing import Any

from services import scoring, tagging
from services.durable.kind import DurableKind
from services.scoring.tag_batches import on_tagging_job_ended
from services.tagging.capacity import on_job_ended
from services.tagging.packing import on_pack_ended

KINDS: tuple[DurableKind[Any, Any], ...] = (tagging.KIND, scoring.KIND)


def wire() -> tuple[DurableKind[Any, Any], ...]:
    """Connect the kinds' end hooks (idempotent: a hook is connected once however often this runs),
    and return the kinds."""
    # A pack's end ends its members (or sends them alone) first: their own ends then run these hooks too.
    tagging.KIND.ended.connect(on_pack_ended)
    tagging.KIND.ended.connect(on_tagging_job_ended)
    # Last: by then the job's end (and its pack's members') is written, so its slot counts as free.
    tagging.KIND.ended.connect(on_job_ended)
    return KINDS
