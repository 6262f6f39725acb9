"""The kinds of durable row this system runs, and how they listen to each other: wired here, once.

Tagging knows nothing of scoring (no import cycle): the scoring loop learns that a tagging
job ended through the tagging kind's end hook, inside the transaction that ended it. Every
process that runs tasks imports this module (tasks/base.py), and so does the dispatcher.
"""

from __future__ import annotations

from services import scoring, tagging
from services.durable.kind import DurableKind
from services.scoring.batching import on_tagging_job_ended
from services.tagging.packing import on_pack_ended

KINDS: tuple[DurableKind, ...] = (tagging.KIND, scoring.KIND)

# A pack's end ends its members (or sends them alone) first: their own ends then run these hooks too.
tagging.KIND.ended.connect(on_pack_ended)
tagging.KIND.ended.connect(on_tagging_job_ended)
