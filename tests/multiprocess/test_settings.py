"""Multi-process mode is configured by environment alone: the shared settings pick Kafka and MongoDB, and each
service listens where its own ``LABELGATE_<SERVICE>_HOST``/``_PORT`` say."""

from __future__ import annotations

import pytest

from labelgate_core.settings import CoreSettings
from labelgate_labeler.settings import LabelerSettings
from labelgate_metrics.settings import MetricsSettings
from labelgate_review_api.settings import ReviewApiSettings
from labelgate_router.settings import RouterSettings

from .processes import SETTINGS_PREFIX, cluster_env

pytestmark = pytest.mark.unit

ServiceSettings = ReviewApiSettings | LabelerSettings | RouterSettings | MetricsSettings
SETTINGS: dict[str, type[ServiceSettings]] = {
    "review-api": ReviewApiSettings,
    "labeler": LabelerSettings,
    "router": RouterSettings,
    "metrics": MetricsSettings,
}


def test_the_cluster_environment_selects_kafka_and_mongo_for_a_single_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    ports = {service: 20_000 + i for i, service in enumerate(SETTINGS)}
    env = cluster_env("127.0.0.1:9999", "mongodb://127.0.0.1:27999/?directConnection=true", "mpx", ports)
    for name, value in env.items():
        if name.startswith("LABELGATE_"):
            monkeypatch.setenv(name, value)

    core = CoreSettings()
    assert (core.bus, core.store) == ("kafka", "mongo")
    assert core.kafka_bootstrap_servers == "127.0.0.1:9999"
    assert (core.kafka_replication_factor, core.kafka_min_insync_replicas) == (1, 1)
    assert core.mongo_url.get_secret_value() == "mongodb://127.0.0.1:27999/?directConnection=true"
    assert core.mongo_database_prefix == "mpx"
    for service, settings_type in SETTINGS.items():
        settings = settings_type()
        assert SETTINGS_PREFIX[service] == settings.model_config.get("env_prefix")
        assert (settings.host, settings.port) == ("127.0.0.1", ports[service]), service
