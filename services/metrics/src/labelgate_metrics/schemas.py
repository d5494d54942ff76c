"""What the metrics read API returns: one project's business aggregates."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Public(BaseModel):
    model_config = ConfigDict(frozen=True)


class BucketPublic(_Public):
    le: float = Field(description="Upper bound of the bucket, in seconds")
    count: int = Field(description="Observations at or below the bound (cumulative, as in Prometheus)")


class LatencyPublic(_Public):
    count: int
    sum_seconds: float
    mean_seconds: float | None
    p50_seconds: float | None = Field(description="Estimated from the buckets, as histogram_quantile does")
    p90_seconds: float | None
    buckets: list[BucketPublic] = Field(description="Finite buckets only; ``count`` is the +Inf bucket")


class AgreementPublic(_Public):
    cohen_kappa: float | None = Field(
        description="AI proposal vs human review; null with fewer than 2 ratings, 1.0 when AI and humans "
        "used one and the same class for every rating"
    )
    kappa_ratings: int = Field(description="(AI, human) ratings behind the kappa")
    reviewed_items: int
    audited_items: int = Field(description="Reviewed items that the router sent to review as a random audit")
    audit_accuracy: float | None = Field(
        description="Share of audited items where the human's labels equal the AI's; null with no audit"
    )


class ProjectMetricsPublic(_Public):
    project_id: str
    items_submitted: int
    proposals: dict[str, int] = Field(description="Label proposals by model")
    cost_usd: dict[str, float] = Field(description="Labeler cost by model")
    cost_usd_total: float
    cost_usd_per_final_label: float | None
    decisions: dict[str, int] = Field(description="Routing decisions by outcome, each decision once")
    decision_reasons: dict[str, dict[str, int]] = Field(
        description="Outcome → reason → decisions; a decision with several reasons counts under each"
    )
    reviews: dict[str, int] = Field(description="Human reviews by action")
    labels_finalized: dict[str, int] = Field(description="Final labels by source")
    queue_items: int = Field(description="Items waiting for a human review")
    decision_latency: LatencyPublic = Field(description="Item submitted → routing decision")
    review_latency: LatencyPublic = Field(description="Routing decision (queued) → human review")
    agreement: AgreementPublic
    model_version: int | None
    guideline_version: int | None
