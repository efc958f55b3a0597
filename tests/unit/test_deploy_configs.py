"""The monitoring configs of the compose stack: Prometheus' scrape config and alert rules (checked and unit-tested
by promtool), and the provisioned Grafana dashboard (parsed, its data sources and metric names checked against what
exists).

The project has no YAML library, so the YAML files are read with a few strict line patterns; each reader fails
loudly when a file stops looking the way it expects, and the rule count is checked against promtool's own."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "vidpulse.json"
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "vidpulse.yml"
DASHBOARD_PROVIDERS = GRAFANA / "provisioning" / "dashboards" / "vidpulse.yml"
COMPOSE = ROOT / "docker-compose.yml"

# Series Prometheus makes itself, which the rules and the dashboard may use besides vidpulse's own.
PROMETHEUS_BUILTINS = {"up", "ALERTS"}
# Suffixes a client library adds to a histogram's (or counter's) name.
SERIES_SUFFIXES = ("_bucket", "_count", "_sum", "_created", "_total")
METRIC_NAME = re.compile(r"\bvidpulse_[a-z0-9_]+")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("promtool") is None:
        pytest.fail("promtool is missing: run make test, which installs Debian's prometheus package")
    return subprocess.run(["promtool", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def assert_ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, f"{' '.join(result.args)} exited {result.returncode}:\n{result.stdout}{result.stderr}"


# ---- promtool ---------------------------------------------------------------------------------------------------

def test_prometheus_config_and_the_rules_it_loads_are_valid():
    result = promtool("check", "config", "deploy/prometheus/prometheus.yml")
    assert_ok(result)
    assert "1 rule files found" in result.stdout + result.stderr, "prometheus.yml should load alerts.yml"


def test_alert_rules_are_valid():
    result = promtool("check", "rules", "deploy/prometheus/alerts.yml")
    assert_ok(result)
    found = re.search(r"(\d+) rules found", result.stdout + result.stderr)
    assert found and int(found.group(1)) == len(alert_names()), "the line reader below missed rules promtool sees"


def test_alert_rules_pass_their_unit_tests():
    assert_ok(promtool("test", "rules", "deploy/prometheus/alerts_test.yml"))


# ---- what the promtool tests cover -------------------------------------------------------------------------------

def alert_names() -> list[str]:
    names = re.findall(r"^\s*- alert:\s*(\S+)\s*$", (PROMETHEUS / "alerts.yml").read_text(), re.MULTILINE)
    assert names, "no `- alert:` lines in alerts.yml"
    return names


def rule_test_cases() -> list[tuple[str, bool]]:
    """(alertname, fires) for every alert_rule_test entry: fires is False for `exp_alerts: []`, True for a list."""
    cases: list[tuple[str, bool]] = []
    alertname = None
    for number, line in enumerate((PROMETHEUS / "alerts_test.yml").read_text().splitlines(), 1):
        if match := re.match(r"^\s*alertname:\s*(\S+)\s*$", line):
            assert alertname is None, f"alerts_test.yml:{number}: alertname without exp_alerts before it"
            alertname = match.group(1)
        elif match := re.match(r"^\s*exp_alerts:\s*(\S*)\s*(#.*)?$", line):
            assert alertname is not None, f"alerts_test.yml:{number}: exp_alerts without an alertname"
            assert match.group(1) in ("", "[]"), f"alerts_test.yml:{number}: write exp_alerts as [] or as a list"
            cases.append((alertname, match.group(1) == ""))
            alertname = None
    assert alertname is None, f"{alertname}: the last case has no exp_alerts"
    return cases


def test_every_alert_has_a_test_that_fires_it_and_one_where_it_stays_silent():
    cases = rule_test_cases()
    alerts = alert_names()
    assert len(alerts) == len(set(alerts)), "alert names must be unique"
    unknown = {name for name, _ in cases} - set(alerts)
    assert not unknown, f"alerts_test.yml tests alerts that alerts.yml does not define: {sorted(unknown)}"
    never_fired = [name for name in alerts if (name, True) not in cases]
    never_silent = [name for name in alerts if (name, False) not in cases]
    assert not never_fired, f"no promtool case fires {never_fired}"
    assert not never_silent, f"no promtool case shows {never_silent} silent"


# ---- metric names -------------------------------------------------------------------------------------------------

def defined_metrics() -> set[str]:
    """Names in the README's Operations metrics table, and string literals in the metric definitions."""
    readme = (ROOT / "README.md").read_text()
    rows = [line for line in readme.splitlines() if line.startswith("| `vidpulse_")]
    assert rows, "README.md has no metrics table rows"
    names = {name for row in rows for name in METRIC_NAME.findall(row.split("|")[1])}
    for package in ("ingest", "aggregations", "queries", "vidpulse"):
        for source in (ROOT / package).rglob("*.py"):
            names |= set(re.findall(r"[\"'](vidpulse_[a-z0-9_]+)[\"']", source.read_text()))
    return names


def unknown_metrics(referenced: set[str], defined: set[str]) -> set[str]:
    def known(name: str) -> bool:
        return name in defined or any(name.endswith(s) and name.removesuffix(s) in defined for s in SERIES_SUFFIXES)
    return {name for name in referenced if not known(name)}


def prometheus_expressions() -> list[str]:
    return [target["expr"] for panel in dashboard_panels() for target in panel.get("targets", []) if "expr" in target]


def test_alerts_and_their_tests_use_only_metrics_that_exist():
    referenced = set(METRIC_NAME.findall((PROMETHEUS / "alerts.yml").read_text()))
    series = re.findall(r"series:\s*'([a-zA-Z_:][a-zA-Z0-9_:]*)", (PROMETHEUS / "alerts_test.yml").read_text())
    assert series, "no input series found in alerts_test.yml"
    assert set(series) - PROMETHEUS_BUILTINS, "the tests feed no vidpulse series"
    referenced |= set(series) - PROMETHEUS_BUILTINS
    missing = unknown_metrics(referenced, defined_metrics())
    assert not missing, f"not in README.md's metrics table nor defined in the Python sources: {sorted(missing)}"


def test_dashboard_uses_only_metrics_that_exist():
    expressions = prometheus_expressions()
    assert expressions, "the dashboard has no Prometheus query"
    for expr in expressions:
        assert METRIC_NAME.search(expr) or any(re.search(rf"\b{b}\b", expr) for b in PROMETHEUS_BUILTINS), expr
    referenced = {name for expr in expressions for name in METRIC_NAME.findall(expr)}
    missing = unknown_metrics(referenced, defined_metrics())
    assert not missing, f"not in README.md's metrics table nor defined in the Python sources: {sorted(missing)}"


# ---- Grafana -------------------------------------------------------------------------------------------------------

def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def dashboard_panels() -> list[dict]:
    found = []
    for panel in dashboard()["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))  # panels inside a collapsed row
    return found


def provisioned_datasources() -> dict[str, str]:
    """uid -> type of every data source in the provisioning file."""
    blocks = re.split(r"^\s*- name:", DATASOURCES.read_text(), flags=re.MULTILINE)[1:]
    assert blocks, f"no data sources in {DATASOURCES}"
    sources = {}
    for block in blocks:
        uid = re.search(r"^\s*uid:\s*(\S+)\s*$", block, re.MULTILINE)
        kind = re.search(r"^\s*type:\s*(\S+)\s*$", block, re.MULTILINE)
        assert uid and kind, f"a data source without uid or type:{block}"
        sources[uid.group(1)] = kind.group(1)
    return sources


def test_dashboard_is_json_with_unique_panel_ids_and_a_stable_uid():
    board = dashboard()
    assert board["uid"] and board["title"]
    ids = [panel["id"] for panel in dashboard_panels()]
    assert len(ids) == len(set(ids)), "panel ids must be unique"


def test_dashboard_uses_the_provisioned_datasources():
    sources = provisioned_datasources()
    assert set(sources.values()) == {"prometheus", "grafana-clickhouse-datasource"}
    used = []
    for panel in dashboard_panels():
        if panel["type"] == "row":
            continue
        used.append((panel["title"], panel["datasource"]))
        assert panel.get("targets"), f"panel {panel['title']!r} has no query"
        used += [(panel["title"], target["datasource"]) for target in panel["targets"]]
    used += [(f"variable {v['name']}", v["datasource"]) for v in dashboard()["templating"]["list"] if "datasource" in v]
    for where, datasource in used:
        assert datasource["uid"] in sources, f"{where}: data source uid {datasource['uid']!r} is not provisioned"
        assert datasource["type"] == sources[datasource["uid"]], f"{where}: type {datasource['type']!r} does not match"
    assert {d["type"] for _, d in used} == set(sources.values()), "each provisioned data source should be used"


def test_clickhouse_panels_query_tables_the_migrations_create():
    migrations = "\n".join(p.read_text() for p in (ROOT / "aggregations" / "migrations").glob("*.sql"))
    tables = set(re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", migrations))
    queries = [target["rawSql"] for panel in dashboard_panels() for target in panel.get("targets", [])
               if "rawSql" in target]
    queries += [v["query"] for v in dashboard()["templating"]["list"] if v.get("type") == "query"]
    assert queries, "the dashboard has no ClickHouse query"
    for sql in queries:
        used = set(re.findall(r"\bFROM\s+(\w+)", sql))
        assert used and used <= tables, f"unknown table in: {sql}"
        assert "vidpulse." not in sql, "name tables without the database: the data source's defaultDatabase picks it"


def test_compose_mounts_what_prometheus_and_grafana_load():
    compose = COMPOSE.read_text()
    assert re.search(r"^rule_files:\n\s+- alerts\.yml$", (PROMETHEUS / "prometheus.yml").read_text(), re.MULTILINE)
    assert "./deploy/prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro" in compose
    assert "./deploy/grafana/provisioning/datasources:/etc/grafana/provisioning/datasources:ro" in compose
    assert "./deploy/grafana/provisioning/dashboards:/etc/grafana/provisioning/dashboards:ro" in compose
    mount = re.search(r"\./deploy/grafana/dashboards:(\S+?):ro", compose)
    path = re.search(r"^\s*path:\s*(\S+)\s*$", DASHBOARD_PROVIDERS.read_text(), re.MULTILINE)
    assert mount and path and mount.group(1) == path.group(1), "the dashboards provider must read the mounted folder"
    assert "GF_INSTALL_PLUGINS: grafana-clickhouse-datasource" in compose
    grafana = re.search(r"^  grafana:\n(.*?)^(?:  \w|\w)", compose, re.MULTILINE | re.DOTALL)
    assert grafana, "docker-compose.yml has no grafana service"
    provisioning = "\n".join(line for line in DATASOURCES.read_text().splitlines() if not line.lstrip().startswith("#"))
    for variable in re.findall(r"\$\{(\w+)\}", provisioning):
        assert re.search(rf"^\s+{variable}: ", grafana.group(1), re.MULTILINE), f"compose does not give Grafana {variable}"


def test_the_clickhouse_launcher_expects_the_chdb_core_that_pyproject_pins():
    script = (ROOT / "deploy" / "clickhouse" / "clickhouse.sh").read_text()
    expected = re.search(r"^CHDB_CORE_VERSION=(\S+)$", script, re.M)
    pinned = re.search(r'"chdb-core==([^"]+)"', (ROOT / "pyproject.toml").read_text())
    assert expected and pinned and expected.group(1) == pinned.group(1)
