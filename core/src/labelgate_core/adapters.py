"""Pick the bus and store adapters the settings name (the only place that knows them all)."""

from __future__ import annotations

from .bus.memory import MemoryBus
from .bus.port import Bus
from .settings import CoreSettings
from .store.port import Store
from .store.sqlite import SqliteStore


class AdapterUnavailableError(RuntimeError):
    pass


def make_bus(settings: CoreSettings) -> Bus:
    if settings.bus == "memory":
        journal = settings.data_dir / "bus.db" if settings.bus_journal else None
        return MemoryBus(partitions=settings.bus_partitions, journal=journal)
    if settings.bus == "kafka":
        from .bus.kafka import KafkaBus  # aiokafka is loaded only by deployments that use it

        return KafkaBus(
            settings.kafka_bootstrap_servers,
            client_id=settings.kafka_client_id,
            partitions=settings.kafka_topic_partitions,
            replication_factor=settings.kafka_replication_factor,
            min_insync_replicas=settings.kafka_min_insync_replicas,
            session_timeout_ms=settings.kafka_session_timeout_ms,
            heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms,
            max_poll_interval_ms=settings.kafka_max_poll_interval_ms,
            request_timeout_ms=settings.kafka_request_timeout_ms,
        )
    raise AdapterUnavailableError(f"LABELGATE_BUS={settings.bus} is not available in this build")


def make_store(settings: CoreSettings, service: str) -> Store:
    if settings.store == "sqlite":
        return SqliteStore(settings.data_dir / f"{service}.db")
    if settings.store == "mongo":
        from .store.mongo import MongoStore  # pymongo is loaded only by deployments that use it

        return MongoStore(settings.mongo_url.get_secret_value(), f"{settings.mongo_database_prefix}_{service}")
    raise AdapterUnavailableError(f"LABELGATE_STORE={settings.store} is not available in this build")
