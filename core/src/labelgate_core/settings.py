"""Settings shared by every service (``LABELGATE_…``); each service adds its own with a longer prefix."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
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
