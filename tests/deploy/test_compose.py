"""docker-compose.yml, the Dockerfile and docs/deploy.md's instructions for them agree with each
other and with the rest of deploy/. No Docker engine runs here, so the file is checked as data;
`docker compose config` runs too when the Compose plugin is installed."""

from __future__ import annotations

import re
import shutil
import subprocess
from typing import Any

import pytest
import yaml
from promstack import DEPLOY, ROOT

from streamproc.config import Settings, env_name

COMPOSE = ROOT / "docker-compose.yml"
SERVICES = {
    "kafka", "topics", "redis", "worker", "exporter", "simulator",
    "prometheus", "alertmanager", "alert-webhook", "grafana",
}  # fmt: skip
STREAMPROC_IMAGE = {"worker", "exporter", "simulator", "alert-webhook"}
ONE_SHOT = {"topics"}  # runs to completion; nothing to check while it runs
NO_HEALTH_ENDPOINT = {"simulator"}  # a producer: it serves nothing to probe
PUBLISHED = {
    "exporter": "9464:9464",
    "prometheus": "9090:9090",
    "alertmanager": "9093:9093",
    "grafana": "3000:3000",
    "kafka": "9094:9094",
}
URLS = [
    "http://localhost:3000",
    "http://localhost:9090",
    "http://localhost:9093",
    "http://localhost:9464/metrics",
]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text()))


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(compose["services"])


def _deploy_page() -> str:
    return (ROOT / "docs" / "deploy.md").read_text()


def test_the_services(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) == SERVICES
    for name in STREAMPROC_IMAGE:
        assert services[name]["build"] == "." and services[name]["image"] == "streamproc:local"
    assert services["worker"]["deploy"]["replicas"] == 2
    assert services["worker"]["command"] == ["worker"]
    assert services["exporter"]["command"] == ["exporter"]
    assert services["simulator"]["command"][0] == "simulate"
    assert services["simulator"]["profiles"] == ["simulator"]
    assert [s for s, spec in services.items() if "profiles" in spec] == ["simulator"]


def test_images_are_pinned(services: dict[str, dict[str, Any]]) -> None:
    for name, spec in services.items():
        if name in STREAMPROC_IMAGE:
            continue
        image = spec["image"]
        assert re.fullmatch(r"[\w./-]+:v?\d+\.\d+\.\d+(-\w+)?", image), f"{name}: {image}"


def test_kafka_runs_kraft_on_one_node(services: dict[str, dict[str, Any]]) -> None:
    env = services["kafka"]["environment"]
    assert re.fullmatch(r"[\w-]{22}", env["CLUSTER_ID"])  # a base64 UUID, fixed
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == "1@kafka:9093"
    assert "INTERNAL://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"]
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == 1
    assert "kafka-data:" + env["KAFKA_LOG_DIRS"] in services["kafka"]["volumes"]


def test_the_topics_match_the_settings(services: dict[str, dict[str, Any]]) -> None:
    """All four input topics and the dead-letter topic, with the workers' partition count."""
    topics = services["topics"]
    script = topics["command"][0]
    defaults = Settings.model_fields
    names = [defaults[f"topic_{t}"].default for t in ("clickstream", "cart", "orders", "tickets")]
    names.append(defaults["topic_dlq"].default)
    assert f"for topic in {' '.join(names)}; do" in script
    assert '--partitions "$$PARTITIONS"' in script and "--if-not-exists" in script
    partitions = services["worker"]["environment"]["STREAMPROC_PARTITIONS"]
    assert topics["environment"]["PARTITIONS"] == partitions == "${STREAMPROC_PARTITIONS:-8}"
    for name in ("worker", "simulator"):
        condition = services[name]["depends_on"]["topics"]["condition"]
        assert condition == "service_completed_successfully"


def test_streamproc_environment_names_real_settings(services: dict[str, dict[str, Any]]) -> None:
    known = {env_name(field) for field in Settings.model_fields}
    for name in STREAMPROC_IMAGE:
        env = services[name]["environment"]
        assert sorted(set(env) - known) == []
        assert env["STREAMPROC_BIND"] == "0.0.0.0"
        assert env["STREAMPROC_BOOTSTRAP_SERVERS"] == "kafka:9092"
        assert env["STREAMPROC_REDIS_URL"] == "redis://redis:6379/0"


def test_published_ports(services: dict[str, dict[str, Any]]) -> None:
    published = {name: spec["ports"] for name, spec in services.items() if "ports" in spec}
    assert published == {name: [port] for name, port in PUBLISHED.items()}
    env = services["exporter"]["environment"]
    assert PUBLISHED["exporter"] == f"{env['STREAMPROC_EXPORTER_PORT']}:9464"


def test_volumes(compose: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    named: set[str] = set()
    for name, spec in services.items():
        for volume in spec.get("volumes", []):
            source, target = volume.split(":")[:2]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name}: {source} does not exist"
                assert volume.endswith(":ro"), f"{name}: mount {source} read-only"
            else:
                named.add(source)
            assert target.startswith("/")
    assert named == set(compose["volumes"])
    assert named == {"kafka-data", "redis-data", "prometheus-data", "alertmanager-data",
                     "grafana-data"}  # fmt: skip


def test_health_checks(services: dict[str, dict[str, Any]]) -> None:
    for name, spec in services.items():
        if name in ONE_SHOT | NO_HEALTH_ENDPOINT:
            assert "healthcheck" not in spec
            continue
        check = spec["healthcheck"]
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name
        assert {"interval", "timeout", "retries"} <= set(check), name
    for name, spec in services.items():
        for needed, how in spec.get("depends_on", {}).items():
            condition = how["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in services[needed], f"{name} waits on {needed}"
            else:
                assert condition == "service_completed_successfully" and needed in ONE_SHOT


def test_the_health_checks_probe_the_served_ports(services: dict[str, dict[str, Any]]) -> None:
    def probe(name: str) -> str:
        return " ".join(services[name]["healthcheck"]["test"])

    worker_port = services["worker"]["environment"]["STREAMPROC_WORKER_PORT"]
    assert f"127.0.0.1:{worker_port}/metrics" in probe("worker")
    assert "127.0.0.1:9464/healthz" in probe("exporter")
    assert "localhost:9090/-/ready" in probe("prometheus")
    assert "localhost:9093/-/ready" in probe("alertmanager")
    assert "localhost:3000/api/health" in probe("grafana")
    assert "127.0.0.1:8080/" in probe("alert-webhook")


def test_prometheus_and_alertmanager_reach_the_services(
    services: dict[str, dict[str, Any]],
) -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    (dns,) = jobs["streamproc-worker"]["dns_sd_configs"]
    worker_port = int(services["worker"]["environment"]["STREAMPROC_WORKER_PORT"])
    assert dns == {"names": ["worker"], "type": "A", "port": worker_port, "refresh_interval": "30s"}
    assert jobs["streamproc-exporter"]["static_configs"] == [{"targets": ["exporter:9464"]}]
    targets = config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert targets == ["alertmanager:9093"]
    assert "./deploy/prometheus:/etc/prometheus:ro" in services["prometheus"]["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in services["prometheus"]["command"]
    assert services["alert-webhook"]["command"] == ["--port", "8080"]


def test_the_dockerfile() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", dockerfile, re.MULTILINE)
    assert base is not None and re.fullmatch(r"python:3\.11\.\d+-slim-\w+", base.group(1))
    assert dockerfile.count("FROM ${PYTHON_IMAGE}") == 2  # build stage and a clean runtime
    user = re.findall(r"^USER (\S+)$", dockerfile, re.MULTILINE)
    assert user == ["10001:10001"]
    assert "EXPOSE 6066 9464" in dockerfile
    assert 'ENTRYPOINT ["streamproc"]' in dockerfile
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    ignored = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert {".git", ".venv", "tests", "deploy"} <= set(ignored)
    copied = " ".join(line for line in dockerfile.splitlines() if line.startswith("COPY "))
    for needed in ("pyproject.toml", "README.md", "streamproc"):
        assert needed not in ignored and needed in copied


def test_the_docs_explain_the_stack(services: dict[str, dict[str, Any]]) -> None:
    section = _deploy_page()
    assert "docker compose up -d --build" in section
    assert "docker compose --profile simulator up -d" in section
    for name in services:
        assert f"`{name}`" in section, f"docs/deploy.md does not mention the {name} service"
    for url in URLS:
        assert url in section
    assert "localhost:9094" in section  # Kafka for clients on the host
    assert "](alerts.md)" in section and "](runbook.md)" in section


@pytest.mark.skipif(
    shutil.which("docker") is None
    or subprocess.run(["docker", "compose", "version"], capture_output=True).returncode != 0,
    reason="the docker compose plugin is not installed",
)
def test_docker_compose_config_accepts_it() -> None:
    done = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE), "config", "--quiet"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
