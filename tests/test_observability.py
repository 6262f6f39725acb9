"""What operators load as it is (deploy/observability/): the Grafana dashboard and the Prometheus alert rules.

Offline, with no Prometheus or Grafana: every expression is parsed by a real PromQL parser (promql-parser,
the Rust parser GreptimeDB uses), and every metric it reads must be one the code exports, collected from
the code's own metric objects (the worker's, the dispatcher's, and the job counts read from a real
PostgreSQL), not from a list kept by hand. An alert whose metric was renamed, a histogram read without
`_bucket`, a counter without `_total`, a runbook link to a section that does not exist: each fails here.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
OBSERVABILITY = ROOT / "deploy" / "observability"
DASHBOARD_FILE = OBSERVABILITY / "grafana-dashboard.json"
ALERTS_FILE = OBSERVABILITY / "prometheus-alerts.yaml"
OPERATIONS_DOC = ROOT / "docs" / "operations.md"

# What Grafana substitutes in a query before Prometheus sees it; any other `$` is a mistake here.
GRAFANA_DURATIONS = ("$__rate_interval", "$__interval", "$__range")
DATASOURCE_VARIABLE = "${DS_PROMETHEUS}"
# The sample names prometheus_client serves for each kind of metric family.
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD_FILE.read_text())


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS_FILE.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])  # a collapsed row holds its panels


def graph_panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in panels(board) if p["type"] != "row"]


def expressions() -> list[tuple[str, str]]:
    """(where, PromQL) for every query the two files run, as Prometheus receives it."""
    found = []
    for panel in graph_panels(dashboard()):
        for target in panel.get("targets", []):
            expr = target.get("expr", "")
            for variable in GRAFANA_DURATIONS:
                expr = expr.replace(variable, "5m")
            found.append((f"dashboard: {panel['title']} ({target.get('refId')})", expr))
    for rule in alert_rules():
        found.append((f"alert: {rule['alert']}", str(rule["expr"])))
    return found


EXPRESSIONS = expressions()


def selectors(expr: promql_parser.Expr) -> list[str]:
    names: list[str] = []

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            names.append(node.name or "")

    promql_parser.walk(expr, visit)
    return names


def walk_with_ancestors(expr: promql_parser.Expr, visit: Callable[[Any, list[Any]], None]) -> None:
    stack: list[Any] = []

    def pre(node: Any) -> None:
        visit(node, stack)
        stack.append(node)

    def post(node: Any) -> None:
        stack.pop()

    promql_parser.walk(expr, pre, post)


@pytest.fixture(scope="module")
def exported(app_env) -> dict[str, str]:
    """Every sample name the code serves, mapped to its family's type, from the code's metric objects."""
    from prometheus_client import CollectorRegistry

    from workers.dispatcher import DispatcherMetrics
    from workers.metrics import JobsCollector, metrics

    worker = metrics()
    families = [f for field in dataclasses.fields(worker) for f in getattr(worker, field.name).describe()]
    dispatcher = DispatcherMetrics.create(CollectorRegistry())
    families += [f for field in dataclasses.fields(dispatcher) for f in getattr(dispatcher, field.name).describe()]
    # The job counts are collected on scrape only, from PostgreSQL: collect them from the real database.
    job_counts = list(JobsCollector(cache_s=0).collect())
    (up,) = [f for f in job_counts if f.name == "aperture_jobs_query_up"]
    assert up.samples[0].value == 1, "the job counts were read from PostgreSQL"
    families += job_counts
    names = {f"{f.name}{suffix}": f.type for f in families for suffix in SUFFIXES[f.type]}
    assert "aperture_dispatcher_looks_total" in names and "aperture_api_request_seconds_bucket" in names
    return names


# ------------------------------------------------------------------------------------------ PromQL


@pytest.mark.parametrize(("where", "expr"), EXPRESSIONS, ids=[w for w, _ in EXPRESSIONS])
def test_every_expression_parses_as_promql(where: str, expr: str) -> None:
    assert "$" not in expr, f"{where}: a Grafana variable Prometheus would not understand"
    promql_parser.parse(expr)  # raises ValueError with the parser's reason


def test_the_parser_rejects_what_prometheus_would() -> None:
    for broken in ("sum(rate(aperture_jobs_stuck[5m])", "histogram_quantil(0.9, x_bucket)", "rate(x_total)"):
        with pytest.raises(ValueError):
            promql_parser.parse(broken)


def test_every_metric_an_expression_reads_is_one_the_code_exports(exported: dict[str, str]) -> None:
    unknown = {}
    for where, expr in EXPRESSIONS:
        read = set(selectors(promql_parser.parse(expr))) | set(re.findall(r"\baperture_\w+", expr))
        if missing := read - set(exported):
            unknown[where] = sorted(missing)
    assert not unknown, f"metrics the code does not export (renamed? a counter without _total?): {unknown}"


def test_quantiles_are_read_from_histogram_buckets_by_le(exported: dict[str, str]) -> None:
    def check(node: Any, ancestors: list[Any]) -> None:
        if isinstance(node, promql_parser.Call) and node.func.name == "histogram_quantile":
            inner = node.args[1]
            names = selectors(inner)
            assert names and all(n.endswith("_bucket") and exported.get(n) == "histogram" for n in names), names
            assert isinstance(inner, promql_parser.AggregateExpr) and inner.modifier is not None, str(node)
            assert "le" in inner.modifier.labels, str(node)

    quantiles = [expr for _, expr in EXPRESSIONS if "histogram_quantile" in expr]
    assert quantiles
    for expr in quantiles:
        walk_with_ancestors(promql_parser.parse(expr), check)


def test_job_counts_are_combined_across_pods_with_max_never_sum(exported: dict[str, str]) -> None:
    # Every worker pod reports the same counts from PostgreSQL: sum() would multiply them by the pods.
    job_counts = {n for n in exported if n == "aperture_jobs" or n.startswith("aperture_jobs_")}
    offending: list[tuple[str, str]] = []

    def check(node: Any, ancestors: list[Any]) -> None:
        if isinstance(node, promql_parser.VectorSelector) and node.name in job_counts:
            around = [str(a.op) for a in ancestors if isinstance(a, promql_parser.AggregateExpr)]
            around += [a.func.name for a in ancestors if isinstance(a, promql_parser.Call)]
            if not {"max", "min", "count", "absent"} & set(around) or "sum" in around:
                offending.append((node.name, f"under {around or 'no aggregation'}"))

    for where, expr in EXPRESSIONS:
        before = len(offending)
        walk_with_ancestors(promql_parser.parse(expr), check)
        offending[before:] = [(where, f"{name} {how}") for name, how in offending[before:]]
    assert not offending


# --------------------------------------------------------------------------------------- dashboard


def test_the_dashboard_loads_on_any_prometheus_datasource() -> None:
    board = dashboard()
    assert board["schemaVersion"] >= 36
    (variable,) = [v for v in board["templating"]["list"] if v["type"] == "datasource"]
    assert (variable["name"], variable["query"]) == ("DS_PROMETHEUS", "prometheus")
    # No datasource uid of one Grafana: every reference is the variable.
    uids = re.findall(r'"uid":\s*"([^"]*)"', DASHBOARD_FILE.read_text())
    assert set(uids) == {"aperture-workers", DATASOURCE_VARIABLE}, set(uids)
    ids = [p["id"] for p in panels(board)]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    for panel in graph_panels(board):
        assert panel["datasource"] == {"type": "prometheus", "uid": DATASOURCE_VARIABLE}, panel["title"]
        assert panel["targets"], f"{panel['title']}: no query"
        for target in panel["targets"]:
            assert target["expr"].strip() and target["datasource"] == panel["datasource"], panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]


def test_the_dashboard_shows_every_metric_the_code_exports(exported: dict[str, str]) -> None:
    shown = {
        name
        for where, expr in EXPRESSIONS
        if where.startswith("dashboard")
        for name in selectors(promql_parser.parse(expr))
    }

    def family(name: str) -> str:
        return name if exported.get(name) == "gauge" else re.sub(r"_(total|bucket|sum|count)$", "", name)

    # A metric added to the code shows up on the dashboard too, or this fails.
    assert {family(n) for n in exported} - {family(n) for n in shown} == set()


# ------------------------------------------------------------------------------------------ alerts


def anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    found = set()
    for line in markdown.splitlines():
        if m := re.match(r"#{1,6}\s+(.*)", line):
            text = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower())
            found.add(text.replace(" ", "-"))
    return found


def test_every_alert_says_how_bad_what_and_where_its_runbook_is() -> None:
    documented = anchors(OPERATIONS_DOC.read_text())
    rules = alert_rules()
    assert rules and all("alert" in r for r in rules), "an alerting rule file, no recording rules"
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names))
    for rule in rules:
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), rule["alert"]
        annotations = rule["annotations"]
        assert annotations["summary"].strip() and annotations["description"].strip(), rule["alert"]
        doc, _, anchor = annotations["runbook_url"].partition("#")
        assert doc == "docs/operations.md", rule["alert"]
        assert anchor in documented, f"{rule['alert']}: no section #{anchor} in docs/operations.md"
        assert anchor == rule["alert"].lower(), "each alert's runbook is the section named after it"
        if "for" in rule:
            assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["alert"]


def test_the_alerts_cover_what_the_issue_asks_for() -> None:
    # Stuck jobs, dispatcher lag and absence, Vidmob API errors, the open-jobs cap, duplicate-risk jobs.
    read = {r["alert"]: set(selectors(promql_parser.parse(str(r["expr"])))) for r in alert_rules()}
    by_metric = {m: {a for a, names in read.items() if m in names} for m in set().union(*read.values())}
    for metric in (
        "aperture_jobs_stuck",
        "aperture_dispatcher_last_pass_timestamp_seconds",
        "aperture_dispatcher_lateness_seconds_bucket",
        "aperture_api_requests_total",
        "aperture_jobs_open_cap",
        "aperture_jobs_duplicate_risk",
    ):
        assert by_metric.get(metric), f"no alert reads {metric}"
    absent = [r for r in alert_rules() if str(r["expr"]).startswith("absent(aperture_dispatcher_")]
    assert absent and absent[0]["labels"]["severity"] == "critical", "a dispatcher that is gone pages"
