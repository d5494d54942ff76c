"""The metrics service's settings (``LABELGATE_METRICS_…``); bus and store come from the core settings."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class MetricsSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LABELGATE_METRICS_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=8003, ge=1, le=65535)
    agreement_refresh_s: float = Field(
        default=5.0,
        ge=0.0,
        le=3600.0,
        description="Recompute Cohen's kappa and audit accuracy at most this often (seconds) per project",
    )
