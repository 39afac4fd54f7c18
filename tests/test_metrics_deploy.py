"""deploy/grafana and deploy/prometheus: built on metrics a real bridge exports, in valid shape.

Every metric name in the dashboard's queries and the alert rules' expressions must
be one a running bridge's ``GET /metrics`` declares (``up``, which Prometheus makes
itself for every target, is the one exception). The rules file must have the
Prometheus rule-group shape; where ``promtool`` is installed (Debian/Ubuntu package
``prometheus``) it also checks the file and runs its unit tests
(``deploy/prometheus/smbridge-rules.test.yml``).
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
import treq
import yaml
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase
from twisted.web.client import HTTPConnectionPool

from smbridge.testing import start_site
from smbridge.tunnel.harness import need_binary

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
DASHBOARD = DEPLOY / "grafana" / "smbridge.json"
RULES = DEPLOY / "prometheus" / "smbridge-rules.yml"
RULES_TEST = DEPLOY / "prometheus" / "smbridge-rules.test.yml"

# Names Prometheus makes itself for every scrape target (not in any /metrics output).
SYNTHETIC = {"up"}
# PromQL functions and aggregations the files may call, and its keywords.
FUNCTIONS = {
    "abs", "absent", "avg", "avg_over_time", "ceil", "changes", "clamp_max", "clamp_min",
    "count", "delta", "deriv", "floor", "histogram_quantile", "idelta", "increase", "irate",
    "label_values", "max", "max_over_time", "min", "min_over_time", "quantile", "rate",
    "resets", "round", "sort", "sort_desc", "sum", "time", "topk", "bottomk", "vector",
}  # fmt: skip
KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring"}
RULE_KEYS = {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}
DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL (or Grafana ``label_values``) expression reads."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)  # strings
    text = re.sub(r"\$\{[^}]*\}|\$\w+", "", text)  # Grafana variables
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    text = re.sub(r"label_values\(([^,()]*),[^()]*\)", r"label_values(\1)", text)  # (m, label)
    names = set()
    for match in re.finditer(r"(?<![\w.])([A-Za-z_:][\w:]*)(\s*\()?", text):
        word, call = match.group(1), match.group(2)
        if call:
            assert word in FUNCTIONS, f"unknown function {word!r} in {expr!r}"
        elif word not in KEYWORDS:
            names.add(word)
    return names


def test_metric_names_are_read_from_expressions():
    """The parser keeps metric names and drops labels, ranges, strings, variables, functions."""
    expr = (
        'histogram_quantile(0.95, sum by (instance, le) (rate(smbridge_x_bucket{job=~"$job",'
        'le!="1"}[$__rate_interval]))) > 0.8 * on(instance) smbridge_y and up{a="b c"} == 0'
    )
    assert metric_names(expr) == {"smbridge_x_bucket", "smbridge_y", "up"}
    assert metric_names('label_values(smbridge_info{job=~"$job"}, instance)') == {"smbridge_info"}
    with pytest.raises(AssertionError):
        metric_names("made_up_function(smbridge_y)")


def dashboard_exprs() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    for variable in board["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict):
            exprs.append(query["query"])
    return exprs


def rules() -> list[dict[str, Any]]:
    data = yaml.safe_load(RULES.read_text())
    return [rule for group in data["groups"] for rule in group["rules"]]


def test_rules_file_has_the_prometheus_rule_group_shape():
    """groups: [{name, rules: [{alert, expr, for, labels, annotations}]}], names unique."""
    data = yaml.safe_load(RULES.read_text())
    assert set(data) == {"groups"}
    names = [g["name"] for g in data["groups"]]
    assert len(names) == len(set(names)) and all(isinstance(n, str) and n for n in names)
    alerts = []
    for group in data["groups"]:
        assert set(group) <= {"name", "interval", "limit", "rules"}
        for rule in group["rules"]:
            assert set(rule) <= RULE_KEYS, rule
            assert isinstance(rule["alert"], str) and re.fullmatch(r"[A-Za-z_]\w*", rule["alert"])
            assert isinstance(rule["expr"], str) and rule["expr"].strip()
            assert DURATION.match(rule.get("for", "0s")), rule
            for key in ("labels", "annotations"):
                assert all(isinstance(v, str) for v in rule.get(key, {}).values()), rule
            assert rule["labels"]["severity"] in {"critical", "warning"}
            assert {"summary", "description"} <= set(rule["annotations"])
            alerts.append(rule["alert"])
    assert len(alerts) == len(set(alerts))
    # The four the operators asked for: link down, refusals, the safeguard, held bytes.
    assert {
        "SmbridgeNotifierLinkDown",
        "SmbridgeLogonFailuresHigh",
        "SmbridgeRequestsRefused",
        "SmbridgeMemorySafeguardActive",
        "SmbridgeHeldBytesHigh",
    } <= set(alerts)


def test_promtool_checks_the_rules_and_runs_their_unit_tests():
    """promtool accepts the rules file, and every alert fires (only) where its test says."""
    need_binary("/usr/bin/promtool", "promtool (apt: prometheus)")
    check = subprocess.run(
        ["promtool", "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"SUCCESS: {len(rules())} rules found" in check.stdout
    tested = subprocess.run(
        ["promtool", "test", "rules", RULES_TEST.name],
        cwd=RULES_TEST.parent,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    covered = set(re.findall(r"alertname: (\w+)", RULES_TEST.read_text()))
    assert covered == {r["alert"] for r in rules()}  # every alert has a test


def test_dashboard_is_grafana_json_with_queries_and_units():
    """Every panel but rows has a Prometheus query, a unit, a unique id and a place."""
    board = json.loads(DASHBOARD.read_text())
    assert board["uid"] == "smbridge" and board["schemaVersion"] >= 30
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"])
        if panel["type"] == "row":
            continue
        assert panel["targets"] and all(t["expr"] for t in panel["targets"]), panel["title"]
        assert panel["fieldConfig"]["defaults"]["unit"], panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}"
    names = set().union(*(metric_names(e) for e in dashboard_exprs()))
    assert {
        "smbridge_logon_duration_seconds_bucket",
        "smbridge_request_duration_seconds_bucket",
        "smbridge_notification_delay_seconds_bucket",
        "smbridge_resume_duration_seconds_bucket",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
    } <= names


def exported_names(text: str) -> set[str]:
    """Every sample name a scrape could carry: its samples and its declared families."""
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.update(s.name for s in family.samples)
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names.update(family.name + s for s in ("_bucket", "_sum", "_count"))
        else:
            names.add(family.name)
    return names


@pytest.mark.integration
class NamesExist(TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def test_every_name_in_the_dashboard_and_rules_is_exported_by_a_real_bridge(self):
        """A real bridge's /metrics declares each metric the dashboard and the rules read."""
        site = yield start_site(
            reactor, Path(tempfile.mkdtemp(prefix="smbridge-metrics-deploy-")), admin_port=0
        )
        self.addCleanup(site.stop)
        pool = HTTPConnectionPool(reactor, persistent=False)
        response = yield treq.get(f"http://127.0.0.1:{site.bridge.admin_port}/metrics", pool=pool)
        exported = exported_names((yield response.text()))
        used = {
            name: where
            for where, exprs in (
                ("dashboard", dashboard_exprs()),
                ("rules", [r["expr"] for r in rules()]),
            )
            for expr in exprs
            for name in metric_names(expr)
        }
        self.assertGreater(len(used), 20)
        missing = sorted(f"{n} ({w})" for n, w in used.items() if n not in exported | SYNTHETIC)
        self.assertEqual(missing, [])
