"""Reuse (issue 9, part 3): a request whose every asset was tagged recently, with the same client
tags, is answered from PostgreSQL, with no Vidmob call.

An asset is reusable when its URL has a tagging (an asset row with ``tagged_at``, of a COMPLETE job)
made within ``APERTURE_REUSE_TTL_S``, in the same dialect, by a job that asked for exactly the same
set of client tags (labels and descriptions, in any order): the latest such tagging is copied. Only
a request whose every asset is reusable is answered this way; one unknown asset sends the whole
request to Vidmob as before (reusing part of a request is a possible follow-up: it would need a
Vidmob job for the rest and a job that ends from two sources).

It is decided in the submit step's claim transaction (``steps.SUBMIT``'s hold, before the open-jobs
cap and the intent row): one query over the request's URLs, on the library's "latest tagging of a
URL" index. The copy is the request's own: its assets get the source's tags (client tags included),
``tagged_at`` of the source (when the tags were made, so the TTL counts from Vidmob's tagging however
often they are reused) and ``reused_from_asset_id`` (the original, never a copy). Then the job ends
COMPLETE through the engine's ``lifecycle.end``, like a poll that found it done: its callback is
owed, the kind's end listeners run, and the library's triggers move each URL's counts to it.

A caller's ``fresh: true`` skips reuse (``jobs.fresh``), and so do the scoring loop's tagging jobs
(services/scoring/batching.py): Vidmob must hold the tags to score the media.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable

from sqlalchemy import BigInteger, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from config import Settings
from models import Job, JobState
from services.durable import lifecycle
from services.durable.messages import Outcome
from services.tagging.kind import KIND

log = logging.getLogger(__name__)

# Called with the number of assets of each job answered by reuse (the worker counts them:
# workers/metrics.py), in the transaction that ends the job.
OBSERVERS: list[Callable[[int], None]] = []

# For each asset of the job, the latest tagging of its URL it may copy (NULLs: none). The lateral
# probe is an index range scan of ix_assets_url_tagged_at_id (url = ..., tagged_at >= since),
# newest first, stopping at the first tagging whose job matches (a primary-key probe each).
SOURCES = text(
    """
SELECT a.id AS asset_id, src.id AS source_id
FROM jobs me
JOIN assets a ON a.job_id = me.id
LEFT JOIN LATERAL (
    SELECT s.id
    FROM assets s
    JOIN jobs j ON j.id = s.job_id
    WHERE s.url = a.url AND s.tagged_at IS NOT NULL AND s.tagged_at >= :since AND s.job_id <> me.id
      AND j.state = 'complete' AND j.dialect = me.dialect
      AND j.client_tags @> me.client_tags AND j.client_tags <@ me.client_tags
    ORDER BY s.tagged_at DESC, s.id DESC
    LIMIT 1
) AS src ON true
WHERE me.id = :job_id
ORDER BY a.position
"""
)

_PAIRS = "unnest(:asset_ids, :source_ids) AS m(asset_id, source_id)"
COPY_TAGS = text(
    f"""
INSERT INTO tags (asset_id, category, label)
SELECT m.asset_id, t.category, t.label
FROM {_PAIRS}
JOIN tags t ON t.asset_id = m.source_id
ON CONFLICT (asset_id, category, label) DO NOTHING
"""  # noqa: S608 (constants of this module only)
).bindparams(bindparam("asset_ids", type_=ARRAY(BigInteger)), bindparam("source_ids", type_=ARRAY(BigInteger)))
# One statement, after the tags: the library's triggers count each asset once, when it is tagged.
MARK_REUSED = text(
    f"""
UPDATE assets a
SET tagged_at = s.tagged_at, reused_from_asset_id = coalesce(s.reused_from_asset_id, s.id)
FROM {_PAIRS}
JOIN assets s ON s.id = m.source_id
WHERE a.id = m.asset_id AND a.tagged_at IS NULL
"""  # noqa: S608 (constants of this module only)
).bindparams(bindparam("asset_ids", type_=ARRAY(BigInteger)), bindparam("source_ids", type_=ARRAY(BigInteger)))


def sources(session: Session, job_id: object, *, settings: Settings, now: dt.datetime) -> dict[int, int] | None:
    """Asset id -> the asset whose tags it may copy, for every asset of the job; None when one of
    them has none (or reuse is off)."""
    if settings.reuse_ttl_s <= 0:
        return None
    since = now - dt.timedelta(seconds=settings.reuse_ttl_s)
    rows = session.execute(SOURCES, {"job_id": job_id, "since": since}).all()
    if not rows or any(r.source_id is None for r in rows):
        return None
    return {r.asset_id: r.source_id for r in rows}


def complete_if_reusable(
    session: Session, claim: lifecycle.Claim, *, settings: Settings, now: dt.datetime, fresh: bool
) -> Outcome | None:
    """The submit step's first hold: the job completed from earlier tags, or None to go on to Vidmob."""
    if fresh:
        return None
    found = sources(session, claim.row_id, settings=settings, now=now)
    if found is None:
        return None
    pairs = {"asset_ids": list(found), "source_ids": list(found.values())}
    session.execute(COPY_TAGS, pairs)
    session.execute(MARK_REUSED, pairs)
    # Answered, not tried: the claim's count of submission attempts is given back.
    outcome = lifecycle.end(
        session, KIND, claim, JobState.COMPLETE.value, now,
        values={"completed_at": now, "submit_attempts": Job.submit_attempts - 1},
    )  # fmt: skip
    if not outcome.stale:
        log.info("job %s: the tags of its %d assets were reused, no Vidmob call", claim.row_id, len(found))
        for observe in OBSERVERS:
            observe(len(found))
    return outcome
