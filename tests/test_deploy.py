"""The deploy/ artefacts an operator installs: alert rules and dashboard that Prometheus and Grafana
accept and that only name metrics syncd exports, a live /metrics page promtool finds clean, and
Kubernetes, systemd and container files that start `syncd run` with the right probes and secrets.

promtool comes from the Debian package `prometheus`. Without it the promtool checks skip with one
line saying so, except under CI=true, where they fail: CI must run them.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from fastapi.testclient import TestClient
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from syncd import metrics
from syncd.api.app import ApiSettings, create_app
from syncd.api.auth import ApiToken
from syncd.clock import ManualClock
from syncd.config import load_config
from syncd.connectors.http import RetryPolicy
from syncd.connectors.jira import JiraConnector
from syncd.connectors.servicenow import ServiceNowConnector
from syncd.engine.connector_runtime import ConnectorRuntime
from syncd.engine.sync_engine import EngineSettings, SyncEngine
from syncd.mapping import default_mapping_path, validate_files
from syncd.mapping.reload import MappingSet
from syncd.simulators.jira import JiraSimulator
from syncd.simulators.servicenow import ServiceNowSimulator
from syncd.store import db

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
RULES = DEPLOY / "prometheus" / "syncd-rules.yml"
RULE_TESTS = DEPLOY / "prometheus" / "syncd-rules.test.yml"
DASHBOARD = DEPLOY / "grafana" / "syncd-dashboard.json"
KUBERNETES = DEPLOY / "kubernetes"
UNIT = DEPLOY / "systemd" / "syncd.service"
ENV_EXAMPLE = DEPLOY / "systemd" / "syncd.env.example"
CONTAINERFILE = DEPLOY / "Containerfile"

# Series Prometheus makes itself rather than syncd: allowed in rules and dashboards.
PROMETHEUS_SERIES = {"up"}


# -- helpers -------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        reason = "promtool not installed (Debian: apt-get install prometheus)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {reason}")
        pytest.skip(reason)
    return path


def run_promtool(promtool: str, *args: str, stdin: str | None = None, cwd: Path | None = None):
    return subprocess.run([promtool, *args], input=stdin, capture_output=True, text=True,
                          cwd=cwd, timeout=60)


def exported_series_names() -> set[str]:
    """Every series name syncd/metrics.py can export: counters as ``_total`` (and ``_created``),
    histograms as ``_bucket``/``_sum``/``_count``, plus the process and platform collectors."""
    names: set[str] = set()
    for family in metrics.REGISTRY.collect():
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
        suffixes = {"counter": ("_total", "_created"),
                    "histogram": ("_bucket", "_sum", "_count", "_created")}.get(family.type, ())
        names.update(family.name + suffix for suffix in suffixes)
    return names


_PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and",
                 "or", "unless", "offset", "inf", "nan"}


def series_names_in(expr: str) -> set[str]:
    """The series names a PromQL expression reads: identifiers left once label matchers, ranges,
    strings, grouping clauses, function calls and keywords are taken out."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    text = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        following = text[match.end():].lstrip()[:1]
        if following != "(" and match.group(0).lower() not in _PROMQL_WORDS:
            names.add(match.group(0))
    return names


def rule_expressions() -> dict[str, str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["alert"]: rule["expr"] for group in groups for rule in group["rules"]}


def dashboard_expressions() -> dict[str, str]:
    dashboard = json.loads(DASHBOARD.read_text())
    found = {}
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            found[f"{panel['title']} / {target['refId']}"] = target["expr"]
    for variable in dashboard["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict):
            call = re.fullmatch(r"label_values\((.+),\s*\w+\)", query["query"])
            assert call, f"dashboard variable {variable['name']}: unexpected query {query['query']!r}"
            found[f"variable {variable['name']}"] = call.group(1)
    return found


def as_plain_promql(expr: str) -> str:
    """A Grafana expression with its variables replaced the way Grafana would fill them."""
    return (expr.replace("$__rate_interval", "5m").replace("$connector", ".*")
            .replace("$instance", ".*"))


def kubernetes_objects() -> dict[tuple[str, str], dict]:
    objects = {}
    for path in sorted(KUBERNETES.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document and "kind" in document and "metadata" in document:
                objects[(document["kind"], document["metadata"]["name"])] = document
    return objects


# -- Prometheus rules and Grafana dashboard --------------------------------------------------

def test_the_alert_rules_pass_promtool_check_rules(promtool):
    result = run_promtool(promtool, "check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_fires_and_stays_quiet_as_its_promtool_unit_test_says(promtool):
    result = run_promtool(promtool, "test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_unit_test():
    tested = {case["alertname"] for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
              for case in test.get("alert_rule_test", [])}
    assert set(rule_expressions()) - tested == set()


def test_the_alerts_cover_what_operators_must_hear_about():
    expressions = rule_expressions()
    for needed in ("syncd_sync_lag_seconds", "syncd_dead_letters", "syncd_outbox_pending",
                   "syncd_remote_requests_total", "syncd_connector_paused",
                   "syncd_mapping_reloads_total", "syncd_worker_restarts_total", "up"):
        assert any(needed in series_names_in(expr) for expr in expressions.values()), needed
    assert any('status=~"5..|error"' in expr for expr in expressions.values())
    assert any('status="429"' in expr for expr in expressions.values())
    assert any('outcome="rejected"' in expr for expr in expressions.values())


def test_rules_and_dashboard_only_name_series_syncd_exports():
    known = exported_series_names() | PROMETHEUS_SERIES
    used = {**{f"rule {name}": expr for name, expr in rule_expressions().items()},
            **{f"dashboard {name}": expr for name, expr in dashboard_expressions().items()}}
    unknown = {where: sorted(series_names_in(expr) - known) for where, expr in used.items()
               if series_names_in(expr) - known}
    assert unknown == {}
    assert all(series_names_in(expr) for expr in used.values()), "an expression reads no series"


def test_series_names_are_found_in_promql_and_unknown_ones_are_caught():
    """The checker above must see through PromQL, or it would pass anything."""
    expr = ('sum by (connector) (rate(syncd_remote_requests_total{status=~"5..|error"}[5m])) '
            '/ on (connector) group_left max(synd_typo) and histogram_quantile(0.9, x_bucket)')
    assert series_names_in(expr) == {"syncd_remote_requests_total", "synd_typo", "x_bucket"}


def test_every_dashboard_expression_is_valid_promql(promtool, tmp_path):
    """Grafana cannot be run here; promtool parses each expression as a recording rule."""
    rules = [{"record": f"syncd:dashboard:expr{index}", "expr": as_plain_promql(expr)}
             for index, expr in enumerate(dashboard_expressions().values())]
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = run_promtool(promtool, "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_dashboard_shows_every_syncd_metric():
    used = set().union(*(series_names_in(expr) for expr in dashboard_expressions().values()))
    families = {family.name for family in metrics.REGISTRY.collect()
                if family.name.startswith("syncd_")}
    shown = {family for family in families
             if any(name == family or name.startswith(family + "_") for name in used)}
    assert families - shown == set()


# -- the live /metrics page ----------------------------------------------------------------------

@pytest.fixture
def app_after_one_sync(tmp_path):
    """The real FastAPI app over an Engine on SQLite, after one sync cycle in which a ServiceNow
    incident reached Jira through both simulators."""
    engine = db.open_engine(f"sqlite:///{tmp_path / 'syncd.db'}", pool_size=5)
    db.upgrade(engine)
    sessions = db.session_factory(engine)
    clock = ManualClock()
    sn = ServiceNowSimulator(clock=clock).start()
    jira = JiraSimulator(deployment="Cloud", clock=clock).start()
    mappings = MappingSet({"servicenow": default_mapping_path("servicenow"),
                           "jira": default_mapping_path("jira")})
    policy = RetryPolicy(max_attempts=2, max_total_seconds=5)
    runtimes = {
        "servicenow": ConnectorRuntime(
            "servicenow", ServiceNowConnector("servicenow", url=sn.base_url, username="admin",
                                              password="admin", policy=policy, clock=clock),
            lambda: mappings.get("servicenow"), create_incidents=True),
        "jira": ConnectorRuntime(
            "jira", JiraConnector("jira", url=jira.base_url, username="syncd",
                                  token="syncd-api-token", project="OPS", policy=policy,
                                  clock=clock),
            lambda: mappings.get("jira"), create_tickets=True),
    }
    sync_engine = SyncEngine(sessions=sessions, runtimes=runtimes, clock=clock,
                         settings=EngineSettings(outbox_workers=1))
    sn.human_create({"short_description": "Checkout database down", "impact": "1", "urgency": "1"})
    sync_engine.run_cycle()
    try:
        yield SimpleNamespace(app=create_app(sync_engine, ApiSettings(api_tokens=[ApiToken("api", "t")])), jira=jira)
    finally:
        for runtime in runtimes.values():
            runtime.connector.close()
        sn.stop()
        jira.stop()
        engine.dispose()


def touch_unseen_label_sets() -> None:
    """Give every labelled metric that has no series yet one (at zero), so the page shows every
    family. ``_labelnames`` is prometheus_client's own record of a metric's label names."""
    seen = {family.name for family in metrics.REGISTRY.collect() if family.samples}
    for metric in vars(metrics).values():
        if isinstance(metric, MetricWrapperBase) and metric._name not in seen:
            metric.labels(*["deploy-check"] * len(metric._labelnames))


def test_the_live_metrics_page_passes_promtool_check_metrics(promtool, app_after_one_sync):
    touch_unseen_label_sets()
    response = TestClient(app_after_one_sync.app).get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain;")   # the text format
    page = response.text

    families = {family.name: family for family in text_string_to_metric_families(page)}
    declared = {metric._name for metric in vars(metrics).values()
                if isinstance(metric, MetricWrapperBase)}
    assert declared - set(families) == set(), "metric families missing from /metrics"
    assert {"process_resident_memory_bytes", "python_info"} <= set(families)

    def value(name, **labels):
        return sum(sample.value for family in families.values() for sample in family.samples
                   if sample.name == name and labels.items() <= sample.labels.items())

    # What the cycle really did shows: requests to both systems, one incident in, one issue out.
    assert value("syncd_remote_requests_total", connector="servicenow", status="200") > 0
    assert value("syncd_remote_requests_total", connector="jira", status="201") >= 1
    assert value("syncd_remote_request_seconds_count", connector="jira") > 0
    assert value("syncd_sync_changes_total", connector="servicenow", direction="in",
                 outcome="created") >= 1
    assert value("syncd_sync_changes_total", connector="jira", direction="out",
                 outcome="create") >= 1
    assert len(app_after_one_sync.jira.request_log()) > 0

    result = run_promtool(promtool, "check", "metrics", stdin=page)
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), \
        result.stdout + result.stderr


def test_promtool_check_metrics_does_catch_a_badly_named_metric(promtool):
    """So a clean result above means something."""
    page = ("# HELP syncd_bad_counter A counter without _total.\n# TYPE syncd_bad_counter counter\n"
            "syncd_bad_counter 1\n")
    result = run_promtool(promtool, "check", "metrics", stdin=page)
    assert result.returncode != 0 or (result.stdout + result.stderr).strip()


def test_every_syncd_metric_carries_the_syncd_prefix():
    names = [metric._name for metric in vars(metrics).values() if isinstance(metric, MetricWrapperBase)]
    assert names and [name for name in names if not name.startswith("syncd_")] == []


# -- Kubernetes -------------------------------------------------------------------------------

def test_the_deployment_runs_two_replicas_of_syncd_run_with_health_and_readiness_probes():
    objects = kubernetes_objects()
    deployment = objects[("Deployment", "syncd")]
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]
    container = pod["spec"]["containers"][0]
    assert container["args"][:1] == ["run"] or container.get("command", [])[-1:] == ["run"]
    assert "--config" in container["args"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert "http" in ports
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False


def test_the_service_pdb_secret_and_configmap_fit_the_deployment():
    objects = kubernetes_objects()
    deployment = objects[("Deployment", "syncd")]
    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()

    service = objects[("Service", "syncd")]
    assert service["spec"]["selector"].items() <= labels.items()
    container = pod["spec"]["containers"][0]
    assert {port["targetPort"] for port in service["spec"]["ports"]} <= \
        {port["name"] for port in container["ports"]}

    budget = objects[("PodDisruptionBudget", "syncd")]
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert budget["spec"]["minAvailable"] < deployment["spec"]["replicas"]

    secrets = {source["secretRef"]["name"] for source in container["envFrom"]}
    assert secrets <= {name for kind, name in objects if kind == "Secret"}
    config_maps = {volume["configMap"]["name"] for volume in pod["spec"]["volumes"]
                   if "configMap" in volume}
    assert config_maps <= {name for kind, name in objects if kind == "ConfigMap"}
    mount = next(m for m in container["volumeMounts"] if m["name"] == "config")
    assert "subPath" not in mount, "a subPath mount never sees ConfigMap edits (no hot reload)"
    assert f"{mount['mountPath']}/syncd.yaml" in container["args"]


def test_the_configmap_holds_a_valid_postgresql_config_whose_secrets_all_come_from_the_secret(tmp_path):
    objects = kubernetes_objects()
    for name, text in objects[("ConfigMap", "syncd-config")]["data"].items():
        (tmp_path / name).write_text(text)
    environ = objects[("Secret", "syncd-env")]["stringData"]
    # Only the Secret's variables are set: a ${VAR} it lacks would be an error here.
    config = load_config(tmp_path / "syncd.yaml", environ=environ)
    assert config.store.url.get_secret_value().startswith("postgresql")
    assert config.store.auto_upgrade is False
    assert config.http.listen.startswith("0.0.0.0:")
    port = int(config.http.listen.rpartition(":")[2])
    container = objects[("Deployment", "syncd")]["spec"]["template"]["spec"]["containers"][0]
    assert port == next(p["containerPort"] for p in container["ports"] if p["name"] == "http")
    assert [w for w in config.warnings if "secret written in the file" in w] == []
    mappings = [str(connector.mapping) for connector in config.connectors.values()]
    assert all(Path(path).parent == tmp_path for path in mappings)
    assert validate_files(mappings) == []


def test_the_migration_job_upgrades_the_schema_with_the_same_config_and_secret():
    objects = kubernetes_objects()
    job = objects[("Job", "syncd-db-upgrade")]["spec"]["template"]["spec"]
    deployment = objects[("Deployment", "syncd")]["spec"]["template"]["spec"]
    assert job["containers"][0]["args"][:2] == ["db", "upgrade"]
    assert job["containers"][0]["envFrom"] == deployment["containers"][0]["envFrom"]
    assert job["containers"][0]["image"] == deployment["containers"][0]["image"]


# -- systemd and the container image -------------------------------------------------------

def read_unit() -> configparser.ConfigParser:
    unit = configparser.ConfigParser(interpolation=None, strict=True)
    unit.optionxform = str   # systemd keys are case-sensitive
    unit.read_string(UNIT.read_text())
    return unit


def test_the_systemd_unit_runs_syncd_run_and_restarts_it_on_failure():
    service = read_unit()["Service"]
    assert service["Type"] == "simple"
    assert re.search(r"/syncd run --config \S+", service["ExecStart"])
    assert service["Restart"] == "on-failure"
    assert service["KillSignal"] == "SIGTERM"
    assert service["RestartPreventExitStatus"] == "2", "a config error (exit 2) must not loop"
    assert service["ExecReload"].endswith("kill -HUP $MAINPID")
    assert service["EnvironmentFile"].startswith("/etc/")
    assert service["User"] not in ("", "root")


def test_the_systemd_unit_is_hardened():
    service = read_unit()["Service"]
    for key, expected in {"NoNewPrivileges": "yes", "ProtectSystem": "strict",
                          "ProtectHome": "yes", "PrivateTmp": "yes", "CapabilityBoundingSet": "",
                          "RestrictSUIDSGID": "yes"}.items():
        assert service.get(key) == expected, key
    assert "AF_INET" in service["RestrictAddressFamilies"]
    assert "ProcSubset" not in service, "ProcSubset=pid hides /proc/stat: no process_* metrics"


def test_the_env_example_names_every_variable_the_kubernetes_secret_provides():
    names = {line.lstrip("# ").split("=", 1)[0] for line in ENV_EXAMPLE.read_text().splitlines()
             if re.match(r"#? ?[A-Z_]+=", line)}
    secret = kubernetes_objects()[("Secret", "syncd-env")]["stringData"]
    assert names == set(secret)


def test_the_container_image_is_python_311_slim_running_syncd_run_as_a_non_root_user():
    lines = [line.strip() for line in CONTAINERFILE.read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    stages = [line.split()[1] for line in lines if line.startswith("FROM ")]
    assert stages[-1] == "python:3.11-slim"
    final = lines[max(i for i, line in enumerate(lines) if line.startswith("FROM ")):]
    user = [line.split()[1] for line in final if line.startswith("USER ")]
    assert user and user[-1].split(":")[0] not in ("0", "root")
    assert 'ENTRYPOINT ["syncd"]' in final
    assert 'CMD ["run"]' in final


# -- the operator documentation ------------------------------------------------------------------

DOCS = DEPLOY.parent / "docs"


def test_operations_doc_explains_every_metric_and_every_alert():
    text = (DOCS / "operations.md").read_text()
    metric_names = [metric._name + ("_total" if metric._type == "counter" else "")
                    for metric in vars(metrics).values() if isinstance(metric, MetricWrapperBase)]
    missing = [name for name in metric_names + list(rule_expressions()) if f"`{name}`" not in text]
    assert missing == []


def test_the_getting_started_config_is_valid(tmp_path):
    text = (DOCS / "getting-started.md").read_text()
    example = next(block for block in re.findall(r"```yaml\n(.*?)```", text, re.DOTALL)
                   if "connectors:" in block)
    (tmp_path / "syncd.yaml").write_text(example)
    (tmp_path / "mappings").mkdir()
    for system in ("servicenow", "jira"):
        shutil.copy(default_mapping_path(system), tmp_path / "mappings" / f"{system}.yaml")
    environ = {name: "x" for name in re.findall(r"\$\{(\w+)\}", example)}
    config = load_config(tmp_path / "syncd.yaml", environ=environ)
    assert set(config.connectors) == {"servicenow", "jira"}
    assert config.warnings == []
