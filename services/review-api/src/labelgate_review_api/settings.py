"""The review API's settings (``LABELGATE_REVIEW_API_…``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ReviewApiSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LABELGATE_REVIEW_API_", extra="ignore")

    host: str = Field(default="127.0.0.1", description="Interface the standalone server listens on")
    port: int = Field(default=8000, ge=1, le=65535)
    max_batch: int = Field(default=10_000, ge=1, le=100_000, description="Most items accepted in one POST")
    lease_seconds: int = Field(
        default=300, ge=1, le=3600, description="How long a reviewer holds a task unless they say otherwise"
    )
    key_lookup_chunk: int = Field(
        default=500, ge=1, le=5000, description="Idempotency keys looked up per query when a batch arrives"
    )
    export_batch_size: int = Field(default=1000, ge=1, le=100_000, description="Finals read per store query")
    queue_depth_refresh_s: float = Field(
        default=15.0, gt=0, description="Longest time between recounts of the queue-depth gauge"
    )
