"""deploy/monitoring/: the alert rules pass `promtool check rules` and their
unit tests (`promtool test rules`), every PromQL expression of the Grafana
dashboard parses, and every metric either names is one ovault exposes."""
from __future__ import annotations

import asyncio
import json
import pathlib
import re
import shutil
import subprocess

import yaml

from tests.unit.test_metrics_names import _full_registry

ROOT = pathlib.Path(__file__).resolve().parents[2]
MON = ROOT / "deploy" / "monitoring"
RULES = MON / "ovault-alerts.yml"
DASHBOARD = MON / "ovault-dashboard.json"
RULE_TESTS = MON / "tests" / "ovault-alerts.test.yml"

# the sample names a family of each type shows to PromQL
SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_count", "_sum"),
            "gaugehistogram": ("_bucket", "_gcount", "_gsum"), "summary": ("", "_count", "_sum")}
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool", "and", "or",
                "unless", "inf", "nan"}


def _promtool() -> str:
    exe = shutil.which("promtool")
    assert exe, "promtool is missing: scripts/setup.sh installs it (Debian package prometheus)"
    return exe


def _exposed() -> set[str]:
    m = asyncio.run(_full_registry())
    return {f.name + s for f in m.registry.collect() for s in SUFFIXES[f.type]}


def _rules() -> list[dict]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def _dashboard_exprs() -> list[str]:
    d = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in d["panels"] for t in p.get("targets", [])]


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects: identifiers outside strings and
    label matchers that are not functions, keywords or durations."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)        # label values, no names inside
    expr = re.sub(r"\{[^}]*\}", "{}", expr)                  # label matchers
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)  # label lists
    expr = re.sub(r"\[[^\]]*\]", "", expr)                    # ranges [5m]
    expr = re.sub(r"\boffset\s+\w+", "", expr)
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", expr):
        word, rest = m.group(0), expr[m.end():].lstrip()
        if word.lower() in PROMQL_WORDS or rest.startswith("("):   # a function or an aggregation
            continue
        names.add(word)
    return names


def test_metric_names_are_extracted_from_promql():
    assert metric_names('max by (vm_id, vm) (time() - ovault_a{x="y(z)"}[5m] offset 1h) > 0') == {"ovault_a"}
    assert metric_names("histogram_quantile(0.5, max by (le) (ovault_b_bucket)) / on() ovault:c") \
        == {"ovault_b_bucket", "ovault:c"}
    assert metric_names("sum(rate(ovault_moved_bytes_total[5m])) and ovault_x or vector(0)") \
        == {"ovault_moved_bytes_total", "ovault_x"}


def test_every_metric_in_the_rules_and_the_dashboard_is_exposed():
    exposed = _exposed()
    rules = _rules()
    recorded = {r["record"] for r in rules if "record" in r}
    assert recorded == {"ovault:target_capacity_bytes"}
    used = {}
    for r in rules:
        for n in metric_names(r["expr"]):
            used.setdefault(n, []).append(r.get("alert") or r.get("record"))
    for e in _dashboard_exprs():
        for n in metric_names(e):
            used.setdefault(n, []).append(f"dashboard: {e}")
    unknown = {n: where for n, where in used.items() if n not in exposed | recorded}
    assert not unknown, f"metrics ovault does not expose: {unknown}"
    # what the issue asks the two files to watch is really there
    for name in ("ovault_vm_last_success_timestamp_seconds", "ovault_vm_protection", "ovault_policy_runs_total",
                 "ovault_target_stored_bytes", "ovault_catalog_restarts_total"):
        assert name in used, name
    dash = {n for e in _dashboard_exprs() for n in metric_names(e)}
    assert {"ovault_moved_bytes_total", "ovault_job_duration_seconds_bucket", "ovault_vm_protection",
            "ovault_policy_runs_total", "ovault_vm_last_success_timestamp_seconds",
            "ovault_target_stored_bytes"} <= dash
    assert "sum(rate(ovault_moved_bytes_total[5m]))" in _dashboard_exprs()


def test_the_alert_names_and_severities():
    alerts = {(r["alert"], r["labels"]["severity"]) for r in _rules() if "alert" in r}
    assert {("OvaultVMsPastRPO", "warning"), ("OvaultVMBackupOverdue", "warning"),
            ("OvaultPolicyRunsFailed", "warning"), ("OvaultTargetNearlyFull", "warning"),
            ("OvaultTargetNearlyFull", "critical"), ("OvaultCatalogRestarted", "warning")} <= alerts
    for r in _rules():
        if "alert" in r:
            assert r["annotations"]["summary"] and r["annotations"]["description"], r["alert"]


def test_promtool_checks_the_rules():
    p = subprocess.run([_promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in p.stdout


def test_promtool_rule_unit_tests_pass():
    p = subprocess.run([_promtool(), "test", "rules", str(RULE_TESTS)], capture_output=True, text=True,
                       timeout=120, cwd=RULE_TESTS.parent)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "SUCCESS" in p.stdout


def test_promtool_parses_every_dashboard_expression(tmp_path):
    """promtool has no expression checker: each dashboard query becomes a
    recording rule of a scratch rules file, which it parses."""
    exprs = _dashboard_exprs()
    assert len(exprs) >= 10
    f = tmp_path / "dashboard-exprs.yml"
    f.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:expr_{i}", "expr": e} for i, e in enumerate(exprs)]}]}))
    p = subprocess.run([_promtool(), "check", "rules", str(f)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr


def test_the_dashboard_is_importable():
    d = json.loads(DASHBOARD.read_text())
    assert d["uid"] and d["title"] and d["schemaVersion"] >= 30
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    assert any(v["type"] == "datasource" and v["name"] == "datasource" for v in d["templating"]["list"])
    for p in d["panels"]:
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        assert p["targets"] and all(t["expr"].strip() for t in p["targets"]), p["title"]
