"""The Grafana dashboard parses, its PromQL parses, and it only asks for metrics the
controller exports (and shows all of them)."""

from __future__ import annotations

import json
import re
from typing import Any, Iterator

import promql_parser
import pytest

from conftest import CHART

DASHBOARD = json.loads((CHART / "dashboards" / "foresight.json").read_text())

# The controller's metrics (prometheus-client names as scraped).
COUNTERS = {
    "foresight_reconciles_total",
    "foresight_scale_actions_total",
    "foresight_prometheus_query_errors_total",
}
GAUGES = {
    "foresight_policy_current_replicas",
    "foresight_policy_desired_replicas",
    "foresight_policy_metric_value",
    "foresight_policy_metric_threshold",
    "foresight_policy_forecast",
    "foresight_policy_forecast_error",
    "foresight_prometheus_circuit_state",
    "foresight_policies_managed",
    "foresight_leader",
}
HISTOGRAMS = {"foresight_reconcile_duration_seconds", "foresight_prometheus_query_duration_seconds"}
EXPORTED = COUNTERS | GAUGES | {f"{h}{s}" for h in HISTOGRAMS for s in ("_bucket", "_sum", "_count")}

GRAFANA_VARS = re.compile(r"\$(__\w+|\{__\w+\})")


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])


def exprs() -> list[tuple[str, str]]:
    """(where, PromQL) for every query: panel targets, annotations and template variables."""
    out = []
    for panel in panels(DASHBOARD):
        for t in panel.get("targets", []):
            out.append((f"panel {panel['title']!r} {t['refId']}", t["expr"]))
    for ann in DASHBOARD["annotations"]["list"]:
        if "expr" in ann:
            out.append((f"annotation {ann['name']!r}", ann["expr"]))
    for var in DASHBOARD["templating"]["list"]:
        if var["type"] == "query":
            q = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            m = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", q)
            assert m, f"variable {var['name']}: expected label_values(selector, label), got {q}"
            out.append((f"variable {var['name']!r}", m.group(1)))
    return out


def metric_names(expr: str) -> set[str]:
    # Grafana substitutes its interval variables before the query reaches Prometheus.
    ast = promql_parser.parse(GRAFANA_VARS.sub("5m", expr))
    names: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            assert node.name, f"selector without a metric name in {expr}"
            names.add(node.name)

    promql_parser.walk(ast, visit)
    return names


def test_dashboard_shape() -> None:
    assert DASHBOARD["uid"] == "foresight-overview"
    assert DASHBOARD["title"] == "Foresight"
    variables = [v["name"] for v in DASHBOARD["templating"]["list"]]
    assert variables == ["datasource", "namespace", "policy"]
    ids = [p["id"] for p in panels(DASHBOARD)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"


def test_panels_do_not_overlap() -> None:
    cells: dict[tuple[int, int], str] = {}
    for p in panels(DASHBOARD):
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = p["title"]


def test_every_query_uses_the_datasource_variable() -> None:
    for panel in panels(DASHBOARD):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        for t in panel["targets"]:
            assert t["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]


@pytest.mark.parametrize("where,expr", exprs(), ids=[w for w, _ in exprs()])
def test_expr_parses_and_uses_only_exported_metrics(where: str, expr: str) -> None:
    names = metric_names(expr)
    assert names, f"{where}: no metric in {expr}"
    unknown = names - EXPORTED
    assert not unknown, f"{where}: {sorted(unknown)} are not metrics the controller exports"


def test_per_policy_panels_follow_the_variables() -> None:
    for where, expr in exprs():
        if "foresight_policy_" in expr and not where.startswith("variable"):
            assert 'namespace=~"$namespace"' in expr and 'policy=~"$policy"' in expr, where


def test_every_exported_metric_is_shown() -> None:
    used: set[str] = set()
    for _, expr in exprs():
        used |= metric_names(expr)
    base = {re.sub(r"_(bucket|sum|count)$", "", n) if any(n.startswith(h) for h in HISTOGRAMS) else n for n in used}
    assert COUNTERS | GAUGES | HISTOGRAMS <= base, f"not on the dashboard: {(COUNTERS | GAUGES | HISTOGRAMS) - base}"


def test_metric_name_check_catches_unknown_metrics() -> None:
    # The checker itself: a misspelt metric is found, labels and functions are not mistaken for metrics.
    assert metric_names('sum by (le) (rate(foresight_reconcile_duraton_seconds_bucket{a="b"}[$__rate_interval]))') == {
        "foresight_reconcile_duraton_seconds_bucket"
    }
    with pytest.raises(ValueError):
        metric_names("sum(foresight_leader")
