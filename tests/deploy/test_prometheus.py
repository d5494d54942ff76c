"""Prometheus and Grafana material: promtool accepts the scrape config and the alert rules, the rules' unit tests
pass, and every metric an alert or a dashboard panel asks for is one that a Labelgate service exports."""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from prometheus_client.metrics_core import Metric

from .helpers import ROOT, program, read_yaml, run

pytestmark = pytest.mark.unit

PROMETHEUS = ROOT / "deploy" / "prometheus"
DASHBOARDS = ROOT / "deploy" / "grafana" / "dashboards"
METRIC_NAME = re.compile(r"\blabelgate_[a-z0-9_]+\b")
# The modules that define metrics at import (the metrics service's business metrics come from its collector).
METRIC_MODULES = (
    "labelgate_core.consumer",
    "labelgate_core.outbox",
    "labelgate_core.store.mongo",
    "labelgate_labeler.service",
    "labelgate_review_api.endpoints",
    "labelgate_review_api.service",
    "labelgate_router.service",
)
# Grafana's variables, replaced by values Prometheus accepts so that promtool can parse the queries.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h", "$project": ".*"}


def promtool() -> str:
    return program("promtool", "prometheus")


def test_promtool_accepts_the_scrape_config_and_the_rule_files_it_names() -> None:
    run([promtool(), "check", "config", str(PROMETHEUS / "prometheus.yml")])


def test_promtool_accepts_the_alert_rules() -> None:
    run([promtool(), "check", "rules", str(PROMETHEUS / "alerts.yml")])


def test_the_alert_rules_fire_when_their_unit_tests_say() -> None:
    # Run from the folder: the test file names the rules relative to itself.
    run([promtool(), "test", "rules", "alerts.test.yml"], cwd=PROMETHEUS)


def exported_series() -> set[str]:
    """The series names every Labelgate service can expose, from their metric definitions (no service runs)."""
    for module in METRIC_MODULES:  # importing them registers their metrics in the default registry
        importlib.import_module(module)
    from labelgate_metrics.collector import MetricsCollector

    families: list[Metric] = [*REGISTRY.collect(), *MetricsCollector().describe()]
    suffixes = {
        "counter": ("_total",),
        "histogram": ("_bucket", "_sum", "_count"),
        "summary": ("_sum", "_count", ""),
        "gauge": ("",),
        "info": ("_info",),
    }
    return {family.name + suffix for family in families for suffix in suffixes.get(family.type, ("",))}


def alert_expressions() -> Iterator[tuple[str, str]]:
    for group in read_yaml(PROMETHEUS / "alerts.yml")["groups"]:
        for rule in group["rules"]:
            yield rule["alert"], rule["expr"]


def dashboard_queries() -> Iterator[tuple[str, str]]:
    for path in sorted(DASHBOARDS.glob("*.json")):
        dashboard = json.loads(path.read_text(encoding="utf-8"))
        for panel in _panels(dashboard):
            for target in panel.get("targets", []):
                yield f"{path.name}: {panel['title']}", target["expr"]


def _panels(container: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in container.get("panels", []):
        yield panel
        yield from _panels(panel)


def test_every_alert_is_about_metrics_the_services_export() -> None:
    exported = exported_series()
    unknown = {name: METRIC_NAME.findall(expr) for name, expr in alert_expressions()}
    unknown = {name: [m for m in metrics if m not in exported] for name, metrics in unknown.items()}
    assert {name: metrics for name, metrics in unknown.items() if metrics} == {}


def test_every_dashboard_panel_queries_metrics_the_services_export() -> None:
    exported = exported_series()
    queries = list(dashboard_queries())
    assert queries, "no dashboard queries found"
    unknown = {where: [m for m in METRIC_NAME.findall(expr) if m not in exported] for where, expr in queries}
    assert {where: metrics for where, metrics in unknown.items() if metrics} == {}


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    """promtool parses each query as a recording rule's expression: a syntax error fails here, not in Grafana."""
    rules = []
    for i, (_, expr) in enumerate(dashboard_queries()):
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, f"a Grafana variable this test does not know: {expr}"
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}), encoding="utf-8")
    run([promtool(), "check", "rules", str(path)])


def test_the_dashboards_use_the_provisioned_datasource() -> None:
    datasources = read_yaml(ROOT / "deploy" / "grafana" / "provisioning" / "datasources" / "prometheus.yml")
    uids = {source["uid"] for source in datasources["datasources"]}
    for path in sorted(DASHBOARDS.glob("*.json")):
        dashboard = json.loads(path.read_text(encoding="utf-8"))
        for panel in _panels(dashboard):
            if panel["type"] != "row":
                assert panel["datasource"]["uid"] in uids, f"{path.name}: {panel['title']}"
