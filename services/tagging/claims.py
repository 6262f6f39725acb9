"""What a tagging step holds once it has claimed a job: what it sends to Vidmob, or what it polls.

A submission sends the job's own assets, except those answered by reuse (services/tagging/reuse.py);
a pack's submission sends its members' assets, each URL once, named after its first asset row
(``PACK_ASSET_ID_PREFIX``): callers' own ids may collide between the requests of one pack.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import exists, func, select, update
from sqlalchemy.engine import Row
from sqlalchemy.orm import Session

from clients.tags import AssetRef, ClientTag
from models import ApiAttempt, Asset, Job, members_of_pack
from services.durable import attempts
from services.durable.claims import Claim

log = logging.getLogger(__name__)

# A packed asset's id at Vidmob (the media dialect's creative id).
PACK_ASSET_ID_PREFIX = "aperture-asset-"


@dataclass(frozen=True, kw_only=True)
class SubmitClaim(Claim):
    COLUMNS = (
        Job.dialect,
        Job.submit_attempts.label("attempt"),
        Job.client_tags,
        Job.duplicate_risk,
        Job.fresh,
        Job.batch,
        Job.is_pack,
        Job.packed_in_job_id,
        Job.waiting_since,
    )
    # A worker that died mid-call is taken over once its lease has run out (the intent row
    # makes the possible duplicate visible).
    TAKEOVER_AFTER_LEASE = True

    dialect: str
    attempt: int
    assets: tuple[AssetRef, ...]
    client_tags: tuple[ClientTag, ...]
    duplicate_risk: bool
    fresh: bool  # the caller's `fresh: true`: never answered by reuse
    batch: bool  # the caller's consent to share a Vidmob job (services/tagging/packing.py)
    is_pack: bool  # a pack: its assets are its members'
    packed_in_job_id: uuid.UUID | None  # set once packed: a request sent alone after its pack failed
    waiting_since: dt.datetime | None  # waiting for a slot under the open-jobs cap (services/tagging/capacity.py)

    @classmethod
    def claim_values(cls, row_id: uuid.UUID) -> dict[str, Any]:
        """What claiming a submission records: one more attempt, and the duplicate risk when an
        earlier POST's outcome is unknown (no HTTP answer: the worker died mid-call, a timeout,
        a dropped connection; or a 5xx from a gateway): Vidmob may have created a job for it."""
        unknown_before = exists().where(ApiAttempt.job_id == row_id, attempts.may_have_created_work())
        return {
            "submit_attempts": Job.submit_attempts + 1,
            "duplicate_risk": Job.duplicate_risk | unknown_before,
            # A pack whose submission begins takes no more members (services/tagging/packing.py).
            "pack_open_until": None,
        }

    @classmethod
    def from_row(cls, session: Session, row: Row[Any]) -> SubmitClaim:
        """The job's assets and client tags, as Vidmob will get them."""
        if row.duplicate_risk:
            log.warning(
                "resubmitting job %s after an attempt of unknown outcome: Vidmob may hold a duplicate", row.row_id
            )
        if row.is_pack:
            refs = pack_assets(session, row.row_id)
            # Its members' assets as they are now (an operator may have ended a member meanwhile).
            session.execute(update(Job).where(Job.id == row.row_id).values(asset_count=len(refs)))
        else:
            # An asset answered by reuse (services/tagging/reuse.py) is never sent.
            assets = session.execute(
                select(Asset.url, Asset.external_id)
                .where(Asset.job_id == row.row_id, Asset.reused_from_asset_id.is_(None))
                .order_by(Asset.position)
            ).all()
            refs = tuple(AssetRef(url=a.url, id=a.external_id) for a in assets)
        return cls.of(
            row,
            assets=refs,
            client_tags=tuple(ClientTag(label=t["label"], description=t.get("description")) for t in row.client_tags),
        )


def pack_assets(session: Session, pack_id: uuid.UUID) -> tuple[AssetRef, ...]:
    """What a pack sends to Vidmob: each URL of its members' assets once, in the order they joined,
    named after its first asset row; an asset answered by reuse already is not sent."""
    rows = session.execute(
        select(func.min(Asset.id).label("first"), Asset.url)
        .join(Job, Job.id == Asset.job_id)
        .where(*members_of_pack(pack_id), Asset.reused_from_asset_id.is_(None))
        .group_by(Asset.url)
        .order_by(func.min(Asset.id))
    ).all()
    return tuple(AssetRef(url=r.url, id=f"{PACK_ASSET_ID_PREFIX}{r.first}") for r in rows)


@dataclass(frozen=True, kw_only=True)
class PollClaim(Claim):
    COLUMNS = (Job.dialect, Job.vidmob_job_id, Job.poll_count, Job.asset_count, Job.submitted_at)
    OPTIMISTIC = True  # a status GET: read, call, then record with a compare-and-set

    dialect: str
    vidmob_job_id: str
    poll_count: int
    asset_count: int
    submitted_at: dt.datetime | None
