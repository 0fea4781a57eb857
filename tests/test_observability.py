"""The alert rules, the Grafana dashboard and the prometheus-adapter rules in
deploy/observability/ name only metrics and labels the services export, and the runbook
explains every alert and every metric.

promtool is not on the package registries this project installs from, so instead of
`promtool check rules` these parse the files and check each metric reference against the
registry a service serves.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.metrics import Metrics
from shared.settings import Settings
from shared.topology import Topology

ROOT = Path(__file__).resolve().parent.parent
OBSERVABILITY = ROOT / "deploy" / "observability"
RUNBOOK = ROOT / "docs" / "operations.md"
# Labels Prometheus or its service discovery adds to every series it scrapes.
TARGET_LABELS = {"namespace", "pod", "job", "instance", "service", "container", "endpoint"}
# Series Prometheus makes itself rather than scraping them.
PROMETHEUS_OWN = {"up"}
METRIC = re.compile(r"\b((?:darkroom|process|python)_[a-z_]+)\b(\{[^}]*\})?")


def exported() -> dict[str, set[str]]:
    """Every series name a service exports, with the labels it may carry."""
    registry = Metrics().registry
    names: dict[str, set[str]] = {}
    for name, collector in registry._names_to_collectors.items():
        labels = set(getattr(collector, "_labelnames", ()))
        names[name] = labels | ({"le"} if name.endswith("_bucket") else set())
    for family in registry.collect():
        for sample in family.samples:
            names.setdefault(sample.name, set()).update(sample.labels)
    return names


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load((OBSERVABILITY / "alerts.yaml").read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def dashboard_exprs() -> Iterator[str]:
    doc = json.loads((OBSERVABILITY / "dashboard.json").read_text())
    for panel in doc["panels"]:
        for target in panel.get("targets", []):
            yield target["expr"]


def adapter_rules() -> list[dict[str, Any]]:
    doc: dict[str, Any] = yaml.safe_load((OBSERVABILITY / "prometheus-adapter.yaml").read_text())
    return list(doc["external"])


def every_expr() -> Iterator[tuple[str, str]]:
    for rule in alert_rules():
        yield rule["alert"], rule["expr"]
    for n, expr in enumerate(dashboard_exprs()):
        yield f"dashboard #{n}", expr
    for rule in adapter_rules():
        yield "prometheus-adapter", rule["metricsQuery"]
        yield "prometheus-adapter series", rule["seriesQuery"]


def label_names(matchers: str) -> set[str]:
    return set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", matchers))


def test_every_metric_and_label_in_rules_dashboard_and_adapter_is_exported() -> None:
    names = exported()
    checked = 0
    for where, expr in every_expr():
        for name, matchers in METRIC.findall(expr):
            assert name in names, f"{where}: {name} is not exported"
            unknown = label_names(matchers) - names[name] - TARGET_LABELS
            assert not unknown, f"{where}: {name} has no label {unknown}"
            checked += 1
        for name in re.findall(r"\b([a-z_]+)\{", expr):
            assert name in names or name in PROMETHEUS_OWN, f"{where}: unknown series {name}"
    assert checked > 40


def test_every_expression_is_balanced() -> None:
    for where, expr in every_expr():
        stack: list[str] = []
        for char in re.sub(r'"[^"]*"', '""', expr):
            if char in "([{":
                stack.append(char)
            elif char in ")]}":
                assert stack and "([{"[")]}".index(char)] == stack.pop(), f"{where}: {expr}"
        assert not stack, f"{where}: unclosed {stack} in {expr}"


def test_alerts_have_a_severity_a_duration_and_a_runbook_section() -> None:
    runbook = RUNBOOK.read_text()
    rules = alert_rules()
    assert len({r["alert"] for r in rules}) == len(rules), "alert names repeat"
    for rule in rules:
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}, rule["alert"]
        assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        anchor = rule["annotations"]["runbook"].split("#", 1)[1]
        assert anchor == rule["alert"].lower()
        assert re.search(rf"^### {rule['alert']}$", runbook, re.M), (
            f"docs/operations.md has no section for {rule['alert']}"
        )


def test_runbook_explains_every_darkroom_metric() -> None:
    runbook = RUNBOOK.read_text()
    families = {
        re.sub(r"_(total|created|bucket|sum|count)$", "", name)
        for name in exported()
        if name.startswith("darkroom_")
    }
    missing = {f for f in families if f not in runbook}
    assert not missing, f"docs/operations.md does not explain {sorted(missing)}"


def test_dashboard_panels_have_unique_ids_and_use_the_datasource_variable() -> None:
    doc = json.loads((OBSERVABILITY / "dashboard.json").read_text())
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    assert any(v["type"] == "datasource" for v in doc["templating"]["list"])
    for panel in doc["panels"]:
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]


@pytest.fixture
def topology() -> Topology:
    return Topology.from_settings(Settings(topology_prefix="darkroom"))


def test_worker_hpas_scale_on_the_adapter_metric_for_real_queues(topology: Topology) -> None:
    served = {rule["name"]["as"] for rule in adapter_rules()}
    path = ROOT / "deploy" / "k8s" / "components" / "hpa-workers" / "hpa.yaml"
    queues = {q.name for q in topology.all_queues()}
    seen = set()
    for hpa in yaml.safe_load_all(path.read_text()):
        for metric in hpa["spec"]["metrics"]:
            external = metric["external"]["metric"]
            assert external["name"] in served
            queue = external["selector"]["matchLabels"]["queue"]
            assert queue in queues
            seen.add(queue)
    assert seen == queues, "every consumer queue drives an HPA"
