"""Values from Vidmob are checked before they are stored: whatever a COMPLETE answer holds, the
transaction that stores it succeeds (it used to fail, and the job looped on it until its deadline).

Only PostgreSQL is needed: the rows (tests/factories.py, due to be looked at) live in the in-process
tier's database (``fleet``), which no dispatcher process reads."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import func, insert, select

from clients.scoring import ChannelSummary, GuidelineResult, Scores
from clients.tags import AssetAnnotation
from clients.tags import Tag as ApiTag
from models import Asset, ScoringGuidelineResult, ScoringRound
from models import Tag as TagRow
from models.db import session_scope
from tests import factories

NOW = dt.datetime.now(dt.UTC)
URL = "https://cdn.example.com/values/a.mp4"


def new_job(session, urls: list[str]) -> uuid.UUID:
    """A polling job (tests/factories.py) with one asset per URL."""
    (made,) = factories.insert_jobs(session, [factories.job_values(asset_count=len(urls))], urls=urls[:1])
    more = [{"job_id": made.id, "position": i, "url": u} for i, u in enumerate(urls) if i]
    if more:
        session.execute(insert(Asset), more)
    return made.id


def test_tags_longer_than_their_columns_or_holding_nul_are_stored_cut_and_cleaned(fleet):
    from services.tagging.annotations import store_annotations

    # given an answer whose tags are longer than the columns, or hold NUL and unpaired surrogates
    odd = (
        ApiTag("c" * 300, "l" * 1000),
        ApiTag("visual", "logo\x00visible"),
        ApiTag("audio\ud800", "music"),
    )
    with session_scope() as s:
        job_id = new_job(s, [URL])
        # when it is stored
        stored = store_annotations(s, job_id, (AssetAnnotation(url=URL, id=None, tags=odd),), NOW)
        rows = s.execute(
            select(TagRow.category, TagRow.label).join(Asset).where(Asset.job_id == job_id).order_by(TagRow.label)
        ).all()
    # then every tag is kept, cut to its column and with U+FFFD for what PostgreSQL cannot hold
    assert stored == 3
    assert ("c" * 64, "l" * 255) in rows
    assert ("visual", "logo\ufffdvisible") in rows and ("audio\ufffd", "music") in rows


def test_an_answer_with_more_tags_than_one_statement_can_carry_is_stored(fleet):
    from services.tagging.annotations import store_annotations

    # given 200 assets with 150 distinct tags each: 30,000 rows, 90,000 parameters (over 65,535)
    urls = [f"https://cdn.example.com/values/many-{i}.mp4" for i in range(200)]
    tags = tuple(ApiTag(f"category-{n % 6}", f"label-{n}") for n in range(150))
    with session_scope() as s:
        job_id = new_job(s, urls)
        store_annotations(s, job_id, tuple(AssetAnnotation(url=u, id=None, tags=tags) for u in urls), NOW)
        count = s.execute(select(func.count()).select_from(TagRow).join(Asset).where(Asset.job_id == job_id))
        # then all of them are there
        assert count.scalar_one() == 30_000


def test_scores_with_text_and_numbers_postgresql_cannot_hold_are_stored(fleet):
    from services.scoring.storage import store_scores

    # given scores whose names hold NUL, whose counts overflow INTEGER and whose numbers are not finite
    scores = Scores(
        media={},
        summary={"META\x00": ChannelSummary(float("nan"), 2**40, 1, 3, 0, 0)},
        detail=(GuidelineResult("Logo\x00 early", "rule", "META", "PASS", float("inf")),),
    )
    media = factories.scored_media(url=URL, media_id="m-1")
    with session_scope() as s:
        round_id = s.execute(select(ScoringRound.id).where(ScoringRound.scored_media_id == media.id)).scalar_one()
        # when they are stored, then the transaction succeeds with storable values
        store_scores(s, round_id, scores)
        result = s.execute(
            select(ScoringGuidelineResult).where(ScoringGuidelineResult.round_id == round_id)
        ).scalar_one()
        assert result.name == "Logo\ufffd early" and result.weight is None
