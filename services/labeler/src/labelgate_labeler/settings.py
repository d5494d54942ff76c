"""The labeler's settings (``LABELGATE_LABELER_…``): who labels (the local model, a language model over an
OpenAI-compatible API, or an ensemble), retraining schedule, model size, and where it listens.

Nested values use ``__``: ``LABELGATE_LABELER_LLM__BASE_URL``, ``LABELGATE_LABELER_LLM__PRICE__INPUT``; lists
and maps take JSON: ``LABELGATE_LABELER_LLM_PROJECTS='{"support": {"budget_usd_per_day": 5}}'``.

A project can use its own endpoint, key and model::

    LABELGATE_LABELER_LLM_PROJECTS='{"legal": {"base_url": "https://llm.legal.example/v1",
                                              "api_key": "sk-...", "model": "legal-13b"}}'

Keys (``llm.api_key``, ``llm_projects.*.api_key``, ``review_api_key``) are ``SecretStr``: they print as
``**********``, are never logged and never put on events."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .llm.config import LLMProviderConfig, ProjectLLMConfig


class LabelerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LABELGATE_LABELER_", extra="ignore", env_nested_delimiter="__")

    provider: Literal["local", "openai", "ensemble"] = Field(
        default="local", description="Who labels items: the offline local model (default), `llm`, or `ensemble`"
    )
    llm: LLMProviderConfig = Field(default_factory=LLMProviderConfig, description="The language-model provider")
    llm_extra: tuple[LLMProviderConfig, ...] = Field(
        default=(), description="More language-model providers, for ensembles (each with its own `name`)"
    )
    ensemble: tuple[str, ...] = Field(
        default=("openai", "local"), description="Provider names in the ensemble: `local`, `llm.name`, `llm_extra`"
    )
    llm_projects: dict[str, ProjectLLMConfig] = Field(
        default_factory=dict,
        description="Per-project overrides: model, few-shot count, daily budget, and an endpoint of the project's "
        "own (`base_url`, `api_key`)",
    )
    review_api_url: str | None = Field(
        default=None,
        description="The review API's base URL (`http://review-api:8000`): images of boxes items uploaded as bytes "
        "are fetched from it for vision models",
    )
    review_api_key: SecretStr | None = Field(default=None, description="Bearer token for the review API, if it asks")
    image_max_bytes: int = Field(default=20_000_000, ge=1, description="Larger images go to a person unlabeled")
    llm_budget_usd_per_day: float | None = Field(
        default=None, ge=0, description="Default daily LLM budget per project; items wait when it is spent"
    )
    llm_workers: int = Field(default=16, ge=1, description="Items labeled at once by remote providers")
    llm_job_lease_s: float = Field(default=600.0, gt=0, description="A claimed item is retried after this long")
    llm_job_max_rounds: int = Field(
        default=5, ge=1, description="Rounds of (bounded) calls before an item goes to a person unscored"
    )
    llm_job_backoff_s: float = Field(default=5.0, ge=0, description="First wait between rounds; it doubles")
    llm_job_backoff_max_s: float = Field(default=300.0, ge=0, description="Longest wait between rounds")
    llm_budget_recheck_s: float = Field(default=60.0, gt=0, description="How often waiting items look again")

    retrain_every_reviews: int = Field(
        default=50, ge=1, description="Retrain a project's model once this many new reviews have arrived"
    )
    retrain_growth: float = Field(
        default=0.25,
        ge=0,
        description="Also retrain once the new reviews reach this share of the examples the model was trained on"
        " (a young model is refitted often); 0 turns this off",
    )
    retrain_interval_s: float = Field(
        default=30.0, gt=0, description="Also retrain after this long, if at least one new review arrived"
    )
    retrain_check_s: float = Field(
        default=1.0, gt=0, le=60, description="How often the retraining schedule is checked"
    )
    retrain_on_review: bool = Field(
        default=True, description="Also check the schedule as soon as a review is stored, not only every tick"
    )
    score_waiting_items: bool = Field(
        default=False,
        description="Score items that went to review before the project had a model (cold start) as soon as one"
        " exists, unless reviewed first: the confident ones are auto-accepted and leave the queue",
    )
    min_train_examples: int = Field(
        default=20, ge=2, description="Reviewed items (with at least two distinct labels) before a first model"
    )
    classifier: Literal["svm", "logistic"] = Field(
        default="svm", description="The local model's classifier over TF-IDF features: svm or logistic"
    )
    max_features: int = Field(default=50_000, ge=100, description="TF-IDF vocabulary size (words and bigrams)")
    max_text_chars: int = Field(default=20_000, ge=100, description="Texts are cut to this length for the model")
    holdout_every: int = Field(
        default=5, ge=2, description="Every n-th reviewed item is held out to measure a version's accuracy"
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8001, ge=1, le=65535)

    @model_validator(mode="after")
    def _refuse_unusable_llm(self) -> Self:
        if self.provider == "local":
            return self
        llms = (self.llm, *self.llm_extra)
        if any(c.base_url is None and not c.api_key.get_secret_value() for c in llms):
            raise ValueError(
                "a language-model provider for OpenAI's own API needs an api_key (LABELGATE_LABELER_LLM__API_KEY)"
            )
        names = [c.name for c in llms]
        if len(set(names)) != len(names) or "local" in names:
            raise ValueError(f"language-model provider names must be unique and not 'local': {names}")
        if self.provider == "ensemble":
            unknown = [n for n in self.ensemble if n != "local" and n not in names]
            if unknown or len(self.ensemble) < 2:
                raise ValueError(f"an ensemble needs two or more known providers; unknown: {unknown}")
        return self
