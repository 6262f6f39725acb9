"""library: jobs.collection, indexes for tag search, the library views and its maintained tag counts

Revision ID: 0004
Revises: 0003

Reviewed by hand:
- ``jobs.collection`` (nullable, no default: a catalog-only change) and its partial index, empty
  at first.
- The three indexes on assets and tags (tag search, the "latest tagging of a URL" probe, date
  ranges) are built CONCURRENTLY, outside the migration's transaction, with no statement timeout:
  on a library of 10,000,000 tags they take about a minute and must not block the workers that
  store tags meanwhile. An index left INVALID by an interrupted build is dropped and built again.
- Extended statistics on ``tags (category, label)``: a label almost always implies its category,
  and without them the planner multiplies the two selectivities and misjudges every tag search.
- Views ``library_assets`` and ``library_tags``: the stable read contract for BI tools
  (docs/library.md). Columns are only ever added; a rename or removal needs a deprecation first.
- ``library_tag_counts`` and ``library_collection_sizes``, kept exact by the triggers below in
  the transaction that stores tags (counting millions of tag rows per question cannot answer in
  100 ms: docs/benchmarks.md): statement triggers on assets (the ``tagged_at`` update that
  completes a job moves each URL's counts to its new latest tagging), a row trigger on tags
  inserted for an asset already in the library (a primary-key probe per row otherwise). Two
  transactions tagging the same URL take turns on an advisory lock per URL (key 727275,
  hashtext(url)), and counters are upserted in key order, so concurrent jobs neither
  double-count nor deadlock. What the triggers do not follow (a delete,
  a job's collection or client tags changed, a writer not in READ COMMITTED) marks the counts
  invalid in ``library_counts_state``; readers then count from the rows until
  ``SELECT library_rebuild_counts()`` runs. TRUNCATE empties them.
- The counts are backfilled here, after the triggers exist and under a SHARE lock on assets and
  tags: workers storing tags wait for the backfill (seconds per million tags; readers do not).
Create Date: 2026-11-28 21:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from models.migrate import create_index_concurrently, outside_the_transaction

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# (name, table, definition): built concurrently; the same definitions as models/jobs.py.
BIG_INDEXES = (
    ("ix_tags_label_category_asset_id", "tags", "(label, category, asset_id)"),
    ("ix_assets_url_tagged_at_id", "assets", "(url, tagged_at, id) WHERE tagged_at IS NOT NULL"),
    ("ix_assets_tagged_at", "assets", "(tagged_at) WHERE tagged_at IS NOT NULL"),
)

# A tagging is the latest of its URL when no tagging of the same URL is newer: tagged later, or at
# the same instant under a higher asset id. (tagged_at is the poll that stored the job's tags, the
# same instant as the job's completed_at, so it already orders taggings by job completion.)
NO_NEWER_TAGGING = """NOT EXISTS (
        SELECT 1 FROM assets newer
        WHERE newer.url = {a}.url AND newer.tagged_at IS NOT NULL
          AND (newer.tagged_at, newer.id) > ({a}.tagged_at, {a}.id))"""

# Built from the constants of this module only.
VIEWS = (
    f"""
CREATE VIEW library_assets AS
SELECT a.url,
       a.external_id,
       a.job_id,
       j.request_id,
       j.collection,
       a.tagged_at,
       (SELECT count(*) FROM tags t WHERE t.asset_id = a.id)::integer AS tag_count,
       (SELECT count(*) FROM assets h WHERE h.url = a.url AND h.tagged_at IS NOT NULL)::integer AS times_tagged,
       a.id AS asset_id
FROM assets a
JOIN jobs j ON j.id = a.job_id
WHERE a.tagged_at IS NOT NULL
  AND {NO_NEWER_TAGGING.format(a="a")}
""",  # noqa: S608
    """
CREATE VIEW library_tags AS
SELECT la.url,
       la.external_id,
       t.category,
       t.label,
       t.category = 'client' AS is_client_tag,
       la.collection,
       la.request_id,
       la.tagged_at,
       la.asset_id,
       la.job_id
FROM library_assets la
JOIN tags t ON t.asset_id = la.asset_id
""",
)

FUNCTIONS = (
    # The client tags a job asked for, once each (jobs.client_tags: [{"label", "description"}]).
    """
CREATE FUNCTION library_client_labels(client_tags jsonb) RETURNS SETOF text
LANGUAGE sql IMMUTABLE AS $$
    SELECT DISTINCT left(e ->> 'label', 255)
    FROM jsonb_array_elements(CASE WHEN jsonb_typeof(client_tags) = 'array' THEN client_tags ELSE '[]' END) AS e
    WHERE jsonb_typeof(e) = 'object' AND e ->> 'label' IS NOT NULL
$$""",
    """
CREATE FUNCTION library_counts_maintained() RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT coalesce((SELECT valid FROM library_counts_state WHERE id = 1), false)
        AND current_setting('transaction_isolation') = 'read committed'
$$""",
    """
CREATE FUNCTION library_counts_invalidate() RETURNS void
LANGUAGE sql AS $$
    UPDATE library_counts_state SET valid = false WHERE id = 1 AND valid
$$""",
    # One URL's latest tagging is decided by one transaction at a time (in key order: no deadlock).
    """
CREATE FUNCTION library_lock_urls(urls text[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    k integer;
BEGIN
    FOR k IN SELECT DISTINCT hashtext(u) FROM unnest(urls) AS u ORDER BY 1 LOOP
        PERFORM pg_advisory_xact_lock(727275, k);
    END LOOP;
END
$$""",
    # Add (sign 1) or remove (sign -1) assets' contributions: their collection's size, their tags,
    # and the client tags their job asked for. Upserted in key order (no deadlock between writers).
    """
CREATE FUNCTION library_counts_apply(asset_ids bigint[], signs integer[]) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO library_collection_sizes AS s (collection, assets)
    SELECT coalesce(j.collection, ''), sum(d.sign)
    FROM unnest(asset_ids, signs) AS d(asset_id, sign)
    JOIN assets a ON a.id = d.asset_id
    JOIN jobs j ON j.id = a.job_id
    GROUP BY 1
    HAVING sum(d.sign) <> 0
    ORDER BY 1
    ON CONFLICT (collection) DO UPDATE SET assets = s.assets + excluded.assets;

    INSERT INTO library_tag_counts AS c (collection, category, label, assets, requested)
    SELECT x.collection, x.category, x.label, sum(x.tagged), sum(x.requested)
    FROM (
        SELECT coalesce(j.collection, '') AS collection, t.category, t.label, d.sign AS tagged, 0 AS requested
        FROM unnest(asset_ids, signs) AS d(asset_id, sign)
        JOIN assets a ON a.id = d.asset_id
        JOIN jobs j ON j.id = a.job_id
        JOIN tags t ON t.asset_id = d.asset_id
        UNION ALL
        SELECT coalesce(j.collection, ''), 'client', r.label, 0, d.sign
        FROM unnest(asset_ids, signs) AS d(asset_id, sign)
        JOIN assets a ON a.id = d.asset_id
        JOIN jobs j ON j.id = a.job_id
        CROSS JOIN LATERAL library_client_labels(j.client_tags) AS r(label)
    ) AS x
    GROUP BY 1, 2, 3
    HAVING sum(x.tagged) <> 0 OR sum(x.requested) <> 0
    ORDER BY 1, 2, 3
    ON CONFLICT (collection, category, label) DO UPDATE
        SET assets = c.assets + excluded.assets, requested = c.requested + excluded.requested;
END
$$""",
    # The latest tagging of each URL changed from prev_ids (one per URL that had one) to whatever
    # is latest now: move the contributions.
    """
CREATE FUNCTION library_counts_relatest(urls text[], prev_ids bigint[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    ids bigint[];
    signs integer[];
BEGIN
    WITH cur AS (
        SELECT DISTINCT ON (a.url) a.id
        FROM assets a
        WHERE a.url = ANY (urls) AND a.tagged_at IS NOT NULL
        ORDER BY a.url, a.tagged_at DESC, a.id DESC
    ), prev AS (
        SELECT unnest(coalesce(prev_ids, '{}'::bigint[])) AS id
    ), moves AS (
        SELECT id, 1 AS sign FROM cur WHERE id NOT IN (SELECT id FROM prev)
        UNION ALL
        SELECT id, -1 FROM prev WHERE id NOT IN (SELECT id FROM cur)
    )
    SELECT array_agg(id), array_agg(sign) INTO ids, signs FROM moves;
    IF ids IS NOT NULL THEN
        PERFORM library_counts_apply(ids, signs);
    END IF;
END
$$""",
    """
CREATE FUNCTION library_on_assets_inserted() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    urls text[];
    prev_ids bigint[];
BEGIN
    SELECT array_agg(DISTINCT url) INTO urls FROM new_rows WHERE tagged_at IS NOT NULL;
    IF urls IS NULL THEN
        RETURN NULL;  -- the intake: assets are tagged later
    END IF;
    IF NOT library_counts_maintained() THEN
        PERFORM library_counts_invalidate();
        RETURN NULL;
    END IF;
    PERFORM library_lock_urls(urls);
    SELECT array_agg(p.id) INTO prev_ids FROM (
        SELECT DISTINCT ON (a.url) a.id
        FROM assets a
        WHERE a.url = ANY (urls) AND a.tagged_at IS NOT NULL
          AND NOT EXISTS (SELECT 1 FROM new_rows n WHERE n.id = a.id)
        ORDER BY a.url, a.tagged_at DESC, a.id DESC
    ) AS p;
    PERFORM library_counts_relatest(urls, prev_ids);
    RETURN NULL;
END
$$""",
    """
CREATE FUNCTION library_on_assets_updated() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    urls text[];
    prev_ids bigint[];
BEGIN
    IF EXISTS (
        SELECT 1 FROM old_rows o JOIN new_rows n ON n.id = o.id
        WHERE n.url IS DISTINCT FROM o.url OR n.job_id IS DISTINCT FROM o.job_id
    ) THEN
        PERFORM library_counts_invalidate();
        RETURN NULL;
    END IF;
    SELECT array_agg(DISTINCT n.url) INTO urls
    FROM old_rows o JOIN new_rows n ON n.id = o.id
    WHERE n.tagged_at IS DISTINCT FROM o.tagged_at;
    IF urls IS NULL THEN
        RETURN NULL;  -- storing the same tags again: tagged_at kept
    END IF;
    IF NOT library_counts_maintained() THEN
        PERFORM library_counts_invalidate();
        RETURN NULL;
    END IF;
    PERFORM library_lock_urls(urls);
    -- The latest tagging of each URL before this statement: other rows as they are now (this
    -- transaction holds the URLs' locks, so their writers have committed), these as they were.
    SELECT array_agg(p.id) INTO prev_ids FROM (
        SELECT DISTINCT ON (b.url) b.id
        FROM (
            SELECT a.id, a.url, a.tagged_at FROM assets a
            WHERE a.url = ANY (urls) AND a.tagged_at IS NOT NULL
              AND NOT EXISTS (SELECT 1 FROM new_rows n WHERE n.id = a.id)
            UNION ALL
            SELECT o.id, o.url, o.tagged_at FROM old_rows o
            WHERE o.url = ANY (urls) AND o.tagged_at IS NOT NULL
        ) AS b
        ORDER BY b.url, b.tagged_at DESC, b.id DESC
    ) AS p;
    PERFORM library_counts_relatest(urls, prev_ids);
    RETURN NULL;
END
$$""",
    # Tags stored for an asset already in the library (a job's result stored again, with more
    # tags). Row by row: the application inserts tags one row per statement (executemany), and a
    # statement trigger's query on its transition table costs ~50 us each time; this costs one
    # primary-key probe for the usual case (a job being completed: its assets are not tagged yet).
    f"""
CREATE FUNCTION library_on_tag_inserted() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    tagged record;
BEGIN
    SELECT a.id, a.url, a.tagged_at, a.job_id INTO tagged
    FROM assets a WHERE a.id = NEW.asset_id AND a.tagged_at IS NOT NULL;
    IF NOT FOUND THEN
        RETURN NULL;  -- a completed job's tags: they count when its assets' tagged_at is set
    END IF;
    IF NOT library_counts_maintained() THEN
        PERFORM library_counts_invalidate();
        RETURN NULL;
    END IF;
    PERFORM library_lock_urls(ARRAY[tagged.url]);
    IF {NO_NEWER_TAGGING.format(a="tagged")} THEN
        INSERT INTO library_tag_counts AS c (collection, category, label, assets)
        SELECT coalesce(j.collection, ''), NEW.category, NEW.label, 1 FROM jobs j WHERE j.id = tagged.job_id
        ON CONFLICT (collection, category, label) DO UPDATE SET assets = c.assets + 1;
    END IF;
    RETURN NULL;
END
$$""",  # noqa: S608
    """
CREATE FUNCTION library_on_rows_removed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM old_rows) THEN
        PERFORM library_counts_invalidate();
    END IF;
    RETURN NULL;
END
$$""",
    """
CREATE FUNCTION library_on_job_relabelled() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM assets WHERE job_id = NEW.id AND tagged_at IS NOT NULL) THEN
        PERFORM library_counts_invalidate();
    END IF;
    RETURN NULL;
END
$$""",
    """
CREATE FUNCTION library_on_truncated() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM library_tag_counts;
    DELETE FROM library_collection_sizes;
    -- Exact again when nothing is left in the library (assets truncated); not when only tags were.
    UPDATE library_counts_state
    SET valid = NOT EXISTS (SELECT 1 FROM assets WHERE tagged_at IS NOT NULL), rebuilt_at = now()
    WHERE id = 1;
    RETURN NULL;
END
$$""",
    # Recompute every count from the rows. Writers of assets and tags wait meanwhile; readers do not.
    """
CREATE FUNCTION library_rebuild_counts() RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    LOCK TABLE assets, tags IN SHARE MODE;
    DELETE FROM library_tag_counts;
    DELETE FROM library_collection_sizes;
    INSERT INTO library_collection_sizes (collection, assets)
    SELECT coalesce(collection, ''), count(*) FROM library_assets GROUP BY 1;
    INSERT INTO library_tag_counts (collection, category, label, assets, requested)
    SELECT x.collection, x.category, x.label, sum(x.tagged), sum(x.requested)
    FROM (
        SELECT coalesce(collection, '') AS collection, category, label, count(*) AS tagged, 0 AS requested
        FROM library_tags
        GROUP BY 1, 2, 3
        UNION ALL
        SELECT coalesce(la.collection, ''), 'client', r.label, 0, count(*)
        FROM library_assets la
        JOIN jobs j ON j.id = la.job_id
        CROSS JOIN LATERAL library_client_labels(j.client_tags) AS r(label)
        GROUP BY 1, 2, 3
    ) AS x
    GROUP BY 1, 2, 3;
    INSERT INTO library_counts_state (id, valid, rebuilt_at) VALUES (1, true, now())
    ON CONFLICT (id) DO UPDATE SET valid = true, rebuilt_at = now();
END
$$""",
)

# (trigger, event ON table, transition tables, function)
TRIGGERS = (
    ("library_assets_inserted", "INSERT ON assets", "NEW TABLE AS new_rows", "library_on_assets_inserted"),
    (
        "library_assets_updated",
        "UPDATE ON assets",
        "OLD TABLE AS old_rows NEW TABLE AS new_rows",
        "library_on_assets_updated",
    ),
    ("library_assets_deleted", "DELETE ON assets", "OLD TABLE AS old_rows", "library_on_rows_removed"),
    ("library_tags_updated", "UPDATE ON tags", "OLD TABLE AS old_rows", "library_on_rows_removed"),
    ("library_tags_deleted", "DELETE ON tags", "OLD TABLE AS old_rows", "library_on_rows_removed"),
)
TRUNCATE_TRIGGERS = (("library_assets_truncated", "assets"), ("library_tags_truncated", "tags"))
FUNCTION_NAMES = (
    "library_rebuild_counts()",
    "library_on_truncated()",
    "library_on_job_relabelled()",
    "library_on_rows_removed()",
    "library_on_tag_inserted()",
    "library_on_assets_updated()",
    "library_on_assets_inserted()",
    "library_counts_relatest(text[], bigint[])",
    "library_counts_apply(bigint[], integer[])",
    "library_lock_urls(text[])",
    "library_counts_invalidate()",
    "library_counts_maintained()",
    "library_client_labels(jsonb)",
)


def upgrade() -> None:
    op.add_column("jobs", sa.Column("collection", sa.String(length=100), nullable=True))
    op.create_index("ix_jobs_collection", "jobs", ["collection"], postgresql_where=sa.text("collection IS NOT NULL"))
    op.create_table(
        "library_tag_counts",
        sa.Column("collection", sa.String(length=100), nullable=False),
        sa.Column("category", sa.String(length=64), nullable=False),
        sa.Column("label", sa.String(length=255), nullable=False),
        sa.Column("assets", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("requested", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.PrimaryKeyConstraint("collection", "category", "label", name=op.f("pk_library_tag_counts")),
    )
    op.create_table(
        "library_collection_sizes",
        sa.Column("collection", sa.String(length=100), nullable=False),
        sa.Column("assets", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.PrimaryKeyConstraint("collection", name=op.f("pk_library_collection_sizes")),
    )
    op.create_table(
        "library_counts_state",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("valid", sa.Boolean(), nullable=False),
        sa.Column("rebuilt_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("id = 1", name=op.f("ck_library_counts_state_singleton")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_library_counts_state")),
    )

    with outside_the_transaction():
        for name, table, definition in BIG_INDEXES:
            create_index_concurrently(name, f"ON {table} {definition}")

    op.execute("CREATE STATISTICS st_tags_category_label (dependencies, mcv) ON category, label FROM tags")
    for view in VIEWS:
        op.execute(view)
    for function in FUNCTIONS:
        op.execute(function)
    for name, event, transition, function in TRIGGERS:
        op.execute(
            f"CREATE TRIGGER {name} AFTER {event} REFERENCING {transition}"
            f" FOR EACH STATEMENT EXECUTE FUNCTION {function}()"
        )
    for name, table in TRUNCATE_TRIGGERS:
        op.execute(
            f"CREATE TRIGGER {name} AFTER TRUNCATE ON {table}"
            " FOR EACH STATEMENT EXECUTE FUNCTION library_on_truncated()"
        )
    op.execute(
        "CREATE TRIGGER library_tags_inserted AFTER INSERT ON tags"
        " FOR EACH ROW EXECUTE FUNCTION library_on_tag_inserted()"
    )
    op.execute(
        "CREATE TRIGGER library_jobs_relabelled AFTER UPDATE OF collection, client_tags ON jobs FOR EACH ROW"
        " WHEN (OLD.collection IS DISTINCT FROM NEW.collection OR OLD.client_tags IS DISTINCT FROM NEW.client_tags)"
        " EXECUTE FUNCTION library_on_job_relabelled()"
    )
    # The backfill: every count from the rows already stored (the triggers count what comes after).
    op.execute("SET LOCAL statement_timeout = 0")
    op.execute("SELECT library_rebuild_counts()")
    op.execute("ANALYZE tags")


def downgrade() -> None:
    op.execute("DROP TRIGGER library_jobs_relabelled ON jobs")
    op.execute("DROP TRIGGER library_tags_inserted ON tags")
    for name, table in TRUNCATE_TRIGGERS:
        op.execute(f"DROP TRIGGER {name} ON {table}")
    for name, event, _, _ in TRIGGERS:
        op.execute(f"DROP TRIGGER {name} ON {event.split(' ON ')[1]}")
    for function in FUNCTION_NAMES:
        op.execute(f"DROP FUNCTION {function}")
    op.execute("DROP VIEW library_tags")
    op.execute("DROP VIEW library_assets")
    op.execute("DROP STATISTICS st_tags_category_label")
    for name, _, _ in reversed(BIG_INDEXES):
        op.drop_index(name)
    op.drop_table("library_counts_state")
    op.drop_table("library_collection_sizes")
    op.drop_table("library_tag_counts")
    op.drop_index("ix_jobs_collection", table_name="jobs", postgresql_where=sa.text("collection IS NOT NULL"))
    op.drop_column("jobs", "collection")
