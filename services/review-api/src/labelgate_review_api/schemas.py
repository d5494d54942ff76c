"""What the REST API reads and writes: ``…Create``/``…Update`` bodies that refuse unknown fields, and
``…Public`` views. None of them is a storage document."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from labelgate_core.events import DecisionOutcome, FinalSource, ReviewAction, RoutingReason, TaskType

PROJECT_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"

Probability = Annotated[float, Field(ge=0.0, le=1.0)]
LeaseSeconds = Annotated[int, Field(ge=1, le=3600, description="Seconds the lease lasts (1..3600)")]


class Input(BaseModel):
    """A request body: unknown fields are an error, never silently dropped."""

    model_config = ConfigDict(extra="forbid")


class Public(BaseModel):
    model_config = ConfigDict(extra="ignore")


# -- projects ------------------------------------------------------------------------------------------------


class LabelCreate(Input):
    name: Annotated[str, Field(min_length=1, max_length=200)]
    description: Annotated[str, Field(max_length=5000)] = ""


class TaskSpecCreate(Input):
    type: TaskType = TaskType.classification
    labels: Annotated[list[LabelCreate], Field(min_length=1, max_length=500)]
    subjective: bool = Field(default=False, description="Subjective tasks always go to a human")

    @field_validator("labels")
    @classmethod
    def _unique_names(cls, labels: list[LabelCreate]) -> list[LabelCreate]:
        seen: set[str] = set()
        for label in labels:
            if label.name in seen:
                raise ValueError(f"label '{label.name}' is defined more than once")
            seen.add(label.name)
        return labels


TargetPrecision = Annotated[
    float | None,
    Field(
        gt=0.0,
        le=1.0,
        description="Precision the auto-accepted labels must reach (lower confidence bound). When set, it replaces"
        " `threshold`: the router derives the threshold from reviewed outcomes, and auto-accepts nothing until"
        " enough of them show the target is reached",
    ),
]


class RoutingCreate(Input):
    threshold: Probability = Field(default=0.9, description="Calibrated confidence needed to auto-accept")
    audit_rate: Probability = Field(default=0.05, description="Share of would-be auto-accepts sent to review")
    target_precision: TargetPrecision = None


class ProjectCreate(Input):
    id: Annotated[str, Field(pattern=PROJECT_ID_PATTERN, description="A slug: lowercase letters, digits, - and _")]
    name: Annotated[str, Field(min_length=1, max_length=200)]
    task: TaskSpecCreate
    guidelines: Annotated[str, Field(max_length=200_000)] = ""
    routing: RoutingCreate = Field(default_factory=RoutingCreate)


class GuidelinesUpdate(Input):
    text: Annotated[str, Field(max_length=200_000)]


class RoutingUpdate(Input):
    """Only the fields given change; the new values apply to items submitted afterwards. An explicit null
    ``target_precision`` goes back to the fixed threshold."""

    threshold: Probability | None = None
    audit_rate: Probability | None = None
    target_precision: TargetPrecision = None


class LabelPublic(Public):
    name: str
    description: str = ""


class TaskSpecPublic(Public):
    type: TaskType
    labels: list[LabelPublic]
    subjective: bool


class RoutingPublic(Public):
    threshold: float
    audit_rate: float
    target_precision: float | None = None


class ProjectPublic(Public):
    id: str
    name: str
    task: TaskSpecPublic
    guidelines: str
    guideline_version: int
    routing: RoutingPublic
    created_at: datetime
    updated_at: datetime


# -- items ---------------------------------------------------------------------------------------------------


class ItemState(StrEnum):
    submitted = "submitted"
    queued = "queued"
    final = "final"


class ItemCreate(Input):
    text: Annotated[str, Field(max_length=1_000_000)]
    idempotency_key: Annotated[
        str | None,
        Field(
            min_length=1,
            max_length=200,
            description="Makes retries safe: a key already submitted to the project returns the existing item."
            " Without a key the server makes one up, and a retried request creates the item again.",
        ),
    ] = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("text")
    @classmethod
    def _not_blank(cls, text: str) -> str:
        if not text.strip():
            raise ValueError("text is empty")
        return text


class ItemsSubmit(Input):
    items: Annotated[list[ItemCreate], Field(min_length=1)]


class SubmittedItem(Public):
    item_id: str
    idempotency_key: str
    created: bool = Field(description="False when the key was already known (a retry or a duplicate)")


class SubmitResult(Public):
    accepted: int = Field(description="Items created by this request")
    duplicates: int = Field(description="Items of the request that already existed or repeated a key")
    items: list[SubmittedItem] = Field(description="One entry per submitted item, in the request's order")


class ProposalPublic(Public):
    model_id: str
    model_version: int
    labels: list[str]
    confidence: float | None = None
    scores: dict[str, float] = Field(default_factory=dict)


class DecisionPublic(Public):
    outcome: DecisionOutcome
    reasons: list[RoutingReason]
    proposal: ProposalPublic
    decided_at: datetime
    calibrated_confidence: float | None = Field(
        default=None, description="The proposal's confidence as calibrated on the project's reviewed items"
    )
    calibration_version: int | None = None
    threshold: float | None = Field(default=None, description="The threshold the calibrated confidence was held to")


class ReviewPublic(Public):
    review_id: str
    reviewer_id: str
    action: ReviewAction
    labels: list[str]
    created_at: datetime
    duration_s: float | None = None


class FinalPublic(Public):
    labels: list[str]
    source: FinalSource
    finalized_at: datetime


class ItemPublic(Public):
    item_id: str
    project_id: str
    text: str
    metadata: dict[str, Any]
    idempotency_key: str
    state: ItemState
    guideline_version: int
    submitted_at: datetime
    decision: DecisionPublic | None = None
    reviews: list[ReviewPublic] = Field(default_factory=list)
    final: FinalPublic | None = None


class ItemPage(Public):
    items: list[ItemPublic]
    next_after: str | None = Field(description="Pass as `after` to read the next page; null on the last page")


class FinalBySource(Public):
    auto: int
    review: int


class ProjectStats(Public):
    items: int
    submitted: int
    queued: int
    in_review: int = Field(description="Tasks leased by a reviewer right now")
    final: int
    final_by_source: FinalBySource
    reviews: int
    queue_depth: int = Field(description="Tasks not yet reviewed, leased ones included")


# -- the review queue ----------------------------------------------------------------------------------------


class LeaseCreate(Input):
    reviewer_id: Annotated[str, Field(min_length=1, max_length=200)]
    lease_seconds: LeaseSeconds | None = None


class LeasedTask(Public):
    task_id: str
    project_id: str
    item_id: str
    text: str
    metadata: dict[str, Any]
    task: TaskSpecPublic
    guideline_version: int
    proposal: ProposalPublic | None = None
    reasons: list[RoutingReason]
    lease_token: str
    lease_expires_at: datetime


class HeartbeatCreate(Input):
    lease_token: Annotated[str, Field(min_length=1, max_length=200)]
    lease_seconds: LeaseSeconds | None = None


class ReleaseCreate(Input):
    lease_token: Annotated[str, Field(min_length=1, max_length=200)]


class LeasePublic(Public):
    task_id: str
    lease_token: str
    lease_expires_at: datetime


class ReviewCreate(Input):
    lease_token: Annotated[str, Field(min_length=1, max_length=200)]
    reviewer_id: Annotated[str, Field(min_length=1, max_length=200)]
    labels: Annotated[list[str], Field(max_length=500)]
    duration_s: Annotated[float | None, Field(ge=0.0, description="Seconds the reviewer spent")] = None


class ReviewResult(Public):
    review_id: str
    task_id: str
    item_id: str
    action: ReviewAction
    labels: list[str]


# -- export and errors ---------------------------------------------------------------------------------------


class ExportLine(Public):
    item_id: str
    idempotency_key: str
    text: str
    labels: list[str]
    source: FinalSource
    guideline_version: int
    metadata: dict[str, Any]
    finalized_at: datetime


class ErrorDetail(Public):
    code: str
    message: str
    details: Any = None


class ErrorBody(Public):
    error: ErrorDetail
