"""The library: the stored tags as an inventory (services/library/, views and counts of migration 0004).

Rows are written the way production writes them: a job accepted by the tagging intake (which
stores its ``collection``), its tags stored by ``store_annotations`` (the maintained counts follow
through the triggers), the job then ended. Every test works in a collection and URLs of its own,
so it needs no empty database and no other test's rows get in its way.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
import uuid
from collections.abc import Iterator, Sequence
from urllib.parse import urlsplit

import psycopg
import pytest
from sqlalchemy import text

from clients.tags import AssetAnnotation
from clients.tags import Tag as ApiTag
from models import Job, JobState
from models.db import session_scope
from services import library, tagging
from services.durable.lifecycle import end_where
from services.library import AssetQuery, Scope, TagMatch, TagRef

T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
ADMIN_URL = os.environ.get("APERTURE_TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")

Asset = tuple[str, Sequence[str]]  # (url, ["category:label", ...])


def tag_job(
    session,
    assets: Sequence[Asset],
    *,
    collection: str | None,
    at: dt.datetime,
    request_id: str | None = None,
    client_tags: Sequence[str] = (),
    ids: Sequence[str | None] | None = None,
) -> uuid.UUID:
    """A create_job accepted by the real intake, its tags stored by the real annotations code at
    ``at``, then the job ended (so no sweeper ever picks it up)."""
    from config import get_settings
    from services.durable.intake import accept
    from services.tagging.annotations import store_annotations
    from services.tagging.intake import INTAKE

    payload = {
        "assets": [{"url": url, "id": (ids[i] if ids else None)} for i, (url, _) in enumerate(assets)],
        "client_tags": [{"label": label, "description": f"{label} things"} for label in client_tags],
        "request_id": request_id or f"lib-{uuid.uuid4()}",
        "collection": collection,
    }
    accepted = accept(session, INTAKE, payload, task_id=str(uuid.uuid4()), settings=get_settings(), now=at)
    assert accepted.state is JobState.SUBMITTING, accepted.error
    annotations = tuple(
        AssetAnnotation(url, None, tuple(ApiTag(*t.split(":", 1)) for t in tags)) for url, tags in assets
    )
    store_annotations(session, accepted.row_id, annotations, at)
    end_where(
        session, tagging.KIND, Job.id == accepted.row_id, state=JobState.COMPLETE, now=at, error=None,
        values={"completed_at": at},
    )  # fmt: skip
    return accepted.row_id


@pytest.fixture
def lib(app_env) -> Iterator[str]:
    """A fresh collection name and URL prefix for one test."""
    yield f"lib-{uuid.uuid4().hex[:10]}"


def url(lib: str, name: str) -> str:
    return f"https://cdn.example.com/{lib}/{name}.mp4"


def urls(assets: Sequence[library.LibraryAsset]) -> list[str]:
    return [a.url.rsplit("/", 1)[1].removesuffix(".mp4") for a in assets]


def search(lib: str, **query) -> set[str]:
    with session_scope() as s:
        found = library.search_assets(s, AssetQuery(scope=Scope(collection=lib), **query), limit=1000)
    return set(urls(found))


SUMMER = [
    ("beach", ["visual:outdoor scene", "brand:logo visible", "people:human presence", "client:product-forward"]),
    ("city", ["visual:urban street", "brand:logo visible", "people:human presence"]),
    ("studio", ["visual:studio backdrop", "brand:logo visible", "client:product-forward"]),
    ("forest", ["visual:outdoor scene", "audio:ambient sound"]),
    ("quiet", []),
]


# --- The contract: collection --------------------------------------------------------------------


def test_create_job_stores_its_collection_and_refuses_a_bad_one(app_env):
    from config import get_settings
    from services.durable.intake import accept
    from services.tagging.intake import INTAKE

    def create_job(session, collection):
        payload = {"assets": [{"url": "https://cdn.example.com/c.mp4"}], "collection": collection}
        return accept(session, INTAKE, payload, task_id=str(uuid.uuid4()), settings=get_settings(), now=T0)

    with session_scope() as s:
        ok, long, bad = create_job(s, "  Summer 2026  "), create_job(s, "x" * 101), create_job(s, 42)
        assert s.get(Job, ok.row_id).collection == "Summer 2026"
        assert long.state is JobState.REJECTED and long.error.startswith("collection: String should have at most 100")
        assert bad.state is JobState.REJECTED and "collection" in bad.error
        end_where(s, tagging.KIND, Job.id == ok.row_id, state=JobState.REJECTED, now=T0, error="ended by the test")


# --- The latest tagging counts; the history stays -----------------------------------------------------


def test_a_url_tagged_again_counts_with_its_latest_tags_and_keeps_its_history(lib):
    spring, summer = f"{lib}-spring", f"{lib}-summer"
    ad = url(lib, "ad")
    with session_scope() as s:
        first = tag_job(s, [(ad, ["visual:indoor setting", "brand:logo visible"])], collection=spring, at=T0)
        second = tag_job(s, [(ad, ["visual:outdoor scene"])], collection=summer, at=T0 + dt.timedelta(days=90))
    with session_scope() as s:
        # One asset, in the collection of its latest tagging, with that tagging's tags.
        assert library.search_assets(s, AssetQuery(scope=Scope(collection=spring))) == []
        [asset] = library.search_assets(s, AssetQuery(scope=Scope(collection=summer)))
        assert (asset.url, asset.job_id, asset.tags) == (ad, second, (TagRef("visual", "outdoor scene"),))
        assert (
            library.search_assets(
                s, AssetQuery(all_of=(TagMatch(label="logo visible"),), scope=Scope(collection=spring))
            )
            == []
        )
        assert library.tag_frequency(s, Scope(collection=spring)).total_assets == 0
        assert [t.tag for t in library.tag_frequency(s, Scope(collection=summer)).tags] == [
            TagRef("visual", "outdoor scene")
        ]
        # The history: both taggings, newest first.
        history = library.asset_history(s, ad)
        assert [(h.job_id, h.collection, h.is_latest) for h in history] == [
            (second, summer, True),
            (first, spring, False),
        ]
        assert history[1].tags == (TagRef("brand", "logo visible"), TagRef("visual", "indoor setting"))
        # The view BI tools read says the same.
        row = s.execute(
            text("SELECT collection, tag_count, times_tagged, job_id FROM library_assets WHERE url = :u"), {"u": ad}
        ).one()
        assert tuple(row) == (summer, 1, 2, second)


def test_a_url_twice_in_one_job_is_one_asset(lib):
    ad = url(lib, "twice")
    with session_scope() as s:
        tag_job(s, [(ad, ["visual:vehicle"]), (ad, ["visual:vehicle"])], collection=lib, at=T0)
    with session_scope() as s:
        assert len(library.search_assets(s, AssetQuery(scope=Scope(collection=lib)))) == 1
        assert library.tag_frequency(s, Scope(collection=lib)).tags[0].assets == 1
        assert library.list_collections(s).count(library.CollectionSize(lib, 1)) == 1


# --- Search -----------------------------------------------------------------------------------------


def test_search_by_all_any_none_of_tags_by_category_or_label(lib):
    with session_scope() as s:
        tag_job(s, [(url(lib, n), tags) for n, tags in SUMMER], collection=lib, at=T0, client_tags=["product-forward"])

    logo, people, outdoor = (
        TagMatch("brand", "logo visible"),
        TagMatch(label="human presence"),
        TagMatch(label="outdoor scene"),
    )
    # "which of our videos show a logo and people outdoors"
    assert search(lib, all_of=(logo, people, outdoor)) == {"beach"}
    assert search(lib, all_of=(logo, people)) == {"beach", "city"}
    assert search(lib, any_of=(TagMatch(label="urban street"), TagMatch(label="ambient sound"))) == {"city", "forest"}
    assert search(lib, all_of=(logo,), none_of=(people,)) == {"studio"}
    assert search(lib, none_of=(TagMatch(category="visual"),)) == {"quiet"}
    # Client tags are tags of category "client"; by category alone: any client tag.
    assert search(lib, all_of=(TagMatch("client", "product-forward"),)) == {"beach", "studio"}
    assert search(lib, all_of=(TagMatch.parse("client:"),)) == {"beach", "studio"}
    # A label in another category is another tag.
    assert search(lib, all_of=(TagMatch("visual", "logo visible"),)) == set()
    assert search(lib) == {n for n, _ in SUMMER}
    with session_scope() as s:
        assert library.count_assets(s, AssetQuery(all_of=(logo,), scope=Scope(collection=lib))) == 3


def test_search_pages_newest_first_with_the_tags(lib):
    with session_scope() as s:
        for i in range(5):
            tag_job(s, [(url(lib, f"ad{i}"), ["brand:logo visible", f"visual:shot {i}"])], collection=lib, at=T0)
    query = AssetQuery(all_of=(TagMatch(label="logo visible"),), scope=Scope(collection=lib))
    with session_scope() as s:
        first = library.search_assets(s, query, limit=2)
        second = library.search_assets(s, query, limit=2, before_asset_id=first[-1].asset_id)
        last = library.search_assets(s, query, limit=2, before_asset_id=second[-1].asset_id)
    assert urls(first + second + last) == ["ad4", "ad3", "ad2", "ad1", "ad0"]
    assert first[0].tags == (TagRef("brand", "logo visible"), TagRef("visual", "shot 4"))
    assert first[0].collection == lib and first[0].tagged_at == T0


def test_tag_match_parses_what_people_type():
    assert TagMatch.parse("brand:logo visible") == TagMatch("brand", "logo visible")
    assert TagMatch.parse("logo visible") == TagMatch(label="logo visible")
    assert TagMatch.parse("client:") == TagMatch(category="client")
    assert TagMatch.parse(":a:b") == TagMatch(label="a:b")
    with pytest.raises(ValueError):
        TagMatch.parse(":")
    with pytest.raises(ValueError):
        Scope(collection="")


# --- Frequencies and subsets ---------------------------------------------------------------------


def test_tag_frequency_top_n_by_category_and_by_subset(lib):
    scoring = f"aperture-scoring-tags:{lib}:"
    with session_scope() as s:
        tag_job(s, [(url(lib, n), tags) for n, tags in SUMMER], collection=lib, at=T0, request_id=f"{lib}-a")
        late = [(url(lib, "late"), ["brand:logo visible"])]
        tag_job(s, late, collection=lib, at=T0 + dt.timedelta(days=3), request_id=f"{scoring}1")
    with session_scope() as s:
        freq = library.tag_frequency(s, Scope(collection=lib), top=2)
        assert freq.total_assets == 6
        assert [(str(t.tag), t.assets) for t in freq.tags] == [("brand:logo visible", 4), ("client:product-forward", 2)]
        assert freq.tags[0].share == pytest.approx(4 / 6)
        by_category = library.tag_frequency(s, Scope(collection=lib), category="visual", top=None)
        assert [(t.label, t.assets) for t in by_category.tags] == [
            ("outdoor scene", 2),
            ("studio backdrop", 1),
            ("urban street", 1),
        ]
        # A request id prefix (the scoring loop's jobs), a date range.
        by_prefix = library.tag_frequency(s, Scope(request_id_prefix=scoring))
        assert (by_prefix.total_assets, [str(t.tag) for t in by_prefix.tags]) == (1, ["brand:logo visible"])
        week = Scope(collection=lib, tagged_since=T0 + dt.timedelta(days=1), tagged_until=T0 + dt.timedelta(days=8))
        assert [(str(t.tag), t.assets) for t in library.tag_frequency(s, week).tags] == [("brand:logo visible", 1)]
        assert library.tag_frequency(s, Scope(collection=lib, tagged_until=T0)).total_assets == 0
        # A prefix is a prefix, not a pattern.
        assert library.tag_frequency(s, Scope(request_id_prefix=f"{lib}_")).total_assets == 0


def test_client_tag_coverage(lib):
    with session_scope() as s:
        tag_job(
            s,
            [(url(lib, n), tags) for n, tags in SUMMER],
            collection=lib,
            at=T0,
            client_tags=["product-forward", "ugc"],
        )
        tag_job(
            s, [(url(lib, "other"), ["client:product-forward"])], collection=lib, at=T0, client_tags=["product-forward"]
        )
        tag_job(s, [(url(lib, "none"), ["visual:vehicle"])], collection=lib, at=T0)
    expected = [library.ClientTagCoverage("product-forward", 6, 3), library.ClientTagCoverage("ugc", 5, 0)]
    with session_scope() as s:
        assert library.client_tag_coverage(s, Scope(collection=lib)) == expected  # maintained counts
        live = library.client_tag_coverage(s, Scope(collection=lib, tagged_since=T0 - dt.timedelta(days=1)))
        assert live == expected  # counted from the rows
    assert expected[0].coverage == 0.5 and expected[1].coverage == 0.0


def test_co_occurrence_and_pairs(lib):
    with session_scope() as s:
        tag_job(s, [(url(lib, n), tags) for n, tags in SUMMER], collection=lib, at=T0)
    with session_scope() as s:
        co = library.co_occurring(s, TagMatch(label="logo visible"), Scope(collection=lib), top=2)
        assert co.assets == 3
        assert [(str(t.tag), t.assets) for t in co.tags] == [
            ("client:product-forward", 2),
            ("people:human presence", 2),
        ]
        assert co.tags[0].share == pytest.approx(2 / 3)
        pairs = library.tag_pairs(s, Scope(collection=lib), top=3)
        assert [(str(p.first), str(p.second), p.assets) for p in pairs] == [
            ("brand:logo visible", "client:product-forward", 2),
            ("brand:logo visible", "people:human presence", 2),
            ("audio:ambient sound", "visual:outdoor scene", 1),
        ]
        among = library.tag_pairs(
            s, Scope(collection=lib), among=[TagMatch(label="outdoor scene"), TagMatch(category="audio")]
        )
        assert [(str(p.first), str(p.second), p.assets) for p in among] == [
            ("audio:ambient sound", "visual:outdoor scene", 1)
        ]


def test_compare_two_subsets(lib):
    spring, summer = f"{lib}-spring", f"{lib}-summer"
    with session_scope() as s:
        spring_assets = [
            (url(lib, "s1"), ["visual:indoor setting", "brand:logo visible"]),
            (url(lib, "s2"), ["visual:indoor setting"]),
        ]
        tag_job(s, spring_assets, collection=spring, at=T0)
        tag_job(s, [(url(lib, n), tags) for n, tags in SUMMER], collection=summer, at=T0)
    with session_scope() as s:
        cmp = library.compare_subsets(s, Scope(collection=summer), Scope(collection=spring))
    assert (cmp.a_assets, cmp.b_assets) == (5, 2)
    # "which tags the summer campaign has that the spring one lacks"
    assert {str(t.tag) for t in cmp.only_in_a} == {
        "visual:outdoor scene",
        "visual:urban street",
        "visual:studio backdrop",
        "people:human presence",
        "audio:ambient sound",
        "client:product-forward",
    }
    assert [str(t.tag) for t in cmp.only_in_b] == ["visual:indoor setting"]
    logo = next(t for t in cmp.tags if t.label == "logo visible")
    assert (logo.a_assets, logo.b_assets, logo.a_share, logo.b_share) == (3, 1, 0.6, 0.5)
    assert str(cmp.tags[-1].tag) == "visual:indoor setting"  # the most over-represented in spring, last


# --- The maintained counts are the rows' counts ------------------------------------------------------


def _frequency_both_ways(s, collection: str | None) -> tuple[library.Frequency, library.Frequency]:
    maintained = library.tag_frequency(s, Scope(collection=collection), top=None)
    counted = library.tag_frequency(
        s, Scope(collection=collection, tagged_since=T0 - dt.timedelta(days=3650)), top=None
    )
    return maintained, counted


def test_maintained_counts_equal_the_rows_after_retagging_restoring_and_late_tags(lib):
    a, b = f"{lib}-a", f"{lib}-b"
    with session_scope() as s:
        x_and_y = [(url(lib, "x"), ["visual:vehicle", "brand:logo visible"]), (url(lib, "y"), ["visual:vehicle"])]
        job1 = tag_job(s, x_and_y, collection=a, at=T0, client_tags=["eco"])
        # y tagged again in b: it leaves a; x tagged again in a.
        y_again = [(url(lib, "y"), ["visual:nature landscape", "client:eco"])]
        job2 = tag_job(s, y_again, collection=b, at=T0 + dt.timedelta(hours=1), client_tags=["eco"])
        tag_job(s, [(url(lib, "x"), ["visual:vehicle"])], collection=a, at=T0 + dt.timedelta(hours=2))
    with session_scope() as s:
        # An older result stored late (its tagged_at is older): the newer tagging keeps counting.
        tag_job(s, [(url(lib, "y"), ["audio:silence"])], collection=a, at=T0 - dt.timedelta(hours=1))
        # The same result stored twice, and a result stored again with one more tag.
        from services.tagging.annotations import store_annotations

        again = (AssetAnnotation(url(lib, "x"), None, (ApiTag("visual", "vehicle"), ApiTag("people", "smiling face"))),)
        store_annotations(s, job1, again, T0 + dt.timedelta(hours=5))  # x's tagging in job1 is history: no change
        y_more = (
            AssetAnnotation(
                url(lib, "y"), None, (*(ApiTag(*t.split(":")) for t in y_again[0][1]), ApiTag("audio", "silence"))
            ),
        )
        store_annotations(s, job2, y_more, T0 + dt.timedelta(hours=5))  # y's latest tagging: counts
    with session_scope() as s:
        for collection in (a, b):
            maintained, counted = _frequency_both_ways(s, collection)
            assert (maintained.total_assets, maintained.tags) == (counted.total_assets, counted.tags)
        fa = library.tag_frequency(s, Scope(collection=a), top=None)
        assert (fa.total_assets, [(str(t.tag), t.assets) for t in fa.tags]) == (1, [("visual:vehicle", 1)])
        fb = library.tag_frequency(s, Scope(collection=b), top=None)
        assert [(str(t.tag), t.assets) for t in fb.tags] == [
            ("audio:silence", 1),
            ("client:eco", 1),
            ("visual:nature landscape", 1),
        ]
        assert library.client_tag_coverage(s, Scope(collection=a)) == []
        assert library.client_tag_coverage(s, Scope(collection=b)) == [library.ClientTagCoverage("eco", 1, 1)]


def test_two_jobs_tagging_the_same_url_at_once_count_it_once(lib) -> None:
    """Two workers store results for the same URL concurrently: the second waits for the first
    (a lock per URL) and then moves the URL's counts from the first's tagging to its own."""
    from sqlalchemy.orm import Session

    from models.db import get_engine

    shared = url(lib, "shared")
    first = Session(get_engine())
    tag_job(first, [(shared, ["visual:vehicle"])], collection=f"{lib}-1", at=T0)  # not committed yet
    errors: list[BaseException] = []

    def second() -> None:
        try:
            with session_scope() as s:
                tag_job(s, [(shared, ["visual:urban street"])], collection=f"{lib}-2", at=T0 + dt.timedelta(seconds=1))
        except BaseException as exc:  # noqa: BLE001 (reported by the test below)
            errors.append(exc)

    thread = threading.Thread(target=second)
    thread.start()
    thread.join(0.5)
    assert thread.is_alive(), "the second tagging of the URL must wait for the first to commit"
    first.commit()
    first.close()
    thread.join(10)
    assert not errors, errors
    with session_scope() as s:
        assert library.tag_frequency(s, Scope(collection=f"{lib}-1")).total_assets == 0
        f2 = library.tag_frequency(s, Scope(collection=f"{lib}-2"))
        assert (f2.total_assets, [str(t.tag) for t in f2.tags]) == (1, ["visual:urban street"])
        for collection in (f"{lib}-1", f"{lib}-2"):
            maintained, counted = _frequency_both_ways(s, collection)
            assert (maintained.total_assets, maintained.tags) == (counted.total_assets, counted.tags)


def test_a_delete_makes_the_library_count_from_the_rows_until_the_counts_are_rebuilt(lib):
    with session_scope() as s:
        tag_job(s, [(url(lib, "keep"), ["visual:vehicle"])], collection=lib, at=T0)
        gone = tag_job(s, [(url(lib, "gone"), ["visual:vehicle"])], collection=lib, at=T0)
    try:
        with session_scope() as s:
            s.execute(text("DELETE FROM jobs WHERE id = :id"), {"id": gone})
        with session_scope() as s:
            assert not library.counts_are_exact(s)
            freq = library.tag_frequency(s, Scope(collection=lib))  # still right: counted from the rows
            assert (freq.total_assets, freq.tags[0].assets) == (1, 1)
    finally:
        with session_scope() as s:
            library.rebuild_counts(s)
    with session_scope() as s:
        assert library.counts_are_exact(s)
        freq = library.tag_frequency(s, Scope(collection=lib))
        assert (freq.total_assets, freq.tags[0].assets) == (1, 1)


def test_the_whole_library_counted_both_ways_agrees(lib):
    with session_scope() as s:
        tag_job(s, [(url(lib, n), tags) for n, tags in SUMMER], collection=lib, at=T0, client_tags=["product-forward"])
        tag_job(s, [(url(lib, "beach"), ["visual:outdoor scene"])], collection=None, at=T0 + dt.timedelta(days=1))
    with session_scope() as s:
        s.connection(execution_options={"isolation_level": "REPEATABLE READ"})  # one snapshot for both
        maintained, counted = _frequency_both_ways(s, None)
        assert maintained.total_assets == counted.total_assets >= len(SUMMER)
        assert maintained.tags == counted.tags
        collections = {c.collection: c.assets for c in library.list_collections(s)}
        assert collections[lib] == len(SUMMER) - 1
        assert sum(collections.values()) == maintained.total_assets


# --- Export --------------------------------------------------------------------------------------------


def test_export_streams_every_asset_with_its_tags_in_url_order(lib):
    with session_scope() as s:
        tag_job(
            s, [(url(lib, n), tags) for n, tags in SUMMER], collection=lib, at=T0, ids=[f"id-{n}" for n, _ in SUMMER]
        )
    with session_scope() as s:
        exported = list(library.stream_assets(s, AssetQuery(scope=Scope(collection=lib)), batch_size=2))
        logos = list(
            library.stream_assets(s, AssetQuery(all_of=(TagMatch(label="logo visible"),), scope=Scope(collection=lib)))
        )
    assert urls(exported) == sorted(n for n, _ in SUMMER)
    by_name = dict(zip(urls(exported), exported, strict=True))
    assert by_name["beach"].external_id == "id-beach"
    assert [str(t) for t in by_name["beach"].tags] == sorted(SUMMER[0][1])
    assert by_name["quiet"].tags == ()
    assert urls(logos) == ["beach", "city", "studio"]


# --- The read contract for BI tools -------------------------------------------------------------------

LIBRARY_ASSETS_COLUMNS = "url external_id job_id request_id collection tagged_at tag_count times_tagged asset_id"
LIBRARY_TAGS_COLUMNS = "url external_id category label is_client_tag collection request_id tagged_at asset_id job_id"


def test_the_views_keep_their_columns_and_answer_in_sql(lib):
    """docs/library.md: columns are only ever added. A BI tool's question, in plain SQL."""
    with session_scope() as s:
        tag_job(s, [(url(lib, n), tags) for n, tags in SUMMER], collection=lib, at=T0)
        for view, names in (("library_assets", LIBRARY_ASSETS_COLUMNS), ("library_tags", LIBRARY_TAGS_COLUMNS)):
            expected = names.split()
            columns = (
                s.execute(
                    text(
                        "SELECT column_name FROM information_schema.columns WHERE table_name = :v"
                        " ORDER BY ordinal_position"
                    ),
                    {"v": view},
                )
                .scalars()
                .all()
            )
            assert columns[: len(expected)] == expected, view
        logo_people = (
            s.execute(
                text(
                    "SELECT url FROM library_tags WHERE collection = :c AND label = 'logo visible'"
                    " INTERSECT"
                    " SELECT url FROM library_tags WHERE collection = :c AND label = 'human presence' ORDER BY 1"
                ),
                {"c": lib},
            )
            .scalars()
            .all()
        )
        assert logo_people == [url(lib, "beach"), url(lib, "city")]
        clients = s.execute(
            text("SELECT count(*) FROM library_tags WHERE collection = :c AND is_client_tag"), {"c": lib}
        ).scalar_one()
        assert clients == 2


# --- The migration backfills the counts ----------------------------------------------------------------


@pytest.fixture
def database_at_0003(app_env, monkeypatch) -> Iterator[str]:
    """A database of this test's own at revision 0003 (APERTURE_DATABASE_URL points at it)."""
    from config import get_settings
    from models.db import reset_engine
    from models.migrate import upgrade

    name = f"aperture_library_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    db_url = urlsplit(ADMIN_URL)._replace(path=f"/{name}").geturl()
    monkeypatch.setenv("APERTURE_DATABASE_URL", db_url)
    get_settings.cache_clear()
    reset_engine()
    try:
        upgrade("0003")
        yield db_url
    finally:
        reset_engine()
        monkeypatch.undo()
        get_settings.cache_clear()
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_upgrading_to_0004_counts_the_tags_already_stored(database_at_0003):
    from models.migrate import upgrade

    with psycopg.connect(database_at_0003) as conn:
        for n, (name, at, tags) in enumerate(
            [
                ("a", T0, ["visual:vehicle", "brand:logo visible"]),
                ("a", T0 + dt.timedelta(days=1), ["visual:vehicle"]),
                ("b", T0, ["visual:vehicle"]),
                ("c", None, ["visual:vehicle"]),
            ]
        ):
            job = conn.execute(
                "INSERT INTO jobs (request_id, state, payload, dialect, asset_count, deadline_at)"
                " VALUES (%s, 'complete', '{}', 'guide', 1, now()) RETURNING id",
                (f"old-{n}",),
            ).fetchone()[0]
            asset = conn.execute(
                "INSERT INTO assets (job_id, position, url, tagged_at) VALUES (%s, 0, %s, %s) RETURNING id",
                (job, f"https://cdn.example.com/old/{name}.mp4", at),
            ).fetchone()[0]
            for tag in tags:
                conn.execute(
                    "INSERT INTO tags (asset_id, category, label) VALUES (%s, %s, %s)", (asset, *tag.split(":"))
                )
        conn.commit()

    upgrade("head")
    with session_scope() as s:
        assert library.counts_are_exact(s)
        freq = library.tag_frequency(s)
        assert (freq.total_assets, [(str(t.tag), t.assets) for t in freq.tags]) == (2, [("visual:vehicle", 2)])
        assert library.list_collections(s) == [library.CollectionSize(None, 2)]
