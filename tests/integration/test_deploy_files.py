"""Static checks of everything under deploy/: each file parses, the parts are wired to each other
and to what keywatch really exports, and the external validators (promtool, amtool, kubectl
kustomize + Kubernetes schemas, systemd-analyze) accept them."""

from __future__ import annotations

import atexit
import functools
import json
import re
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from monitor.config import Settings, parse_config
from monitor.metrics import METRIC_NAMES, SPECS
from tests.support.deploy import (
    DEPLOY_DIR,
    REPO_ROOT,
    dockerfile_instructions,
    exec_form,
    find_module,
    find_tool,
)
from tests.support.tls import make_pki

DOCKERFILE = DEPLOY_DIR / "Dockerfile"
COMPOSE = DEPLOY_DIR / "compose.yaml"
RULES = DEPLOY_DIR / "prometheus" / "rules.yml"
RULES_TEST = DEPLOY_DIR / "prometheus" / "rules.test.yml"
PROMETHEUS_CONFIG = DEPLOY_DIR / "prometheus" / "prometheus.yml"
PROMETHEUS_PROTECTED = DEPLOY_DIR / "prometheus" / "prometheus-protected.yml"
ALERTMANAGER_CONFIG = DEPLOY_DIR / "alertmanager" / "alertmanager.yml"
DASHBOARD = DEPLOY_DIR / "grafana" / "keywatch.json"
SYSTEMD_UNIT = DEPLOY_DIR / "systemd" / "keywatch.service"
KUSTOMIZE = DEPLOY_DIR / "kubernetes"
RUNBOOKS = REPO_ROOT / "docs" / "alerts-and-runbooks.md"
MKDOCS = REPO_ROOT / "mkdocs.yml"

# Metrics of the notification feature (outbox + dispatcher). Accepted in rules and dashboard
# queries before monitor.metrics.METRIC_NAMES lists them; drop this set once it does.
NOTIFICATION_METRICS = frozenset(
    {
        "keywatch_notifications_total",
        "keywatch_outbox_pending",
        "keywatch_outbox_oldest_pending_age_seconds",
        "keywatch_deliveries_dead",
    }
)
EXPORTED_METRICS = frozenset(METRIC_NAMES) | NOTIFICATION_METRICS
HISTOGRAMS = frozenset(name for name, spec in SPECS.items() if spec.kind == "histogram")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")

REQUIRED_ALERTS = frozenset(
    {
        "Auth0SigningKeyRevoked",
        "Auth0SigningKeyRotated",
        "Auth0SigningKeyNoNext",
        "Auth0SigningKeyNoCurrent",
        "Auth0SigningKeyCertificateExpiring",
        "Auth0SigningKeyCertificateExpiringCritical",
        "Auth0PreviousSigningKeyNotRevoked",
        "KeywatchTenantDown",
        "KeywatchPollsStale",
        "KeywatchNotificationBacklog",
        "KeywatchNotificationsDeadLettered",
    }
)
SEVERITIES = frozenset({"critical", "warning", "info"})

DEMO_ENV = {
    "AUTH0_DOMAIN": "acme.eu.auth0.com",
    "AUTH0_CLIENT_ID": "client-id",
    "AUTH0_CLIENT_SECRET": "client-secret",
}


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


# The runbooks page as the docs site publishes it: {site_url}{page}/ (MkDocs' directory URLs).
RUNBOOK_BASE = f"{load_yaml(MKDOCS)['site_url'].rstrip('/')}/{RUNBOOKS.stem}/#"


def run(argv: list[str], *, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=cwd, check=False)


# --- PromQL: which metric names does an expression read? --------------------------------------

_PROMQL_KEYWORDS = frozenset(
    {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right"}
    | {"bool", "offset", "inf", "nan"}
)
_GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}


def grafana_to_promql(expr: str) -> str:
    for variable, value in _GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return re.sub(r"\$\{?\w+\}?", ".*", expr)  # template variables ($tenant) are regexes


def metric_names(expr: str) -> set[str]:
    """Names of the series an expression selects (functions, keywords and labels removed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\boffset\s+\w+", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.])([A-Za-z_:][\w:]*)(\s*\()?", text):
        name, is_call = match.group(1), match.group(2)
        if not is_call and name.lower() not in _PROMQL_KEYWORDS:
            names.add(name)
    return names


def exported_name(name: str) -> str | None:
    """``name`` as keywatch exports it (histogram series map to their family), or None."""
    if name in EXPORTED_METRICS:
        return name
    for suffix in HISTOGRAM_SUFFIXES:
        family = name.removesuffix(suffix)
        if family != name and family in HISTOGRAMS:
            return family
    return None


def test_metric_names_extracts_only_series_names() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le) (rate(keywatch_poll_duration_seconds_bucket{a="b c"}'
        "[5m]))) > on (tenant) group_left () keywatch:knob and bool time() - x_total offset 5m"
    )
    assert metric_names(expr) == {
        "keywatch_poll_duration_seconds_bucket",
        "keywatch:knob",
        "x_total",
    }
    assert (
        exported_name("keywatch_poll_duration_seconds_bucket") == "keywatch_poll_duration_seconds"
    )
    assert exported_name("keywatch_tenant_up_bucket") is None


# --- Dockerfile -------------------------------------------------------------------------------


@functools.cache
def dockerfile() -> list[tuple[str, str]]:
    return dockerfile_instructions(DOCKERFILE)


def instructions(keyword: str) -> list[str]:
    return [arguments for name, arguments in dockerfile() if name == keyword]


def runtime_stage() -> list[tuple[str, str]]:
    """The instructions of the last stage (the image that runs)."""
    starts = [i for i, (name, _) in enumerate(dockerfile()) if name == "FROM"]
    return dockerfile()[starts[-1] :]


def test_dockerfile_is_multi_stage_on_slim_python_311() -> None:
    stages = instructions("FROM")
    assert len(stages) >= 2, "a build stage and a runtime stage"
    defaults = dict(arg.split("=", 1) for arg in instructions("ARG") if "=" in arg)
    images = [
        stage.split()[0].replace("${PYTHON_IMAGE}", defaults.get("PYTHON_IMAGE", ""))
        for stage in stages
    ]
    assert all(re.fullmatch(r"python:3\.11-slim(-\w+)?", image) for image in images), images


def test_dockerfile_installs_the_wheel_in_the_runtime_stage() -> None:
    runs = " ".join(arguments for name, arguments in runtime_stage() if name == "RUN")
    assert "pip install" in runs and "--no-index" in runs and "keywatch" in runs
    assert "pip wheel" in " ".join(instructions("RUN")), "the build stage builds wheels"


def test_dockerfile_runs_as_a_numeric_non_root_user() -> None:
    users = [arguments for name, arguments in runtime_stage() if name == "USER"]
    assert users, "the runtime stage sets USER"
    user, _, group = users[-1].partition(":")
    assert user.isdigit() and int(user) != 0, "numeric, so runAsNonRoot can check it"
    assert not group or (group.isdigit() and int(group) != 0)


def test_dockerfile_exposes_the_configured_port_with_state_on_a_volume() -> None:
    assert instructions("EXPOSE") == ["9464"]
    assert instructions("STOPSIGNAL") == ["SIGTERM"]
    assert [exec_form(volume) for volume in instructions("VOLUME")] == [["/var/lib/keywatch"]]
    settings = parse_config(
        (DEPLOY_DIR / "container" / "keywatch.yaml").read_text(encoding="utf-8"), env=DEMO_ENV
    )
    assert settings.listen == "0.0.0.0:9464"
    assert settings.data_dir == "/var/lib/keywatch"
    assert settings.state == "sqlite:////var/lib/keywatch/state.db"


def test_dockerfile_healthcheck_uses_python_on_healthz() -> None:
    (healthcheck,) = instructions("HEALTHCHECK")
    options, _, command = healthcheck.partition("CMD ")
    argv = exec_form(command)
    assert argv[0] == "python"
    assert "/healthz" in argv[-1] and "9464" in argv[-1]
    assert "curl" not in healthcheck and "wget" not in healthcheck
    assert "--timeout=" in options and "--interval=" in options


def test_dockerfile_entrypoint_runs_the_bundled_config() -> None:
    (entrypoint,) = instructions("ENTRYPOINT")
    (cmd,) = instructions("CMD")
    assert exec_form(entrypoint) + exec_form(cmd) == [
        "keywatch",
        "run",
        "--config",
        "/etc/keywatch/keywatch.yaml",
    ]
    assert "deploy/container/keywatch.yaml /etc/keywatch/keywatch.yaml" in instructions("COPY")


def test_dockerignore_lets_the_build_inputs_through() -> None:
    ignore = (DEPLOY_DIR / "Dockerfile.dockerignore").read_text(encoding="utf-8").split()
    for needed in ("!pyproject.toml", "!README.md", "!monitor/", "!deploy/container/"):
        assert needed in ignore
    copies = " ".join(instructions("COPY"))
    for source in ("pyproject.toml", "README.md", "monitor", "deploy/container/keywatch.yaml"):
        assert source in copies


# --- configuration files shipped for each target ----------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "container/keywatch.yaml",
        "compose/keywatch.yaml",
        "kubernetes/base/keywatch.yaml",
        "systemd/keywatch.yaml",
    ],
)
def test_shipped_keywatch_configs_are_valid(path: str) -> None:
    settings = parse_config((DEPLOY_DIR / path).read_text(encoding="utf-8"), env=DEMO_ENV)
    assert settings.tenants, path


# --- compose ----------------------------------------------------------------------------------


@functools.cache
def compose() -> dict[str, Any]:
    document: dict[str, Any] = load_yaml(COMPOSE)
    return document


def service(name: str) -> dict[str, Any]:
    services: dict[str, dict[str, Any]] = compose()["services"]
    return services[name]


def compose_value(value: str) -> str:
    """``value`` as compose interpolates it with an empty environment (defaults apply)."""
    return re.sub(r"\$\{\w+(?::-([^}]*))?\}", lambda match: match.group(1) or "", value)


def mounts(name: str) -> dict[str, Path]:
    """Container path -> host path of a service's bind mounts (relative to deploy/)."""
    found: dict[str, Path] = {}
    for volume in service(name).get("volumes", []):
        source, target, *_ = volume.split(":")
        if source.startswith("."):
            found[target] = (COMPOSE.parent / source).resolve()
    return found


def test_compose_has_every_service_and_the_demo_profile() -> None:
    assert set(compose()["services"]) == {
        "keywatch",
        "simulator",
        "prometheus",
        "alertmanager",
        "grafana",
    }
    assert service("simulator")["profiles"] == ["demo"]
    for name, spec in compose()["services"].items():
        if name != "simulator":
            assert "profiles" not in spec, f"{name} must run without a profile"


def test_compose_bind_mounts_exist() -> None:
    for name in compose()["services"]:
        for target, source in mounts(name).items():
            assert source.exists(), f"{name}: {source} (mounted at {target}) does not exist"


def test_compose_builds_keywatch_from_the_dockerfile() -> None:
    for name in ("keywatch", "simulator"):
        build = service(name)["build"]
        assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
        assert service(name)["read_only"] is True


def test_compose_wiring_by_service_name() -> None:
    command = service("keywatch")["command"]
    config_path = command[command.index("--config") + 1]
    config_text = mounts("keywatch")[config_path].read_text(encoding="utf-8")
    environment = {
        key: compose_value(value) for key, value in service("keywatch")["environment"].items()
    }
    settings = parse_config(config_text, env=environment)
    simulator_listen = service("simulator")["command"]
    simulator_port = simulator_listen[simulator_listen.index("--listen") + 1].rsplit(":", 1)[1]
    assert settings.tenants[0].api_base.startswith(f"http://simulator:{simulator_port}/tenant-")

    prometheus = load_yaml(mounts("prometheus")["/etc/prometheus/prometheus.yml"])
    targets = {
        target
        for job in prometheus["scrape_configs"]
        for static in job["static_configs"]
        for target in static["targets"]
    }
    keywatch_port = settings.listen.rsplit(":", 1)[1]
    assert f"keywatch:{keywatch_port}" in targets
    alertmanagers = prometheus["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert alertmanagers == ["alertmanager:9093"]
    rule_dir = Path("/etc/prometheus")
    for rule_file in prometheus["rule_files"]:
        assert str(rule_dir / rule_file) in mounts("prometheus"), rule_file
    assert mounts("prometheus")["/etc/prometheus/rules.yml"] == RULES

    datasources = load_yaml(DEPLOY_DIR / "grafana/provisioning/datasources/prometheus.yaml")
    assert datasources["datasources"][0]["url"] == "http://prometheus:9090"
    providers = load_yaml(DEPLOY_DIR / "grafana/provisioning/dashboards/keywatch.yaml")
    dashboard_dir = providers["providers"][0]["options"]["path"]
    assert mounts("grafana")[f"{dashboard_dir}/keywatch.json"] == DASHBOARD


def test_compose_publishes_ports_on_loopback_only() -> None:
    for name, spec in compose()["services"].items():
        for port in spec.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"


# --- systemd ----------------------------------------------------------------------------------

SYSTEMD_REQUIRED_LINES = (
    "DynamicUser=yes",
    "StateDirectory=keywatch",
    "ProtectSystem=strict",
    "ProtectHome=yes",
    "PrivateTmp=yes",
    "NoNewPrivileges=yes",
    "CapabilityBoundingSet=",
    "ExecReload=/bin/kill -HUP $MAINPID",
    "KillSignal=SIGTERM",
    "Restart=on-failure",
    "WantedBy=multi-user.target",
)


def test_systemd_unit_is_hardened() -> None:
    lines = SYSTEMD_UNIT.read_text(encoding="utf-8").splitlines()
    for required in SYSTEMD_REQUIRED_LINES:
        assert required in lines, f"{SYSTEMD_UNIT.name} lacks {required!r}"
    (exec_start,) = [line for line in lines if line.startswith("ExecStart=")]
    assert exec_start.split()[1:] == ["run", "--config", "/etc/keywatch/keywatch.yaml"]


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    analyze = find_tool("systemd-analyze")
    # verify checks that ExecStart's program exists: point it at one that does.
    keywatch = Path(find_tool("true"))
    unit = tmp_path / "keywatch.service"
    unit.write_text(
        SYSTEMD_UNIT.read_text(encoding="utf-8").replace(
            "/opt/keywatch/bin/keywatch", str(keywatch)
        ),
        encoding="utf-8",
    )
    result = run([analyze, "verify", str(unit)])
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr  # unknown keys are only warnings


# --- Prometheus rules -------------------------------------------------------------------------


@functools.cache
def rule_groups() -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = load_yaml(RULES)["groups"]
    return groups


def rules() -> Iterator[dict[str, Any]]:
    for group in rule_groups():
        yield from group["rules"]


def alerts() -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for rule in rules() if "alert" in rule}


def test_rules_cover_the_required_alerts() -> None:
    assert REQUIRED_ALERTS <= set(alerts())


@pytest.mark.parametrize("name", sorted(alerts()))
def test_alert_has_severity_summary_description_and_runbook(name: str) -> None:
    rule = alerts()[name]
    assert rule["labels"]["severity"] in SEVERITIES
    annotations = rule["annotations"]
    assert annotations["summary"].strip() and annotations["description"].strip()
    assert annotations["runbook_url"] == RUNBOOK_BASE + name.lower()


def markdown_anchors(text: str) -> set[str]:
    """Heading anchors as MkDocs (and GitHub) make them: lower case, punctuation dropped, spaces
    as hyphens."""
    anchors = set()
    for heading in re.findall(r"^#+\s+(.+?)\s*$", text, flags=re.MULTILINE):
        anchors.add(re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-"))
    return anchors


def test_every_runbook_url_points_at_a_section_of_the_runbooks_page() -> None:
    anchors = markdown_anchors(RUNBOOKS.read_text(encoding="utf-8"))
    missing = sorted(
        name
        for name, rule in alerts().items()
        if rule["annotations"]["runbook_url"].split("#", 1)[1] not in anchors
    )
    assert not missing, f"{RUNBOOKS.name} has no runbook section (## Name) for {missing}"


def test_rules_only_read_metrics_keywatch_exports() -> None:
    recorded = {rule["record"] for rule in rules() if "record" in rule}
    for rule in rules():
        for name in metric_names(rule["expr"]):
            if name in recorded or (name == "up" and rule.get("alert") == "KeywatchDown"):
                continue
            assert exported_name(name), f"{rule.get('alert', rule.get('record'))} reads {name}"


def test_rule_unit_tests_cover_every_alert_firing_and_not_firing() -> None:
    fired: set[str] = set()
    silent: set[str] = set()
    for case in load_yaml(RULES_TEST)["tests"]:
        for check in case.get("alert_rule_test", []):
            (fired if check.get("exp_alerts") else silent).add(check["alertname"])
    assert set(alerts()) - fired == set(), "alerts never tested firing"
    assert set(alerts()) - silent == set(), "alerts never tested not firing"


def test_promtool_checks_the_rules() -> None:
    promtool = find_tool("promtool")
    result = run([promtool, "check", "rules", str(RULES)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_of_the_rules_pass() -> None:
    promtool = find_tool("promtool")
    result = run([promtool, "test", "rules", RULES_TEST.name], cwd=RULES_TEST.parent)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("config", [PROMETHEUS_CONFIG, PROMETHEUS_PROTECTED], ids=lambda p: p.name)
def test_promtool_checks_the_example_prometheus_configs(config: Path) -> None:
    promtool = find_tool("promtool")
    result = run([promtool, "check", "config", str(config)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_protected_scrape_uses_https_a_ca_and_a_password_file() -> None:
    open_jobs = {job["job_name"]: job for job in load_yaml(PROMETHEUS_CONFIG)["scrape_configs"]}
    protected = load_yaml(PROMETHEUS_PROTECTED)
    jobs = {job["job_name"]: job for job in protected["scrape_configs"]}
    job = jobs["keywatch"]
    assert job["scheme"] == "https"
    assert job["tls_config"]["ca_file"] and "insecure_skip_verify" not in job["tls_config"]
    assert set(job["basic_auth"]) == {"username", "password_file"}  # no inline password
    assert job["static_configs"] == open_jobs["keywatch"]["static_configs"]
    assert open_jobs["keywatch"].get("scheme", "http") == "http"
    same = ("global", "rule_files", "alerting")
    assert {key: protected[key] for key in same} == {
        key: load_yaml(PROMETHEUS_CONFIG)[key] for key in same
    }


# --- Alertmanager -----------------------------------------------------------------------------


def test_amtool_checks_the_example_alertmanager_config() -> None:
    amtool = find_tool("amtool")
    result = run([amtool, "check-config", str(ALERTMANAGER_CONFIG)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_alertmanager_routes_every_alert_to_the_chat_receiver() -> None:
    config = load_yaml(ALERTMANAGER_CONFIG)
    receivers = {receiver["name"]: receiver for receiver in config["receivers"]}
    route = config["route"]
    assert route["receiver"] in receivers
    assert {"alertname", "tenant", "kid"} <= set(route["group_by"])
    for child in route.get("routes", []):
        assert child["receiver"] in receivers
    (slack,) = receivers[route["receiver"]]["slack_configs"]
    assert "REPLACE" in slack["api_url"], "the shipped webhook is a placeholder"


# --- Grafana ----------------------------------------------------------------------------------


@functools.cache
def dashboard() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return document


def dashboard_panels() -> Iterator[dict[str, Any]]:
    for panel in dashboard()["panels"]:
        yield panel
        yield from panel.get("panels", [])


def dashboard_queries() -> list[str]:
    queries = [
        target["expr"]
        for panel in dashboard_panels()
        for target in panel.get("targets", [])
        if target.get("expr")
    ]
    for variable in dashboard()["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict) and query.get("query"):
            values = re.fullmatch(r"label_values\((\w+),\s*\w+\)", query["query"])
            assert values, query["query"]
            queries.append(values.group(1))
    return queries


def test_dashboard_panels_all_have_queries() -> None:
    assert dashboard()["uid"] == "keywatch"
    for panel in dashboard_panels():
        if panel["type"] != "row":
            assert panel.get("targets"), f"panel {panel['title']!r} has no query"


def test_dashboard_queries_only_name_exported_metrics() -> None:
    used = set()
    for query in dashboard_queries():
        for name in metric_names(grafana_to_promql(query)):
            assert exported_name(name), (
                f"the dashboard reads {name}, which keywatch does not export"
            )
            used.add(exported_name(name))
    # The views the issue asks for: keys per state, rotation age, certificate expiry, poll
    # health, notification outcomes, outbox backlog.
    assert {
        "auth0_signing_keys",
        "auth0_signing_key_current_since_timestamp_seconds",
        "auth0_signing_key_cert_not_after_timestamp_seconds",
        "keywatch_tenant_up",
        "keywatch_last_successful_poll_timestamp_seconds",
        "keywatch_poll_duration_seconds",
        "keywatch_notifications_total",
        "keywatch_outbox_pending",
    } <= used
    # and issue 11's: key type and size, publication, mirrors, the next key's lead time
    assert {
        "auth0_signing_key_info",
        "auth0_signing_key_published",
        "keywatch_jwks_fetch_errors_total",
        "keywatch_mirror_in_sync",
        "keywatch_mirror_lag_seconds",
        "keywatch_next_key_lead_seconds",
    } <= used


def test_dashboard_groups_only_by_labels_the_metric_has() -> None:
    for query in dashboard_queries():
        names = {exported_name(name) for name in metric_names(grafana_to_promql(query))}
        labels = {"le", "__name__"}.union(*(SPECS[name].labels for name in names if name))
        for group in re.findall(r"\bby\s*\(([^)]*)\)", query):
            grouped = {label.strip() for label in group.split(",") if label.strip()}
            assert grouped <= labels, f"{query}: no label {sorted(grouped - labels)}"


def test_dashboard_shows_unreachable_tenants() -> None:
    assert any(
        "tenant.unreachable" in query and "keywatch_events_total" in query
        for query in dashboard_queries()
    )


def test_dashboard_queries_parse_as_promql(tmp_path: Path) -> None:
    promtool = find_tool("promtool")
    records = [
        {"record": f"dashboard:query_{index}", "expr": grafana_to_promql(query)}
        for index, query in enumerate(dashboard_queries())
    ]
    rules_file = tmp_path / "dashboard-queries.yml"
    rules_file.write_text(yaml.safe_dump({"groups": [{"name": "q", "rules": records}]}))
    result = run([promtool, "check", "rules", str(rules_file)])
    assert result.returncode == 0, result.stdout + result.stderr


# --- Kubernetes -------------------------------------------------------------------------------


def load_render_script() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "render_prometheusrule", KUSTOMIZE / "render_prometheusrule.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_prometheusrule_is_generated_from_rules_yml() -> None:
    generated = load_render_script().render(RULES.read_text(encoding="utf-8"))
    committed = (KUSTOMIZE / "base" / "prometheusrule.yaml").read_text(encoding="utf-8")
    assert committed == generated, "run: python3 deploy/kubernetes/render_prometheusrule.py"
    assert yaml.safe_load(committed)["spec"]["groups"] == rule_groups()


@functools.cache
def rendered(overlay: str) -> tuple[dict[str, Any], ...]:
    kubectl = find_tool("kubectl")
    result = run([kubectl, "kustomize", str(KUSTOMIZE / "overlays" / overlay)])
    assert result.returncode == 0, result.stderr
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def resource(overlay: str, kind: str, name_prefix: str = "keywatch") -> dict[str, Any]:
    (found,) = [
        doc
        for doc in rendered(overlay)
        if doc["kind"] == kind and doc["metadata"]["name"].startswith(name_prefix)
    ]
    return found


@functools.cache
def web_env() -> dict[str, str]:
    """What the protected overlay's configuration reads: a directory with a real certificate
    and key (``KEYWATCH_TLS_DIR``), and a bcrypt hash."""
    directory = Path(tempfile.mkdtemp(prefix="keywatch-deploy-tls-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    pki = make_pki(directory)
    pki.cert_file.rename(directory / "tls.crt")
    pki.key_file.rename(directory / "tls.key")
    return {"KEYWATCH_TLS_DIR": str(directory), "KEYWATCH_SCRAPE_HASH": "$2b$04$" + "a" * 53}


def config_of(overlay: str, env: dict[str, str]) -> Settings:
    configmap = resource(overlay, "ConfigMap", "keywatch-config")
    return parse_config(configmap["data"]["keywatch.yaml"], env={**web_env(), **env})


OVERLAYS = ("single", "ha", "protected")
BASE_KINDS = {
    "Deployment",
    "Service",
    "ServiceAccount",
    "ConfigMap",
    "Secret",
    "PodDisruptionBudget",
    "NetworkPolicy",
    "ServiceMonitor",
    "PrometheusRule",
}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kustomize_renders_every_resource(overlay: str) -> None:
    kinds = {doc["kind"] for doc in rendered(overlay)}
    assert BASE_KINDS <= kinds
    assert ("PersistentVolumeClaim" in kinds) == (overlay in ("single", "protected"))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_run_locked_down(overlay: str) -> None:
    pod = resource(overlay, "Deployment")["spec"]["template"]["spec"]
    uid = int(instructions("USER")[-1].split(":")[0])
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == uid, "the Dockerfile's USER"
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    for container in pod["containers"]:
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["readOnlyRootFilesystem"] is True
        assert context["capabilities"]["drop"] == ["ALL"]
        mounted = {mount["mountPath"] for mount in container["volumeMounts"]}
        assert {"/var/lib/keywatch", "/tmp", "/etc/keywatch"} <= mounted
        assert container["args"] == ["run", "--config", "/etc/keywatch/keywatch.yaml"]
        probes = {container[p]["httpGet"]["path"] for p in ("livenessProbe", "readinessProbe")}
        assert probes == {"/healthz", "/readyz"}


def test_single_overlay_keeps_sqlite_on_a_claim() -> None:
    deployment = resource("single", "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    volumes = {
        volume["name"]: volume for volume in deployment["spec"]["template"]["spec"]["volumes"]
    }
    claim = resource("single", "PersistentVolumeClaim")["metadata"]["name"]
    assert volumes["state"] == {"name": "state", "persistentVolumeClaim": {"claimName": claim}}
    settings = config_of("single", DEMO_ENV)
    assert settings.state == "sqlite:////var/lib/keywatch/state.db"


def test_ha_overlay_shares_postgresql_from_a_secret() -> None:
    deployment = resource("ha", "Deployment")
    assert deployment["spec"]["replicas"] == 2
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {item["name"]: item for item in container["env"]}
    reference = env["KEYWATCH_STATE"]["valueFrom"]["secretKeyRef"]
    secret = resource("ha", "Secret", reference["name"])
    url = secret["stringData"][reference["key"]]
    assert url.startswith("postgresql://")
    assert config_of("ha", {**DEMO_ENV, "KEYWATCH_STATE": url}).state == url
    egress_ports = {
        port["port"]
        for rule in resource("ha", "NetworkPolicy")["spec"]["egress"]
        for port in rule["ports"]
    }
    assert 5432 in egress_ports


def test_protected_overlay_serves_https_behind_basic_auth_with_open_probes() -> None:
    settings = config_of("protected", DEMO_ENV)
    assert settings.web.tls
    assert list(settings.web.basic_auth_users) == ["prometheus"]
    assert settings.web.auth_exempt == ("/healthz", "/readyz")
    assert config_of("single", DEMO_ENV).web.basic_auth_users == {}
    pod = resource("protected", "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["scheme"] == "HTTPS"
    env = {item["name"]: item for item in container["env"]}
    hash_ref = env["KEYWATCH_SCRAPE_HASH"]["valueFrom"]["secretKeyRef"]
    scrape = resource("protected", "Secret", "keywatch-scrape")
    assert hash_ref == {"name": "keywatch-scrape", "key": "hash"}
    assert {"username", "password", "hash"} <= set(scrape["stringData"])
    mounts = {mount["mountPath"]: mount for mount in container["volumeMounts"]}
    tls_volume = {volume["name"]: volume for volume in pod["volumes"]}["web-tls"]
    assert mounts["/etc/keywatch-tls"]["name"] == "web-tls"
    tls_secret = resource("protected", "Secret", "keywatch-web-tls")
    assert tls_volume["secret"]["secretName"] == tls_secret["metadata"]["name"]
    assert {"tls.crt", "tls.key", "ca.crt"} <= set(tls_secret["stringData"])
    (endpoint,) = resource("protected", "ServiceMonitor")["spec"]["endpoints"]
    assert endpoint["scheme"] == "https"
    assert endpoint["tlsConfig"]["ca"]["secret"] == {"name": "keywatch-web-tls", "key": "ca.crt"}
    assert (
        endpoint["tlsConfig"]["serverName"] == resource("protected", "Service")["metadata"]["name"]
    )
    assert endpoint["basicAuth"]["username"] == {"name": "keywatch-scrape", "key": "username"}
    assert endpoint["basicAuth"]["password"] == {"name": "keywatch-scrape", "key": "password"}
    (open_endpoint,) = resource("single", "ServiceMonitor")["spec"]["endpoints"]
    assert "basicAuth" not in open_endpoint and "scheme" not in open_endpoint


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_selectors_and_ports_line_up(overlay: str) -> None:
    deployment = resource(overlay, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    service_ = resource(overlay, "Service")

    def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
        return selector.items() <= labels.items()

    assert selects(deployment["spec"]["selector"]["matchLabels"], pod_labels)
    assert selects(service_["spec"]["selector"], pod_labels)
    assert selects(
        resource(overlay, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"], pod_labels
    )
    assert selects(
        resource(overlay, "NetworkPolicy")["spec"]["podSelector"]["matchLabels"], pod_labels
    )
    monitor = resource(overlay, "ServiceMonitor")
    assert selects(monitor["spec"]["selector"]["matchLabels"], service_["metadata"]["labels"])
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    (port,) = container["ports"]
    assert {p["name"] for p in service_["spec"]["ports"]} == {port["name"]}
    assert monitor["spec"]["endpoints"][0]["port"] == port["name"]
    listen_port = int(
        config_of(overlay, {**DEMO_ENV, "KEYWATCH_STATE": "sqlite:///x.db"}).listen.rsplit(":", 1)[
            1
        ]
    )
    assert port["containerPort"] == listen_port
    ingress_ports = {
        p["port"]
        for rule in resource(overlay, "NetworkPolicy")["spec"]["ingress"]
        for p in rule["ports"]
    }
    assert ingress_ports == {listen_port}
    configmap = resource(overlay, "ConfigMap", "keywatch-config")["metadata"]["name"]
    volumes = deployment["spec"]["template"]["spec"]["volumes"]
    assert {"name": "config", "configMap": {"name": configmap}} in volumes
    rule = resource(overlay, "PrometheusRule")
    assert rule["spec"]["groups"] == rule_groups()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rendered_resources_match_the_kubernetes_schemas(overlay: str) -> None:
    documents = rendered(overlay)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # its RefResolver / pkg_resources
        kubernetes_validate = find_module("kubernetes_validate", package="kubernetes-validate")
        version = kubernetes_validate.latest_version()
        checked = 0
        for document in documents:
            if document["apiVersion"].startswith("monitoring.coreos.com/"):
                continue  # CRDs: checked above (selectors) and by promtool (the rules)
            kubernetes_validate.validate(document, version, strict=True)
            checked += 1
    assert checked == len(documents) - 2
