"""The library's command line, as a person and a program use it: `aperture assets search`,
`aperture tags top|diff|export`, on an 80-column terminal and with --json; and `aperture jobs list`
fitting one line per job on 80 columns.

Tags are stored the way production stores them (tests/test_library.py::tag_job), in two
collections of this module's own (summer: test_library's SUMMER), so other tests' rows do not get
in the way.
"""

from __future__ import annotations

import csv
import io
import json
import os
import pty
import subprocess
import sys
import uuid

import pytest

from models.db import session_scope
from tests.conftest import ROOT
from tests.test_library import SUMMER, T0, tag_job

SPRING = [
    ("park", ["visual:outdoor scene", "people:human presence"]),
    ("shop", ["visual:studio backdrop", "brand:logo visible"]),
]


@pytest.fixture(scope="module")
def collections(app_env) -> dict[str, str]:
    """Two collections: summer (5 assets, one without tags) and spring (2 assets)."""
    run = uuid.uuid4().hex[:8]
    names = {"summer": f"summer-{run}", "spring": f"spring-{run}"}
    with session_scope() as s:
        for key, assets in (("summer", SUMMER), ("spring", SPRING)):
            tag_job(
                s,
                [(f"https://cdn.example.com/{run}/{key}/{name}.mp4", tags) for name, tags in assets],
                collection=names[key],
                at=T0,
                client_tags=["product-forward"] if key == "summer" else (),
                ids=[f"{key}-{name}" for name, _ in assets],
            )
    return names


def names_of(lines: str) -> list[str]:
    """The asset names (file names without .mp4) of --json / jsonl output."""
    return [json.loads(line)["url"].rsplit("/", 1)[1].removesuffix(".mp4") for line in lines.splitlines()]


def run_cli(*args: str, columns: int = 80, **kwargs) -> subprocess.CompletedProcess:
    """`aperture ...` as its own process on a terminal of ``columns`` columns (COLUMNS, as a shell sets it)."""
    return subprocess.run(
        [sys.executable, "-c", "from cli.main import main; main()", *args],
        cwd=ROOT,
        env={**os.environ, "COLUMNS": str(columns)},
        capture_output="stdout" not in kwargs and "stderr" not in kwargs,
        text=True,
        timeout=60,
        check=False,
        **kwargs,
    )


# --- assets search ---------------------------------------------------------------------------


def test_search_by_all_any_and_none_of_the_tags(collections, aperture):
    summer = collections["summer"]

    both = aperture(
        "assets", "search", "--tag", "brand:logo visible", "--tag", "visual:outdoor scene", "--in", summer, "--json"
    )
    assert both.exit_code == 0, both.output
    assert names_of(both.stdout) == ["beach"]
    asset = json.loads(both.stdout)
    assert asset["id"] == "summer-beach" and asset["collection"] == summer
    assert {"category": "client", "label": "product-forward"} in asset["tags"]

    either = aperture(
        "assets", "search", "--any", "--tag", "brand:logo visible", "--tag", "visual:outdoor scene", "--in", summer
    )
    assert either.exit_code == 0
    assert "4 asset(s) with brand:logo visible or visual:outdoor scene" in either.stdout

    # Newest first: the job's assets in reverse submission order.
    without_client_tags = aperture(
        "assets", "search", "--tag", "brand:", "--none", "client:", "--in", summer, "--json"
    ).stdout
    assert names_of(without_client_tags) == ["city"]
    by_label_anywhere = aperture("assets", "search", "--tag", ":outdoor scene", "--in", summer, "--json").stdout
    assert names_of(by_label_anywhere) == ["forest", "beach"]

    # The table: each asset with its id, file and tags by category.
    table = aperture("assets", "search", "--tag", "people:human presence", "--in", summer).stdout
    assert "summer-beach" in table and "beach.mp4" in table and "summer-city" in table
    assert "people: human presence" in table and "client: product-forward" in table
    paged = aperture("assets", "search", "--tag", "brand:logo visible", "--in", summer, "--limit", "2").stdout
    assert "(the first 2: --limit for more)" in paged


# --- tags top / diff ---------------------------------------------------------------------------


def test_top_tags_of_a_collection_with_their_share(collections, aperture):
    summer = collections["summer"]

    top = json.loads(aperture("tags", "top", "--in", summer, "--limit", "3", "--json").stdout)
    assert top["total_assets"] == 5
    assert top["tags"][0] == {"category": "brand", "label": "logo visible", "assets": 3, "share": 0.6}
    assert [t["assets"] for t in top["tags"]] == [3, 2, 2]

    client = json.loads(aperture("tags", "top", "--in", summer, "--category", "client", "--json").stdout)
    assert client["tags"] == [{"category": "client", "label": "product-forward", "assets": 2, "share": 0.4}]

    table = aperture("tags", "top", "--in", summer).stdout
    assert f"tags of collection '{summer}' (5 assets)" in table
    assert "logo visible" in table and "60.0%" in table


def test_diff_of_two_collections(collections, aperture):
    summer, spring = collections["summer"], collections["spring"]

    diff = json.loads(aperture("tags", "diff", summer, spring, "--json").stdout)
    assert diff["a"] == {"collection": summer, "assets": 5} and diff["b"] == {"collection": spring, "assets": 2}
    assert set(diff["only_in_a"]) == {"client:product-forward", "visual:urban street", "audio:ambient sound"}
    assert diff["only_in_b"] == []
    logo = next(t for t in diff["tags"] if t["label"] == "logo visible")
    assert (logo["a_assets"], logo["b_assets"], logo["a_share"], logo["b_share"]) == (3, 1, 0.6, 0.5)

    table = aperture("tags", "diff", summer, spring).stdout
    assert "3 tag(s) only in A, 0 only in B" in table
    product_forward = next(line for line in table.splitlines() if "client:product-forward" in line)
    assert "+40 pts" in product_forward and "only A" in product_forward


# --- tags export -------------------------------------------------------------------------------


def test_export_every_asset_as_jsonl_and_csv(collections, aperture):
    summer = collections["summer"]

    jsonl = aperture("tags", "export", "--format", "jsonl", "--in", summer)
    assert jsonl.exit_code == 0 and jsonl.stderr == ""  # no progress bar: standard error is not a terminal
    assert names_of(jsonl.stdout) == ["beach", "city", "forest", "quiet", "studio"]  # URL order
    quiet = json.loads(jsonl.stdout.splitlines()[3])
    assert quiet["tags"] == [] and quiet["id"] == "summer-quiet"

    exported = aperture("tags", "export", "--format", "csv", "--in", summer)
    assert exported.exit_code == 0 and exported.stderr == ""
    rows = list(csv.DictReader(io.StringIO(exported.stdout)))
    assert list(rows[0]) == ["url", "id", "collection", "request_id", "job_id", "tagged_at", "category", "label"]
    assert len(rows) == 12 + 1  # a row per tag, and one for the asset without tags
    beach = [(r["category"], r["label"]) for r in rows if r["id"] == "summer-beach"]
    assert beach == [
        ("brand", "logo visible"),
        ("client", "product-forward"),
        ("people", "human presence"),
        ("visual", "outdoor scene"),
    ]
    assert [(r["category"], r["label"]) for r in rows if r["id"] == "summer-quiet"] == [("", "")]


def test_export_shows_progress_on_a_terminal_only(collections):
    summer = collections["summer"]

    piped = run_cli("tags", "export", "--format", "jsonl", "--in", summer)
    assert piped.returncode == 0 and piped.stderr == ""
    assert len(piped.stdout.splitlines()) == 5

    # Standard error on a terminal (a pseudo-terminal here), standard output still to a file.
    controller, terminal = pty.openpty()
    try:
        on_tty = run_cli("tags", "export", "--format", "csv", "--in", summer, stderr=terminal, stdout=subprocess.PIPE)
        os.close(terminal)
        seen = b""
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # the terminal closed: everything was read
                break
            if not chunk:
                break
            seen += chunk
    finally:
        os.close(controller)
    assert on_tty.returncode == 0
    assert b"exporting" in seen and b"5/5" in seen
    assert on_tty.stdout.startswith("url,id,collection,") and "exporting" not in on_tty.stdout


# --- 80 columns --------------------------------------------------------------------------------


def test_every_table_fits_an_80_column_terminal(collections):
    summer, spring = collections["summer"], collections["spring"]

    outputs = {
        "search": run_cli("assets", "search", "--tag", "brand:logo visible"),
        "search in": run_cli("assets", "search", "--any", "--tag", "visual:", "--in", summer),
        "top": run_cli("tags", "top", "--limit", "30"),
        "diff": run_cli("tags", "diff", summer, spring),
        "jobs": run_cli("jobs", "list", "--limit", "20"),
    }
    for name, result in outputs.items():
        assert result.returncode == 0, (name, result.stderr)
        too_long = [line for line in result.stdout.splitlines() if len(line.rstrip()) > 80]
        assert not too_long, (name, too_long)
    assert "beach.mp4" in outputs["search in"].stdout and "visual: outdoor scene" in outputs["search in"].stdout


def test_jobs_list_is_one_line_per_job_on_80_columns_and_its_short_ids_work(collections, aperture):
    from config import get_settings
    from services.durable.intake import accept
    from services.tagging.intake import INTAKE

    with session_scope() as s:  # a job with a long request id and a long error, the widest cells
        bad = {"assets": [{"url": "ftp://cdn.example.com/x.mp4"}], "request_id": f"a-long-request-id-{uuid.uuid4()}"}
        accept(s, INTAKE, bad, task_id=str(uuid.uuid4()), settings=get_settings(), now=T0)
    newest = aperture("jobs", "list", "--limit", "5", "--json").stdout.splitlines()
    expected = [json.loads(line)["id"][:8] for line in newest]

    listed = run_cli("jobs", "list", "--limit", "5")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    job_lines = [line for line in lines if len(line.split()) > 1 and _is_short_id(line.split()[0])]
    # One line per job, newest first, nothing wrapped onto a second line.
    assert [line.split()[0] for line in job_lines] == expected and len(expected) >= 3
    rejected = job_lines[0]
    assert "rejected" in rejected and "a-long-r" in rejected and rejected.rstrip().endswith("…")
    assert all(len(line.rstrip()) <= 80 for line in lines)
    header = next(line for line in lines if line.split()[:2] == ["job", "request"])
    assert header.split() == ["job", "request", "id", "state", "assets", "age", "next", "look", "error"]

    short_id = job_lines[0].split()[0]
    shown = aperture("jobs", "show", short_id)
    assert shown.exit_code == 0, shown.output
    assert short_id in shown.output and "request id" in shown.output
    assert "no job with id or request id 'ffffffff'" in aperture("jobs", "show", "ffffffff").output


def _is_short_id(word: str) -> bool:
    return len(word) == 8 and all(c in "0123456789abcdef" for c in word)


# --- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["assets", "search", "--tag", "logo visible"], "'logo visible': expected CATEGORY:LABEL"),
        (["assets", "search", "--tag", ":"], "':': expected CATEGORY:LABEL"),
        (["assets", "search", "--none", "outdoor"], "'outdoor': expected CATEGORY:LABEL"),
        (["assets", "search", "--any"], "--any needs at least one --tag"),
        (["tags", "top", "--in", ""], "an empty collection or request id prefix names nothing"),
        (["tags", "export", "--format", "xml"], "'xml' is not one of 'csv', 'jsonl'"),
        (["tags", "diff", "no-such-collection", "other"], "no assets in collection 'no-such-collection'"),
    ],
)
def test_bad_input_is_one_clear_line_and_exit_2(collections, aperture, args, says):
    result = aperture(*args)
    assert result.exit_code == 2
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and says in errors[0], result.output
    assert "Traceback" not in result.output
