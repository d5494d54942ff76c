"""The review API's settings (``LABELGATE_REVIEW_API_…``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ReviewApiSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LABELGATE_REVIEW_API_", extra="ignore")

    host: str = Field(default="127.0.0.1", description="Interface the standalone server listens on")
    port: int = Field(default=8000, ge=1, le=65535)
    max_batch: int = Field(default=10_000, ge=1, le=100_000, description="Most items accepted in one POST")
    max_image_bytes: int = Field(
        # A stored image is kept base64-encoded in one document: 11 MB of bytes stays under MongoDB's 16 MB.
        default=10_000_000, ge=1, le=11_000_000, description="Largest uploaded image accepted, in bytes"
    )
    max_batch_image_bytes: int = Field(
        default=50_000_000, ge=1, description="Most uploaded image bytes accepted in one POST"
    )
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
    lease_scan_page: int = Field(
        default=100, ge=1, le=10_000, description="Open tasks read per query while looking for one a reviewer may take"
    )
    overlap_max_extra: int = Field(
        default=2,
        ge=0,
        le=10,
        description="Extra reviewers asked, one at a time, while an overlapped task's answers tie",
    )
    dawid_skene_min_answers: int = Field(
        default=50, ge=1, description="Overlapped answers a project needs before Dawid-Skene replaces majority vote"
    )
    consensus_history: int = Field(
        default=5000, ge=1, le=1_000_000, description="Latest overlapped answers Dawid-Skene learns reviewers from"
    )
    agreement_threshold: float = Field(
        default=0.6, gt=0, le=1, description="Per-label agreement below which a label's guideline is ambiguous"
    )
    agreement_min_support: int = Field(
        default=10, ge=1, description="Answers a label needs on overlapped items before it can be flagged ambiguous"
    )
    requeue_page: int = Field(
        default=500, ge=1, le=10_000, description="Finals read per query when a guideline change re-queues items"
    )
