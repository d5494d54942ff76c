"""How one language-model provider is reached, limited, priced and asked for confidence."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class StructuredOutput(StrEnum):
    """How the endpoint is asked for JSON that fits the label schema.

    ``json_schema``: ``response_format={"type": "json_schema", ...}`` (OpenAI, vLLM, llama.cpp's C++ server).
    ``json_object_schema``: ``{"type": "json_object", "schema": ...}`` (llama-cpp-python's server).
    ``json``: no constraint on the wire; the prompt asks for JSON and the answer is validated.
    ``auto``: try them in that order, keeping the first one the endpoint accepts."""

    auto = "auto"
    json_schema = "json_schema"
    json_object_schema = "json_object_schema"
    json = "json"


class ConfidenceMethod(StrEnum):
    """Where a proposal's confidence comes from. ``auto``: the label tokens' log-probabilities when the
    endpoint returns them, else agreement of ``samples`` sampled answers when ``samples`` > 1, else the
    model's own stated confidence (verbalized, the least trustworthy)."""

    auto = "auto"
    logprobs = "logprobs"
    self_consistency = "self_consistency"
    verbalized = "verbalized"


class Price(BaseModel):
    """USD per million tokens. ``cached_input`` is what a prompt-cache hit costs (often a fraction of input)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    input: Annotated[float, Field(ge=0)] = 0.0
    cached_input: Annotated[float, Field(ge=0)] | None = None
    output: Annotated[float, Field(ge=0)] = 0.0


class LLMProviderConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = "openai"
    """Names the provider in metrics, the response cache and ensembles."""
    base_url: str | None = None
    """Any OpenAI-compatible endpoint (``http://host:8000/v1``); None means OpenAI's own."""
    api_key: SecretStr = SecretStr("")
    model: str = "gpt-4o-mini"
    structured_output: StructuredOutput = StructuredOutput.auto
    confidence: ConfidenceMethod = ConfidenceMethod.auto
    top_logprobs: Annotated[int, Field(ge=1, le=20)] = 10
    samples: Annotated[int, Field(ge=1, le=20)] = 1
    """Answers drawn per item for self-consistency (only when log-probabilities are not available)."""
    sample_temperature: Annotated[float, Field(ge=0, le=2)] = 0.8
    temperature: Annotated[float, Field(ge=0, le=2)] = 0.0
    max_output_tokens: Annotated[int, Field(ge=1)] = 200
    few_shot: Annotated[int, Field(ge=0, le=50)] = 5
    """Reviewed items shown as examples, most similar to the item first."""
    timeout_s: Annotated[float, Field(gt=0)] = 60.0
    max_attempts: Annotated[int, Field(ge=1, le=20)] = 4
    """Calls per answer, first try included; 429, 5xx, timeouts and connection errors are retried."""
    backoff_initial_s: Annotated[float, Field(ge=0)] = 0.5
    backoff_max_s: Annotated[float, Field(ge=0)] = 30.0
    max_retry_after_s: Annotated[float, Field(ge=0)] = 120.0
    """A server's Retry-After above this is capped (a misbehaving proxy must not park a worker for hours)."""
    concurrency: Annotated[int, Field(ge=1)] = 8
    requests_per_minute: Annotated[float, Field(gt=0)] | None = None
    tokens_per_minute: Annotated[float, Field(gt=0)] | None = None
    price: Price = Field(default_factory=Price)
    cache_responses: bool = True


class ProjectLLMConfig(BaseModel):
    """Per-project overrides, keyed by project id in the labeler's settings.

    A project can have an endpoint of its own (``base_url``, ``api_key``: its own account, its own vLLM
    server), used with ``model`` for its items. The key is a ``SecretStr``: it is never logged nor put on an
    event, and it only leaves the labeler in the ``Authorization`` header of that endpoint's calls. The override
    applies to every language-model provider the labeler runs (each member of an ensemble calls it)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str | None = None
    base_url: str | None = None
    """The project's own OpenAI-compatible endpoint; None keeps the provider's."""
    api_key: SecretStr | None = None
    """The key for the project's endpoint (with ``base_url``), or for the provider's endpoint on the project's
    own account (without); None keeps the provider's key."""

    @property
    def own_endpoint(self) -> bool:
        return self.base_url is not None or self.api_key is not None
    budget_usd_per_day: Annotated[float, Field(ge=0)] | None = None
    few_shot: Annotated[int, Field(ge=0, le=50)] | None = None
