"""The monitoring profile of docker-compose.yml, its Prometheus configuration and the Grafana
dashboard, checked without a Docker engine: the dashboard must parse and may name only metrics
that the services, Odoo or RabbitMQ's rabbitmq_prometheus plugin expose."""

import json
import os
import re

import pytest
import yaml
from test_compose import COMPOSE_FILE, INIT_SECRET, REPO, SECRETS, environment, run_config

DASHBOARD = os.path.join(REPO, "docker", "grafana", "dashboards", "compute_bridge.json")
PROMETHEUS_CONF = os.path.join(REPO, "docker", "prometheus", "prometheus.yml")
METRIC_SOURCES = ("services/telemetry.py", "compute_bridge/telemetry.py")
# Metrics of rabbitmq_prometheus the dashboard uses (RabbitMQ's "Monitoring with Prometheus":
# the aggregated metrics served on :15692/metrics).
RABBITMQ_METRICS = {"rabbitmq_queue_messages_ready", "rabbitmq_connections"}
# What each kind of prometheus-client metric is exposed as.
SUFFIXES = {"Counter": ("_total",), "Histogram": ("_bucket", "_sum", "_count"),
            "Gauge": ("",), "GaugeMetricFamily": ("",)}
METRIC_DEFINITION = re.compile(r"\b(Counter|Histogram|Gauge|GaugeMetricFamily)\(\s*\"(\w+)\"")
# What is not a metric name in the dashboard's PromQL: `by (labels)`, {matchers}, [ranges].
PROMQL_NOT_NAMES = re.compile(r"\bby\s*\([^)]*\)|\{[^}]*\}|\[[^\]]*\]")
# An identifier not followed by "(" (a function): a metric name.
PROMQL_NAME = re.compile(r"\b([a-zA-Z_][a-zA-Z0-9_]*)\b(?!\s*\()")


def exposed_metrics():
    names = set(RABBITMQ_METRICS)
    for source in METRIC_SOURCES:
        with open(os.path.join(REPO, source)) as handle:
            for kind, name in METRIC_DEFINITION.findall(handle.read()):
                names.update(name + suffix for suffix in SUFFIXES[kind])
    return names


def test_the_dashboard_parses_and_names_only_exposed_metrics():
    with open(DASHBOARD) as handle:
        dashboard = json.load(handle)
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    assert exprs
    exposed = exposed_metrics()
    # the metric names the definitions yield, so that this test can fail
    assert "compute_bridge_calls_total" in exposed and "nameko_entrypoint_calls_total" in exposed
    for expr in exprs:
        names = set(PROMQL_NAME.findall(PROMQL_NOT_NAMES.sub(" ", expr)))
        assert names, expr
        assert names <= exposed, "%s names unknown metrics %s" % (expr, names - exposed)


# Gauges every Odoo replica reads from the one database: summed over replicas they would count
# each row once per replica.
DATABASE_GAUGES = re.compile(r"\bcompute_bridge_(operations|service_instances|background_\w+)\b")


def test_the_dashboard_takes_the_max_of_the_database_gauges():
    with open(DASHBOARD) as handle:
        exprs = [target["expr"] for panel in json.load(handle)["panels"]
                 for target in panel["targets"]]
    gauges = [expr for expr in exprs if DATABASE_GAUGES.search(expr)]
    assert gauges
    for expr in gauges:
        assert expr.startswith("max"), expr


def test_prometheus_scrapes_the_services_odoo_and_rabbitmq():
    with open(PROMETHEUS_CONF) as handle:
        jobs = {job["job_name"]: job for job in yaml.safe_load(handle)["scrape_configs"]}
    assert jobs["services"]["metrics_path"] == "/metrics"
    assert jobs["services"]["dns_sd_configs"][0]["port"] == 8000  # the /health port
    assert jobs["odoo"]["metrics_path"] == "/compute_bridge/metrics"
    assert jobs["odoo"]["authorization"]["type"] == "Bearer"
    # each replica of `--scale odoo=N`: its counters are its own processes' only
    assert jobs["odoo"]["dns_sd_configs"][0] == {"names": ["odoo"], "type": "A", "port": 8069}
    assert jobs["rabbitmq"]["static_configs"][0]["targets"] == ["rabbitmq:15692"]


@pytest.fixture(scope="module")
def compose(tmp_path_factory):
    """What `docker-compose config` makes of the file (the profiles' services included)."""
    result = run_config(tmp_path_factory.mktemp("compose"), dict(SECRETS, **INIT_SECRET))
    assert result.returncode == 0, "docker-compose config failed:\n" + result.stderr
    return yaml.safe_load(result.stdout)


@pytest.fixture(scope="module")
def raw_compose():
    with open(COMPOSE_FILE) as handle:
        return yaml.safe_load(handle)


def test_monitoring_is_an_optional_profile(raw_compose, compose):
    for name in ("prometheus", "grafana"):
        assert raw_compose["services"][name]["profiles"] == ["monitoring"]
        assert name in compose["services"]  # `docker-compose config` read it
    token_file = yaml.safe_load(open(PROMETHEUS_CONF))["scrape_configs"][1]["authorization"][
        "credentials_file"]
    command = " ".join(compose["services"]["prometheus"]["command"])
    assert token_file in command and "COMPUTE_BRIDGE_METRICS_TOKEN" in command
    assert "COMPUTE_BRIDGE_METRICS_TOKEN" in environment(compose["services"]["odoo"])


def test_grafana_requires_an_admin_password(compose):
    grafana = environment(compose["services"]["grafana"])
    assert grafana["GF_SECURITY_ADMIN_PASSWORD"] == SECRETS["GRAFANA_ADMIN_PASSWORD"]


def test_the_broker_enables_rabbitmq_prometheus(compose):
    mounts = [volume if isinstance(volume, str) else volume["target"]
              for volume in compose["services"]["rabbitmq"]["volumes"]]
    assert any("/etc/rabbitmq/enabled_plugins" in mount for mount in mounts)
    with open(os.path.join(REPO, "docker", "rabbitmq", "enabled_plugins")) as handle:
        assert "rabbitmq_prometheus" in handle.read()
