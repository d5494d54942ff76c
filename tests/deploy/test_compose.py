"""docker-compose.yml: valid for Compose, and a stack that works — every Labelgate service built from its own
Dockerfile target, unprivileged, checked on /readyz, and pointed at the Kafka broker and the MongoDB replica
set that the same file defines. Checked on what Compose itself makes of the file (``docker-compose config``)."""

from __future__ import annotations

import importlib
import os
import re
import subprocess
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from pydantic_settings import BaseSettings

from labelgate_core.settings import CoreSettings

from .helpers import ROOT, SERVICES, load_yaml, program, read_yaml, run

pytestmark = pytest.mark.unit

INFRASTRUCTURE = {"kafka", "mongo", "prometheus", "grafana"}
ONE_SHOT = {"mongo-init"}


def _compose_env() -> dict[str, str]:
    # The check must not depend on the shell's COMPOSE_FILE, COMPOSE_PROJECT_NAME and the like.
    return {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "DOCKER_"))}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """The configuration Compose reads from docker-compose.yml (anchors merged, variables interpolated)."""
    docker_compose = program("docker-compose", "docker-compose")
    result = subprocess.run(
        [docker_compose, "-f", "docker-compose.yml", "config"],
        cwd=ROOT, env=_compose_env(), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, f"docker-compose config failed:\n{result.stderr}"
    config: dict[str, Any] = load_yaml(result.stdout)
    return config


def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


def settings_class(service: str) -> type[BaseSettings]:
    module = importlib.import_module(f"{SERVICES[service][1]}.settings")
    classes = [
        value
        for value in vars(module).values()
        if isinstance(value, type) and issubclass(value, BaseSettings) and value is not BaseSettings
    ]
    assert len(classes) == 1, f"{module.__name__} should define one settings class, found {classes}"
    return classes[0]


def env_names(cls: type[BaseSettings]) -> set[str]:
    prefix = str(cls.model_config.get("env_prefix", ""))
    return {(prefix + name).upper() for name in cls.model_fields}


def port_of(service: str) -> int:
    port = settings_class(service).model_fields["port"].default
    assert isinstance(port, int)
    return port


def test_docker_compose_validates_the_file() -> None:
    docker_compose = program("docker-compose", "docker-compose")
    run([docker_compose, "-f", "docker-compose.yml", "config", "-q"])


def test_the_stack_has_the_four_services_kafka_mongodb_prometheus_and_grafana(compose: dict[str, Any]) -> None:
    assert set(services(compose)) == set(SERVICES) | INFRASTRUCTURE | ONE_SHOT


@pytest.mark.parametrize("name", sorted(set(SERVICES) | INFRASTRUCTURE))
def test_every_long_running_container_has_a_healthcheck(compose: dict[str, Any], name: str) -> None:
    healthcheck = services(compose)[name].get("healthcheck")
    assert healthcheck, f"{name} has no healthcheck: depends_on conditions and operators cannot tell it is up"
    assert not healthcheck.get("disable", False)
    assert healthcheck["test"][0] in {"CMD", "CMD-SHELL"}


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_each_service_is_built_from_its_own_dockerfile_target(compose: dict[str, Any], name: str) -> None:
    build = services(compose)[name]["build"]
    assert build["target"] == name
    assert build.get("dockerfile", "Dockerfile") == "Dockerfile"
    assert os.path.realpath(build["context"]) == str(ROOT)


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_each_service_is_ready_only_when_its_readyz_says_so(compose: dict[str, Any], name: str) -> None:
    command = " ".join(services(compose)[name]["healthcheck"]["test"][1:])
    assert f"http://127.0.0.1:{port_of(name)}/readyz" in command
    # urlopen raises on the 503 that /readyz answers while the store or the bus is down: the check fails.
    assert "urlopen" in command


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_each_service_runs_unprivileged(compose: dict[str, Any], name: str) -> None:
    service = services(compose)[name]
    user = str(service.get("user", ""))
    assert user, f"{name} sets no user: it would run as whatever the image says"
    uid = user.split(":")[0]
    assert uid not in {"0", "root"}, f"{name} runs as root ({user})"
    assert service.get("read_only") is True
    assert "ALL" in service.get("cap_drop", [])
    assert "no-new-privileges:true" in service.get("security_opt", [])
    assert not service.get("privileged", False)


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_each_service_uses_kafka_and_mongodb_of_this_stack(compose: dict[str, Any], name: str) -> None:
    everything = services(compose)
    env = everything[name]["environment"]
    assert env["LABELGATE_BUS"] == "kafka"
    assert env["LABELGATE_STORE"] == "mongo"

    kafka_env = everything["kafka"]["environment"]
    advertised = dict(entry.split("://", 1) for entry in kafka_env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    inter_broker = kafka_env["KAFKA_INTER_BROKER_LISTENER_NAME"]
    assert env["LABELGATE_KAFKA_BOOTSTRAP_SERVERS"] == advertised[inter_broker] == "kafka:9092"
    # One broker: topics created with the production defaults (3 replicas, 2 in sync) would be refused.
    assert env["LABELGATE_KAFKA_REPLICATION_FACTOR"] == "1"
    assert env["LABELGATE_KAFKA_MIN_INSYNC_REPLICAS"] == "1"

    mongo_url = urlsplit(env["LABELGATE_MONGO_URL"])
    assert mongo_url.scheme == "mongodb"
    assert mongo_url.hostname in everything
    assert mongo_url.port == 27017
    assert parse_qs(mongo_url.query)["replicaSet"] == ["rs0"]

    depends = everything[name]["depends_on"]
    assert depends["kafka"]["condition"] == "service_healthy"
    assert depends["mongo"]["condition"] == "service_healthy"
    assert depends["mongo-init"]["condition"] == "service_completed_successfully"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_each_service_listens_on_all_interfaces_on_its_port(compose: dict[str, Any], name: str) -> None:
    service = services(compose)[name]
    prefix = str(settings_class(name).model_config.get("env_prefix", ""))
    env = service["environment"]
    # The settings default to 127.0.0.1, which nothing outside the container can reach.
    assert env[f"{prefix}HOST"] == "0.0.0.0"  # noqa: S104 - inside a container, on purpose
    assert int(env[f"{prefix}PORT"]) == port_of(name)
    published = {
        str(port["target"]) if isinstance(port, dict) else str(port).split(":")[-1].split("/")[0]
        for port in service.get("ports", [])
    }
    assert str(port_of(name)) in published


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_labelgate_variable_is_one_the_settings_read(compose: dict[str, Any], name: str) -> None:
    """A misspelt variable is silently ignored by the settings (extra="ignore"): catch it here."""
    known = env_names(CoreSettings) | env_names(settings_class(name))
    given = {key for key in services(compose)[name]["environment"] if key.startswith("LABELGATE_")}
    assert given - known == set(), f"{name}: variables no settings class reads"


def test_kafka_is_the_official_image_as_a_single_kraft_node(compose: dict[str, Any]) -> None:
    kafka = services(compose)["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = kafka["environment"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:9093"
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", env["CLUSTER_ID"]), "a KRaft cluster id is 16 bytes, base64url"
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert any(
        volume.endswith(":/var/lib/kafka/data:rw") or volume.endswith(":/var/lib/kafka/data")
        for volume in map(_volume_text, kafka["volumes"])
    )


def test_mongodb_is_a_single_node_replica_set_that_gets_initiated(compose: dict[str, Any]) -> None:
    everything = services(compose)
    command = everything["mongo"]["command"]
    assert command[command.index("--replSet") + 1] == "rs0"
    assert "isWritablePrimary" in " ".join(everything["mongo"]["healthcheck"]["test"])
    init = everything["mongo-init"]
    script = " ".join(init["entrypoint"])
    assert "rs.initiate" in script
    assert '_id: "rs0"' in script
    assert 'host: "mongo:27017"' in script  # the name the services reach it by
    assert init.get("restart", "no") == "no"


def test_prometheus_scrapes_every_service_where_compose_runs_it(compose: dict[str, Any]) -> None:
    everything = services(compose)
    volumes = [_volume_text(volume) for volume in everything["prometheus"]["volumes"]]
    assert any(v.startswith(f"{ROOT / 'deploy' / 'prometheus'}:/etc/prometheus") for v in volumes)
    config = read_yaml(ROOT / "deploy" / "prometheus" / "prometheus.yml")
    targets = {
        target
        for job in config["scrape_configs"]
        if job["job_name"].startswith("labelgate-")
        for static in job["static_configs"]
        for target in static["targets"]
    }
    assert targets == {f"{name}:{port_of(name)}" for name in SERVICES}


def test_grafana_gets_its_datasource_and_dashboard_from_the_repository(compose: dict[str, Any]) -> None:
    volumes = [_volume_text(volume) for volume in services(compose)["grafana"]["volumes"]]
    for folder in ("provisioning", "dashboards"):
        host = ROOT / "deploy" / "grafana" / folder
        assert host.is_dir()
        assert any(v.startswith(f"{host}:") for v in volumes)


def test_ports_are_published_on_the_loopback_interface_only(compose: dict[str, Any]) -> None:
    for name, service in services(compose).items():
        for port in service.get("ports", []):
            host_ip = port.get("host_ip") if isinstance(port, dict) else str(port).split(":")[0]
            assert host_ip == "127.0.0.1", f"{name} publishes {port} on every interface"


def _volume_text(volume: Any) -> str:
    """``source:target[:mode]``, with a host path resolved (the checkout may sit behind a symlink)."""
    text = f"{volume['source']}:{volume['target']}" if isinstance(volume, dict) else str(volume)
    source, _, rest = text.partition(":")
    return f"{os.path.realpath(source)}:{rest}" if source.startswith("/") else text
