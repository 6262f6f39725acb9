"""Reuse: an asset tagged recently, with the same client tags, is answered from PostgreSQL, with no
Vidmob call.

An asset is reusable when its URL has a tagging (an asset row with ``tagged_at``, of a COMPLETE job)
made within ``APERTURE_REUSE_TTL_S``, in the same dialect, by a job that asked for exactly the same
set of client tags (labels and descriptions, in any order): the latest such tagging is copied.
A request whose every asset is reusable is answered entirely: no Vidmob job at all. A request with
some reusable assets has those answered and only the others sent to Vidmob (partial reuse): the
submit step goes on with a claim narrowed to them (to a pack, the open-jobs cap and Vidmob), and the
job ends when Vidmob's job for the rest does. Its callback says, per asset, which tags were reused.

It is decided in the submit step's claim transaction (``steps.SUBMIT``'s hold, before packing, the
open-jobs cap and the intent row): one query over the request's URLs not reused yet, on the library's
"latest tagging of a URL" index. The copy is the request's own: its assets get the source's tags
(client tags included), ``tagged_at`` of the source (when the tags were made, so the TTL counts from
Vidmob's tagging however often they are reused) and ``reused_from_asset_id`` (the original, never a
copy). A request answered entirely then ends COMPLETE through the engine's ``lifecycle.end``, like a
poll that found it done: its callback is owed, the kind's end listeners run, and the library's
triggers move each URL's counts to it. A reused asset is never sent to Vidmob afterwards, by a later
submission attempt of its job or by a pack (services/tagging/lifecycle.py, packing.py), and Vidmob's
answer for the rest never writes on it (services/tagging/annotations.py).

A caller's ``fresh: true`` skips reuse (``jobs.fresh``), and so do the scoring loop's tagging jobs
(services/scoring/tag_batches.py): Vidmob must hold the tags to score the media.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Callable

from sqlalchemy import BigInteger, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from clients.tags import AssetRef
from config import Settings
from models import Job, JobState
from services.durable import lifecycle
from services.durable.messages import Outcome
from services.tagging.claims import SubmitClaim
from services.tagging.kind import KIND

log = logging.getLogger(__name__)

# Called with the number of assets reused for a job and whether that answered the whole job (the
# worker counts them: workers/metrics.py), in the transaction that reuses them.
OBSERVERS: list[Callable[[int, bool], None]] = []

# For each asset of the job not reused yet, the latest tagging of its URL it may copy (NULLs: none). The lateral
# probe is an index range scan of ix_assets_url_tagged_at_id (url = ..., tagged_at >= since),
# newest first, stopping at the first tagging whose job matches (a primary-key probe each).
SOURCES = text(
    """
SELECT a.id AS asset_id, a.url, a.external_id, src.id AS source_id
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
WHERE me.id = :job_id AND a.reused_from_asset_id IS NULL
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


def complete_or_narrow(
    session: Session, claim: SubmitClaim, *, settings: Settings, now: dt.datetime
) -> Outcome | SubmitClaim | None:
    """The submit step's first hold: the job completed from earlier tags (every asset reusable), the
    claim narrowed to the assets that still need Vidmob (some reusable: those are answered now), or
    None (none reusable, reuse off, or the caller asked for ``fresh``)."""
    if claim.fresh or settings.reuse_ttl_s <= 0:
        return None
    since = now - dt.timedelta(seconds=settings.reuse_ttl_s)
    rows = session.execute(SOURCES, {"job_id": claim.row_id, "since": since}).all()
    found = {r.asset_id: r.source_id for r in rows if r.source_id is not None}
    if not found:
        return None
    pairs = {"asset_ids": list(found), "source_ids": list(found.values())}
    session.execute(COPY_TAGS, pairs)
    session.execute(MARK_REUSED, pairs)
    rest = tuple(AssetRef(url=r.url, id=r.external_id) for r in rows if r.source_id is None)
    if rest:
        log.info("job %s: the tags of %d assets were reused, %d go to Vidmob", claim.row_id, len(found), len(rest))
        for observe in OBSERVERS:
            observe(len(found), False)
        return dataclasses.replace(claim, assets=rest)
    # Answered, not tried: the claim's count of submission attempts is given back.
    outcome = lifecycle.end(
        session, KIND, claim, JobState.COMPLETE, now,
        values={"completed_at": now, "submit_attempts": Job.submit_attempts - 1},
    )  # fmt: skip
    if not outcome.stale:
        log.info("job %s: the tags of its %d assets were reused, no Vidmob call", claim.row_id, len(found))
        for observe in OBSERVERS:
            observe(len(found), True)
    return outcome
