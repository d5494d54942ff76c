"""Settings shared by every service (``LABELGATE_…``); each service adds its own with a longer prefix."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class CoreSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LABELGATE_", extra="ignore")

    bus: Literal["memory", "kafka"] = "memory"
    store: Literal["sqlite", "mongo"] = "sqlite"
    data_dir: Path = Field(default=Path(".labelgate"), description="Where the embedded store and bus keep files")
    bus_partitions: int = Field(default=4, ge=1, le=1024)
    bus_journal: bool = Field(
        default=True, description="Journal the in-process bus to data_dir so a crash loses nothing"
    )
    log_level: str = "INFO"
    log_format: Literal["json", "text"] = "json"
    consumer_max_attempts: int = Field(default=3, ge=1, le=100)

    kafka_bootstrap_servers: str = Field(
        default="localhost:9092", description="Comma-separated host:port list of the Kafka brokers"
    )
    kafka_topic_partitions: int = Field(default=4, ge=1, le=10_000, description="Partitions of a created topic")
    kafka_replication_factor: int = Field(
        default=3, ge=1, le=32, description="Replicas of a created topic (1 only for a single-broker cluster)"
    )
    kafka_min_insync_replicas: int = Field(
        default=2, ge=1, le=32, description="min.insync.replicas of a created topic: replicas an acks=all write needs"
    )
    kafka_client_id: str = Field(default="labelgate", description="Prefix of the Kafka client ids")
    kafka_session_timeout_ms: int = Field(
        default=10_000, ge=1_000, le=300_000,
        description="A consumer that sends no heartbeat for this long leaves its group and its partitions move",
    )
    kafka_heartbeat_interval_ms: int = Field(
        default=3_000, ge=100, le=100_000, description="Consumer heartbeats; at most a third of the session timeout"
    )
    kafka_max_poll_interval_ms: int = Field(
        default=300_000, ge=1_000, le=3_600_000,
        description="Longest a consumer may take between polls (one batch's handlers) before it leaves its group",
    )
    kafka_request_timeout_ms: int = Field(
        default=30_000, ge=1_000, le=300_000, description="Timeout of one request to a broker (commits included)"
    )

    mongo_url: SecretStr = Field(
        default=SecretStr("mongodb://127.0.0.1:27017/?replicaSet=rs0"),
        description="MongoDB connection URL (may hold credentials); it must reach a replica set",
    )
    mongo_database_prefix: str = Field(
        default="labelgate", description="Each service's database is named <prefix>_<service>"
    )
