"""The labeler's settings (``LABELGATE_LABELER_…``): retraining schedule, model size, and where it listens."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class LabelerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LABELGATE_LABELER_", extra="ignore")

    retrain_every_reviews: int = Field(
        default=50, ge=1, description="Retrain a project's model once this many new reviews have arrived"
    )
    retrain_interval_s: float = Field(
        default=30.0, gt=0, description="Also retrain after this long, if at least one new review arrived"
    )
    retrain_check_s: float = Field(
        default=1.0, gt=0, le=60, description="How often the retraining schedule is checked"
    )
    min_train_examples: int = Field(
        default=20, ge=2, description="Reviewed items (with at least two distinct labels) before a first model"
    )
    max_features: int = Field(default=50_000, ge=100, description="TF-IDF vocabulary size (words and bigrams)")
    max_text_chars: int = Field(default=20_000, ge=100, description="Texts are cut to this length for the model")
    holdout_every: int = Field(
        default=5, ge=2, description="Every n-th reviewed item is held out to measure a version's accuracy"
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8001, ge=1, le=65535)
