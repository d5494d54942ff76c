"""What the metrics read API returns: one project's business aggregates."""

from __future__ import annotations

from datetime import datetime

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
        description="Share of audited items where the human's labels equal the AI's (entities: the same spans;"
        " boxes: boxes matched one to one at IoU ≥ 0.5); null with no audit"
    )
    span_items: int = Field(default=0, description="Entities: reviewed items with an AI proposal")
    span_precision: float | None = Field(default=None, description="Entities: AI spans the reviewer kept")
    span_recall: float | None = Field(default=None, description="Entities: reviewer spans the AI had")
    span_f1: float | None = Field(
        default=None,
        description="Entities: micro F1 of AI vs human spans (exact start, end and label); null without spans",
    )
    box_items: int = Field(default=0, description="Boxes: reviewed items with an AI proposal")
    box_mean_iou: float | None = Field(
        default=None,
        description="Boxes: IoU of AI and human boxes matched one to one (same label), a missed or extra box"
        " counting 0; null without boxes",
    )


class ProjectMetricsPublic(_Public):
    project_id: str
    items_submitted: int
    proposals: dict[str, int] = Field(description="Label proposals by model")
    leaked_proposals: dict[str, int] = Field(
        default_factory=dict,
        description="Proposals for items duplicating the model's training items, by `exact` or `near`",
    )
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


class ModelVersionPublic(_Public):
    model_config = ConfigDict(frozen=True, protected_namespaces=(), extra="ignore")

    model_id: str
    model_version: int
    trained_on: int = Field(description="Reviewed items the version was trained on")
    holdout_accuracy: float | None = Field(
        description="Accuracy on held-out reviewed items; null when too few were held out"
    )
    train_seconds: float
    trained_at: datetime
