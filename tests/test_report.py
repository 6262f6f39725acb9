"""`aperture report`: one HTML file that opens offline and shows its charts.

The report is rendered by headless Chromium (Debian's `chromium` package, installed by
`scripts/ensure-chromium.sh`, which `make test` runs) with the network cut off; the page's DOM
after its scripts ran is read back to check that every chart was drawn, and the screenshot is
kept as a test artefact in .aperture/test-artefacts/report.png.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import subprocess
import time
import uuid
from html.parser import HTMLParser
from pathlib import Path

import pytest
from sqlalchemy import update

from clients.http import Attempt, AttemptOutcome
from models import Job, JobState
from models.db import session_scope
from services.durable.attempts import AttemptLog
from services.durable.lifecycle import end_where
from services.library import Scope
from services.tagging.kind import KIND
from tests.conftest import REQUIRE_SERVICES, ROOT
from tests.test_library import T0, tag_job

ARTEFACTS = ROOT / ".aperture" / "test-artefacts"
CHARTS = ("tag-frequency", "client-tags", "co-occurrence", "over-time", "vidmob-calls", "usage-by-caller")
STATUS = "GET /v1/aperture/jobs/{job_id}/status"

SPOTS = [
    ("beach", ["visual:outdoor scene", "brand:logo visible", "people:human presence", "client:lifestyle"]),
    ("city", ["visual:urban street", "brand:logo visible", "people:human presence", "client:lifestyle"]),
    ("studio", ["visual:studio backdrop", "brand:logo visible", "audio:voiceover"]),
    ("forest", ["visual:outdoor scene", "audio:ambient sound"]),
]


def calls(log: AttemptLog, *outcomes: AttemptOutcome) -> AttemptLog:
    """Vidmob calls, as the client hands them to the task: a submission, then status polls."""
    log(Attempt("POST", "POST /v1/aperture/jobs", 201, 120.0, "ok"))
    for outcome in outcomes:
        status = {"ok": 200, "retryable": 503, "terminal": 404}[outcome]
        log(Attempt("GET", STATUS, status, 40.0, outcome))
    return log


@pytest.fixture(scope="module")
def library(app_env) -> str:
    """A collection of two tagged jobs an hour apart and one failed job, with their Vidmob calls."""
    from config import get_settings
    from services.durable.intake import accept
    from services.tagging.intake import INTAKE

    name = f"report-{uuid.uuid4().hex[:8]}"
    base = f"https://cdn.example.com/{name}"
    with session_scope() as s:
        first = tag_job(
            s, [(f"{base}/{n}.mp4", t) for n, t in SPOTS[:2]], collection=name, at=T0, client_tags=["lifestyle"]
        )
        second = tag_job(
            s,
            [(f"{base}/{n}.mp4", t) for n, t in SPOTS[2:]],
            collection=name,
            at=T0 + dt.timedelta(hours=1),
            client_tags=["lifestyle", "product-forward"],
        )
        calls(AttemptLog(), "ok").save(s, KIND, first, "aperture.poll_job")
        calls(AttemptLog(), "retryable", "retryable", "ok").save(s, KIND, second, "aperture.poll_job")
        payload = {"assets": [{"url": f"{base}/broken.mp4"}], "collection": name}
        failed = accept(s, INTAKE, payload, task_id=str(uuid.uuid4()), settings=get_settings(), now=T0)
        calls(AttemptLog(), "terminal").save(s, KIND, failed.row_id, "aperture.poll_job")
        end_where(s, KIND, Job.id == failed.row_id, state=JobState.FAILED, now=T0, error="Vidmob job failed")
        # Created when they were tagged (the database stamps the real time on insert).
        for job_id, at in ((first, T0), (second, T0 + dt.timedelta(hours=1)), (failed.row_id, T0)):
            s.execute(update(Job).where(Job.id == job_id).values(created_at=at))
    return name


def test_the_report_holds_the_numbers_of_its_collection(library):
    from services.library.report import gather_report

    with session_scope() as s:
        report = gather_report(s, Scope(collection=library), now=T0 + dt.timedelta(days=1))

    assert report.frequency.total_assets == 4
    assert report.frequency.tags[0].tag.label == "logo visible" and report.frequency.tags[0].assets == 3
    assert {(c.label, c.requested, c.tagged) for c in report.coverage} == {
        ("lifestyle", 4, 2),
        ("product-forward", 2, 0),
    }
    # The heatmap: logo visible and human presence are found together on beach and city.
    together = {(str(p.first), str(p.second)): p.assets for p in report.pairs}
    assert together[("brand:logo visible", "people:human presence")] == 2
    # Over time, per minute (the jobs are an hour apart): two assets at each tagging.
    assert report.activity.unit == "minute"
    assert [(b.start, b.count) for b in report.activity.assets] == [(T0, 2), (T0 + dt.timedelta(hours=1), 2)]
    assert {b.series: b.count for b in report.activity.jobs if b.start == T0} == {"complete": 1, "failed": 1}
    # Vidmob calls: 2 for the first job, 4 for the second (two 503s retried), 2 for the failed one.
    assert (report.calls.jobs, report.calls.calls) == (3, 8)
    assert report.calls.distribution == ((2, 2), (4, 1))
    by_outcome = {j.state: j.by_outcome for j in report.calls.latest}
    assert by_outcome["failed"] == {"ok": 1, "terminal": 1}


def test_the_report_opens_offline_in_chromium_and_draws_every_chart(library, aperture, tmp_path):
    out = tmp_path / "report.html"

    result = aperture("report", "--in", library, "--out", str(out))

    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.output and "4 assets" in result.output
    page = out.read_text()
    # Self-contained: nothing is loaded from anywhere when it is opened.
    assert not re.search(r"<script[^>]+src=|<link[^>]+href=|<img[^>]+src=\"?http", page)
    assert f"collection &#x27;{library}&#x27;" in page or f"collection '{library}'" in page

    dom, screenshot, seconds = render_in_chromium(out, tmp_path)

    charts = ChartMarks.read(dom)
    for chart in CHARTS:
        assert charts.svgs[chart] >= 1, f"{chart}: no chart drawn"
    # What a person sees: a bar per tag (client tags have their own chart), per client tag and
    # whether it was asked for, per tagging time and job state, per job and outcome.
    assert charts.bars["tag-frequency"] == 7
    assert charts.bars["client-tags"] == 3  # lifestyle asked and tagged, product-forward asked (0 tagged: no bar)
    assert charts.heatmaps["co-occurrence"] == 1
    assert charts.bars["over-time"] >= 4
    assert charts.bars["vidmob-calls"] >= 3 + 2
    # One caller (default): its assets tagged and its calls (nothing reused: no bar for it).
    assert charts.bars["usage-by-caller"] == 2
    assert "brand: logo visible" in charts.texts["tag-frequency"]
    assert "people: human presence" in charts.texts["co-occurrence"]

    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(screenshot, ARTEFACTS / "report.png")
    shutil.copy(out, ARTEFACTS / "report.html")
    assert screenshot.stat().st_size > 50_000  # a page of charts, not a blank one
    print(f"report: {len(page) / 1e6:.1f} MB, rendered in {seconds:.1f}s; screenshot {ARTEFACTS / 'report.png'}")


# --- Chromium ------------------------------------------------------------------------------------


def chromium() -> str:
    found = shutil.which("chromium")
    if found:
        return found
    message = "chromium is not installed: run scripts/ensure-chromium.sh (make test does)"
    if REQUIRE_SERVICES:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def render_in_chromium(page: Path, tmp_path: Path) -> tuple[str, Path, float]:
    """The page's DOM after its scripts ran, and a screenshot of it; the network cut off."""
    screenshot = tmp_path / "report.png"
    argv = [
        chromium(),
        "--headless",
        "--no-sandbox",  # tests run as root in CI
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--host-resolver-rules=MAP * ~NOTFOUND",  # offline: a CDN would not resolve
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--hide-scrollbars",
        "--window-size=1200,3000",
        "--virtual-time-budget=10000",  # until the charts' scripts have run
        f"--screenshot={screenshot}",
        "--dump-dom",
        page.as_uri(),
    ]
    started = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=90, check=False, env={**os.environ})
    seconds = time.monotonic() - started
    assert done.returncode == 0, done.stderr[-2000:]
    assert screenshot.exists(), done.stderr[-2000:]
    return done.stdout, screenshot, seconds


class ChartMarks(HTMLParser):
    """Per chart (the div ``chart-<name>``): its plotly SVGs, drawn bars (of a size: a bar of
    zero is drawn as a flat path), heatmap images and the text of its labels."""

    VOID = {"meta", "link", "br", "img", "input", "hr", "col", "area", "base", "source", "wbr"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, set[str], str | None]] = []
        self.svgs: dict[str, int] = dict.fromkeys(CHARTS, 0)
        self.bars: dict[str, int] = dict.fromkeys(CHARTS, 0)
        self.heatmaps: dict[str, int] = dict.fromkeys(CHARTS, 0)
        self.texts: dict[str, str] = dict.fromkeys(CHARTS, "")

    @classmethod
    def read(cls, dom: str) -> ChartMarks:
        parser = cls()
        parser.feed(dom)
        return parser

    def _chart(self) -> str | None:
        for _, _, ident in reversed(self.stack):
            if ident and ident.startswith("chart-") and ident[6:] in self.svgs:
                return ident[6:]
        return None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        classes = set((attributes.get("class") or "").split())
        chart = self._chart()
        if chart is not None:
            parent_classes = self.stack[-1][1] if self.stack else set()
            if tag == "svg" and "main-svg" in classes:
                self.svgs[chart] += 1
            elif tag == "path" and "point" in parent_classes and _has_area(attributes.get("d") or ""):
                self.bars[chart] += 1
            elif tag == "image" and "hm" in parent_classes:
                self.heatmaps[chart] += 1
        if tag not in self.VOID:
            self.stack.append((tag, classes, attributes.get("id")))

    def handle_endtag(self, tag: str) -> None:
        while self.stack:
            if self.stack.pop()[0] == tag:
                break

    def handle_data(self, data: str) -> None:
        chart = self._chart()
        if chart is not None and self.stack and self.stack[-1][0] in ("text", "tspan"):
            self.texts[chart] += data + "\n"


def _has_area(path: str) -> bool:
    """A bar as plotly draws it, ``M x0,y0 V y1 H x1 V y0 Z``, is not flat."""
    match = re.fullmatch(r"M([-\d.e]+),([-\d.e]+)V([-\d.e]+)H([-\d.e]+)V[-\d.e]+Z", path)
    if match is None:
        return False
    x0, y0, y1, x1 = map(float, match.groups())
    return abs(x1 - x0) >= 0.5 and abs(y1 - y0) >= 0.5
