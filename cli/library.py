"""Asking the library questions: `aperture assets search`, `aperture tags top|diff|export`, `aperture report`.

Read-only, against a running system's PostgreSQL (APERTURE_DATABASE_URL), through the services of
services/library/ (docs/library.md). Tables fit an 80-column terminal: ids shortened, one line per
row, long cells cut with an ellipsis; `--json` is for programs. Bad input is one line and exit 2;
a database that cannot be reached, one line and exit 4 (cli/ops.py).
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cli.ops import add_cell, compact_table, console, database, shorten
from services.library.records import AssetQuery, LibraryAsset, Scope, TagMatch

TAG_HELP = 'CATEGORY:LABEL, e.g. "brand:logo visible"; "client:" is any client tag, ":LABEL" the label in any category'


def parse_tag(ctx: click.Context | None, param: click.Parameter | None, values: Iterable[str]) -> tuple[TagMatch, ...]:
    """A click callback: each value as a TagMatch, or a one-line usage error (exit 2)."""
    matches = []
    for value in values:
        category, sep, label = value.partition(":")
        if not sep or not (category.strip() or label.strip()):
            raise click.BadParameter(f"{value!r}: expected {TAG_HELP}", ctx=ctx, param=param)
        matches.append(TagMatch(category=category.strip() or None, label=label.strip() or None))
    return tuple(matches)


def scope_of(collection: str | None) -> Scope:
    try:
        return Scope(collection=collection.strip() if collection is not None else None)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--in") from None


def in_option(help_text: str = "Only the assets of this collection (the `collection` given to create_job)."):
    return click.option("--in", "collection", metavar="COLLECTION", help=help_text)


def json_option():
    return click.option("--json", "as_json", is_flag=True, help="Machine-readable output (JSON) instead of a table.")


def asset_json(asset: LibraryAsset) -> dict[str, Any]:
    """One asset as `--json` and `tags export --format jsonl` give it."""
    return {
        "url": asset.url,
        "id": asset.external_id,
        "collection": asset.collection,
        "request_id": asset.request_id,
        "job_id": str(asset.job_id),
        "asset_id": asset.asset_id,
        "tagged_at": asset.tagged_at.isoformat(),
        "tags": [{"category": t.category, "label": t.label} for t in asset.tags],
    }


def short_url(url: str) -> str:
    """The part of a URL that tells assets apart: its file name (the rest is usually one CDN)."""
    tail = url.rstrip("/").rsplit("/", 1)[-1]
    return tail or url


# --- assets --------------------------------------------------------------------------------------


@click.group()
def assets() -> None:
    """Find assets in the library by their tags (docs/library.md)."""


@assets.command("search")
@click.option(
    "--tag", "tags", multiple=True, callback=parse_tag, metavar="CATEGORY:LABEL", help=f"Repeatable. {TAG_HELP}."
)
@click.option("--any", "any_of", is_flag=True, help="Assets carrying any of the --tag tags (default: all of them).")
@click.option(
    "--none",
    "none_of",
    multiple=True,
    callback=parse_tag,
    metavar="CATEGORY:LABEL",
    help="Without this tag; repeatable.",
)
@in_option()
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 100_000), help="At most this many.")
@json_option()
def assets_search(
    tags: tuple[TagMatch, ...],
    any_of: bool,
    none_of: tuple[TagMatch, ...],
    collection: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """Assets carrying all (or --any) of the --tag tags and none of the --none tags, most
    recently submitted first. With --json: one JSON object per asset and line."""
    from services.library import search_assets

    if any_of and not tags:
        raise click.UsageError("--any needs at least one --tag")
    query = AssetQuery(
        all_of=() if any_of else tags, any_of=tags if any_of else (), none_of=none_of, scope=scope_of(collection)
    )
    with database() as session:
        found = search_assets(session, query, limit=limit)
    if as_json:
        for asset in found:
            click.echo(json.dumps(asset_json(asset)))
        return
    console.print(search_table(query, found, limit))


def search_table(query: AssetQuery, found: list[LibraryAsset], limit: int) -> Table:
    wanted = " or ".join(map(str, query.any_of)) if query.any_of else " and ".join(map(str, query.all_of))
    title = f"{len(found)} asset(s)" + (f" with {wanted}" if wanted else "")
    if query.none_of:
        title += f", without {' or '.join(map(str, query.none_of))}"
    if not query.scope.is_whole_library:
        title += f", in {query.scope.describe()}"
    if len(found) == limit:
        title += f" (the first {limit}: --limit for more)"
    table = compact_table(escape(title), show_lines=True)
    add_cell(table, "asset", max_width=24)
    # The tags are what was asked for: they get the rest of the line, a line per category.
    table.add_column("tags", ratio=1, min_width=20, overflow="fold")
    for asset in found:
        where = [asset.external_id or f"#{asset.asset_id}", short_url(asset.url)]
        if query.scope.collection is None:
            where.append(asset.collection or "(no collection)")
        by_category: dict[str, list[str]] = {}
        for tag in asset.tags:
            by_category.setdefault(tag.category, []).append(tag.label)
        table.add_row(
            "\n".join(escape(shorten(line, 24)) for line in where),
            "\n".join(f"[bold]{escape(c)}[/]: {escape(', '.join(labels))}" for c, labels in by_category.items()) or "-",
        )
    return table


# --- tags ----------------------------------------------------------------------------------------


@click.group()
def tags() -> None:
    """The library's tag inventory: top tags, two collections compared, an export."""


@tags.command("top")
@click.option("--category", help='Only this category ("client" for client tags).')
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 10_000))
@in_option()
@json_option()
def tags_top(category: str | None, limit: int, collection: str | None, as_json: bool) -> None:
    """The most frequent tags, by the assets carrying them, and their share of the assets."""
    from services.library import tag_frequency

    scope = scope_of(collection)
    with database() as session:
        freq = tag_frequency(session, scope, category=category, top=limit)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "collection": scope.collection,
                    "category": category,
                    "total_assets": freq.total_assets,
                    "tags": [
                        {"category": t.category, "label": t.label, "assets": t.assets, "share": round(t.share, 6)}
                        for t in freq.tags
                    ],
                }
            )
        )
        return
    what = f"{category} tags" if category else "tags"
    table = compact_table(escape(f"Top {len(freq.tags)} {what} of {scope.describe()} ({freq.total_assets:,} assets)"))
    add_cell(table, "#", justify="right")
    add_cell(table, "category", max_width=12)
    add_cell(table, "label", ratio=1, min_width=12)
    add_cell(table, "assets", justify="right")
    add_cell(table, "share", justify="right")
    bar = 20 if console.width >= 100 else 12  # on 80 columns the labels need the room more
    add_cell(table, "", width=bar)
    for rank, t in enumerate(freq.tags, start=1):
        table.add_row(
            str(rank), escape(t.category), escape(t.label), f"{t.assets:,}", f"{t.share:.1%}", _bar(t.share, bar)
        )
    console.print(table)


@tags.command("diff")
@click.argument("a", metavar="A")
@click.argument("b", metavar="B")
@click.option("--category", help="Only this category.")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 10_000), help="Rows of the table.")
@json_option()
def tags_diff(a: str, b: str, category: str | None, limit: int, as_json: bool) -> None:
    """How collection A's tags differ from collection B's: the tags whose share of the assets
    differs most (A's tags that B lacks, "only A", first among equals)."""
    from services.library import compare_subsets, list_collections

    scope_a, scope_b = scope_of(a), scope_of(b)
    with database() as session:
        known = {c.collection for c in list_collections(session)}
        for name in (a, b):
            if name.strip() not in known:
                names = ", ".join(sorted(c for c in known if c)) or "none yet"
                raise click.BadParameter(f"no assets in collection {name!r} (collections: {names})")
        cmp = compare_subsets(session, scope_a, scope_b, category=category)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "a": {"collection": scope_a.collection, "assets": cmp.a_assets},
                    "b": {"collection": scope_b.collection, "assets": cmp.b_assets},
                    "only_in_a": [str(t.tag) for t in cmp.only_in_a],
                    "only_in_b": [str(t.tag) for t in cmp.only_in_b],
                    "tags": [
                        {
                            "category": t.category,
                            "label": t.label,
                            "a_assets": t.a_assets,
                            "b_assets": t.b_assets,
                            "a_share": round(t.a_share, 6),
                            "b_share": round(t.b_share, 6),
                        }
                        for t in cmp.tags
                    ],
                }
            )
        )
        return
    rows = sorted(cmp.tags, key=lambda t: (-abs(t.a_share - t.b_share), bool(t.b_assets), t.category, t.label))
    table = compact_table(
        escape(
            f"A = {a} ({cmp.a_assets:,} assets), B = {b} ({cmp.b_assets:,}): "
            f"{len(cmp.only_in_a)} tag(s) only in A, {len(cmp.only_in_b)} only in B"
        )
    )
    add_cell(table, "tag", ratio=1, min_width=16)
    add_cell(table, "A", justify="right")
    add_cell(table, "B", justify="right")
    add_cell(table, "A-B", justify="right")
    add_cell(table, "")
    for t in rows[:limit]:
        where = "only A" if not t.b_assets else "only B" if not t.a_assets else ""
        table.add_row(
            escape(str(t.tag)),
            f"{t.a_assets:,} {t.a_share:4.0%}",
            f"{t.b_assets:,} {t.b_share:4.0%}",
            f"{100 * (t.a_share - t.b_share):+.0f} pts",
            where,
        )
    console.print(table)
    if len(rows) > limit:
        console.print(f"{len(rows) - limit} more tag(s): --limit {len(rows)} or --json")


CSV_COLUMNS = ("url", "id", "collection", "request_id", "job_id", "tagged_at", "category", "label")


@tags.command("export")
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl"]), default="jsonl", show_default=True)
@in_option()
def tags_export(fmt: str, collection: str | None) -> None:
    """Every asset of the library (or of a collection) with its tags, to standard output.

    jsonl: one asset per line, with its tags. csv: one row per tag (an asset without tags: one
    row with empty category and label). Streamed in constant memory however large the library;
    a progress bar on standard error when it is a terminal.
    """
    from services.library import stream_assets, subset_size

    scope = scope_of(collection)
    out = sys.stdout
    write = _csv_writer(out) if fmt == "csv" else _jsonl_writer(out)
    with database() as session:
        total = subset_size(session, scope)
        with _ExportProgress(total) as advance:
            try:
                for asset in stream_assets(session, AssetQuery(scope=scope)):
                    write(asset)
                    advance()
                out.flush()
            except BrokenPipeError:  # `| head`: the reader has what it wanted
                _silence_stdout()
                sys.exit(1)


def _csv_writer(out):
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)

    def write(asset: LibraryAsset) -> None:
        head = (
            asset.url,
            asset.external_id or "",
            asset.collection or "",
            asset.request_id,
            str(asset.job_id),
            asset.tagged_at.isoformat(),
        )
        writer.writerows([(*head, t.category, t.label) for t in asset.tags] or [(*head, "", "")])

    return write


def _jsonl_writer(out):
    def write(asset: LibraryAsset) -> None:
        out.write(json.dumps(asset_json(asset)) + "\n")

    return write


class _ExportProgress:
    """A progress bar on standard error when it is a terminal; nothing otherwise (a pipe, a file,
    a CI log), so standard output carries only the export."""

    def __init__(self, total: int) -> None:
        self.total, self.done, self.bar = total, 0, None
        err = Console(stderr=True)
        if err.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

            self.bar = Progress(
                "[bold]exporting", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err, transient=True
            )

    def __enter__(self):
        bar = self.bar
        if bar is None:
            return lambda: None
        bar.start()
        task = bar.add_task("export", total=self.total)

        def advance() -> None:
            self.done += 1
            if self.done % 500 == 0 or self.done == self.total:  # a redraw per row would cost more than the row
                bar.update(task, completed=self.done)

        return advance

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


def _silence_stdout() -> None:
    import os

    # Python flushes stdout at exit; with the pipe gone that would raise again.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


# --- report --------------------------------------------------------------------------------------


@click.command()
@in_option("Only this collection (default: the whole library).")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    default=Path("report.html"),
    show_default=True,
    help="The HTML file to write.",
)
def report(collection: str | None, out: Path) -> None:
    """One self-contained HTML page of charts of the library (opens offline): tag frequency by
    category, top client tags, tags found together, assets and jobs over time, Vidmob calls per job."""
    from cli.report import write_report

    scope = scope_of(collection)
    with database() as session:
        written = write_report(session, out, scope)
    console.print(
        f"wrote {written.path} ({written.bytes / 1e6:.1f} MB, {written.assets:,} assets) in {written.seconds:.1f}s"
    )


def _bar(share: float, width: int) -> str:
    eighths = round(max(0.0, min(1.0, share)) * width * 8)
    full, part = divmod(eighths, 8)
    return "█" * full + ("", "▏", "▎", "▍", "▌", "▋", "▊", "▉")[part]
