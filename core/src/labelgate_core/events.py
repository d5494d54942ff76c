"""Labelgate's events: one frozen, versioned pydantic model per topic, all sharing one envelope."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from uuid6 import uuid7


def new_id() -> str:
    """A UUIDv7: time-ordered, so ids sort by creation and index well."""
    return str(uuid7())


def utcnow() -> datetime:
    return datetime.now(UTC)


class Frozen(BaseModel):
    """Value objects inside events: immutable, and tolerant of fields added by newer producers."""

    model_config = ConfigDict(frozen=True, extra="ignore")


class TaskType(StrEnum):
    classification = "classification"
    multi_label = "multi_label"
    entities = "entities"
    boxes = "boxes"


class LabelDef(Frozen):
    name: Annotated[str, Field(min_length=1, max_length=200)]
    description: str = ""


class TaskSpec(Frozen):
    """What is to be labeled: carried on every item so that downstream services need no lookup."""

    type: TaskType = TaskType.classification
    labels: tuple[LabelDef, ...]
    subjective: bool = False

    @property
    def label_names(self) -> tuple[str, ...]:
        return tuple(label.name for label in self.labels)


class RoutingPolicy(Frozen):
    """The project's routing settings at the time the item was submitted."""

    threshold: Annotated[float, Field(ge=0.0, le=1.0)] = 0.9
    audit_rate: Annotated[float, Field(ge=0.0, le=1.0)] = 0.05
    target_precision: Annotated[float | None, Field(gt=0.0, le=1.0)] = None
    """When set, it replaces ``threshold``: the router derives the threshold that reaches this precision (lower
    confidence bound) from the project's reviewed outcomes, and auto-accepts nothing until one does."""
    exclude_unreliable_labels: bool = False
    """When set, a proposed label the AI is consistently wrong on (per the project's reviewed outcomes: enough
    support, accuracy's upper confidence bound below the router's bar) always goes to review."""


class Span(Frozen):
    """An entity mention: characters ``[start, end)`` of the item's text, with its type."""

    start: Annotated[int, Field(ge=0)]
    end: Annotated[int, Field(gt=0)]
    label: Annotated[str, Field(min_length=1, max_length=200)]
    text: str = ""
    """The covered text, ``item.text[start:end]``, for readers without the item at hand."""
    confidence: Annotated[float | None, Field(ge=0.0, le=1.0)] = None

    @model_validator(mode="after")
    def _not_empty(self) -> Span:
        if self.end <= self.start:
            raise ValueError(f"span end ({self.end}) must be after its start ({self.start})")
        return self


class Box(Frozen):
    """A bounding box in pixels of the item's image: top-left corner, width and height."""

    label: Annotated[str, Field(min_length=1, max_length=200)]
    x: Annotated[float, Field(ge=0.0)]
    y: Annotated[float, Field(ge=0.0)]
    width: Annotated[float, Field(gt=0.0)]
    height: Annotated[float, Field(gt=0.0)]
    confidence: Annotated[float | None, Field(ge=0.0, le=1.0)] = None


class ImageRef(Frozen):
    """The image a boxes item is about: by URL, or by the id of bytes stored by the review API."""

    url: str | None = None
    blob_id: str | None = None
    width: Annotated[int, Field(gt=0)]
    height: Annotated[int, Field(gt=0)]
    media_type: str = "image/png"


class DecisionOutcome(StrEnum):
    auto_accepted = "auto_accepted"
    needs_review = "needs_review"


class RoutingReason(StrEnum):
    confident = "confident"
    no_confidence = "no_confidence"
    low_confidence = "low_confidence"
    audit = "audit"
    subjective = "subjective"
    disagreement = "disagreement"
    gold = "gold"
    guideline_change = "guideline_change"
    invalid_output = "invalid_output"
    label_issue = "label_issue"
    unreliable_label = "unreliable_label"
    """The proposed label is one the AI is consistently wrong on (``RoutingPolicy.exclude_unreliable_labels``)."""


class FinalSource(StrEnum):
    auto = "auto"
    review = "review"


class ReviewAction(StrEnum):
    confirm = "confirm"
    correct = "correct"


class Proposal(Frozen):
    """One model's label for an item, with its confidence (None when the model could not score it)."""

    model_id: str
    model_version: int
    labels: tuple[str, ...]
    """Classification: the chosen label(s). Entities and boxes: the distinct labels of ``spans``/``boxes``."""
    confidence: float | None = None
    scores: dict[str, float] = Field(default_factory=dict)
    spans: tuple[Span, ...] = ()
    """Entities: the proposed mentions, each with its own confidence where the provider gives one."""
    boxes: tuple[Box, ...] = ()
    """Boxes: the proposed boxes, each with its own confidence where the provider gives one."""
    latency_ms: float = 0.0
    cost_usd: float = 0.0
    method: str | None = None
    """How ``confidence`` was obtained: ``logprobs``, ``self_consistency``, ``verbalized``, ``ensemble``,
    ``local_model``; None when unknown (older producers) or not scored."""
    guideline_version: int | None = None
    """The guideline version the provider was actually given (it may lag the item's own)."""
    invalid: bool = False
    """The provider answered, but not with a usable label (unparseable, outside the schema, failed validation).
    Such a proposal is never auto-accepted."""
    error: str | None = None
    """Why the proposal is invalid or unscored, for reviewers and operators."""
    agreement: float | None = None
    """Ensembles: share of members that proposed the chosen labels (1.0 = unanimous)."""
    input_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    attempts: int = 0
    """Provider calls made for this proposal (retries included; 0 for an in-process model or a cache hit)."""
    leakage: Literal["exact", "near"] | None = None
    """The item is an exact or near duplicate of one of the provider's few-shot examples or training items: a
    memorised answer, so the item stays out of calibration and gold sets."""


class Event(BaseModel):
    """The envelope every event carries. Subclasses set ``event_type`` and ``topic``."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    topic: ClassVar[str]

    event_id: str = Field(default_factory=new_id)
    event_type: str
    schema_version: int = 1
    occurred_at: datetime = Field(default_factory=utcnow)
    producer: str
    project_id: str
    item_id: str
    causation_id: str | None = None
    trace_id: str = Field(default_factory=new_id)

    @property
    def key(self) -> str:
        """The partition key: one item's events stay in order."""
        return self.item_id

    def caused(self) -> dict[str, Any]:
        """Envelope fields for an event this one causes: same project, item and trace."""
        return {
            "project_id": self.project_id,
            "item_id": self.item_id,
            "causation_id": self.event_id,
            "trace_id": self.trace_id,
        }


class ItemSubmitted(Event):
    topic: ClassVar[str] = "labelgate.item.submitted.v1"
    event_type: Literal["item.submitted"] = "item.submitted"
    text: str
    metadata: dict[str, Any] = Field(default_factory=dict)
    task: TaskSpec
    routing: RoutingPolicy
    guideline_version: int
    image: ImageRef | None = None
    """Boxes tasks: the image to draw boxes on (``text`` is then a caption or instructions, possibly empty)."""
    gold: bool = False
    """A gold item: its known answer stays in the review API; it always goes to a reviewer, whose answer is
    scored against it."""


class LabelScored(Event):
    topic: ClassVar[str] = "labelgate.label.scored.v1"
    event_type: Literal["label.scored"] = "label.scored"
    proposal: Proposal
    task: TaskSpec
    routing: RoutingPolicy
    guideline_version: int
    submitted_at: datetime
    members: tuple[Proposal, ...] = ()
    """Ensembles: every member's own proposal; ``proposal`` is their combination."""
    agreement: float | None = None
    """Ensembles: share of members that proposed the combined labels."""
    gold: bool = False
    """Copied from the item: a gold item is never auto-accepted."""


class DecisionMade(Event):
    topic: ClassVar[str] = "labelgate.decision.made.v1"
    event_type: Literal["decision.made"] = "decision.made"
    outcome: DecisionOutcome
    reasons: tuple[RoutingReason, ...]
    proposal: Proposal
    guideline_version: int
    submitted_at: datetime
    calibrated_confidence: float | None = None
    """The proposal's confidence mapped to P(correct) by the project's calibration (the raw confidence while
    none is fitted); None when the proposal is unscored or older producers."""
    calibration_version: int | None = None
    """Version of the project's calibration that was applied; None when none had been fitted yet."""
    threshold: float | None = None
    """The calibrated-confidence threshold the decision was measured against; None when no threshold applied
    (unscored proposals, or a target precision not yet attainable)."""


class ReviewSubmitted(Event):
    topic: ClassVar[str] = "labelgate.review.submitted.v1"
    event_type: Literal["review.submitted"] = "review.submitted"
    review_id: str
    reviewer_id: str
    action: ReviewAction
    labels: tuple[str, ...]
    ai_labels: tuple[str, ...]
    ai_confidence: float | None = None
    spans: tuple[Span, ...] = ()
    ai_spans: tuple[Span, ...] = ()
    boxes: tuple[Box, ...] = ()
    ai_boxes: tuple[Box, ...] = ()
    decision_reasons: tuple[RoutingReason, ...]
    text: str
    task: TaskSpec
    guideline_version: int
    duration_s: float | None = None
    queued_at: datetime
    gold: bool = False
    """The review of a gold item (a check of the reviewer): not training data."""


class LabelFinalized(Event):
    topic: ClassVar[str] = "labelgate.label.finalized.v1"
    event_type: Literal["label.finalized"] = "label.finalized"
    labels: tuple[str, ...]
    spans: tuple[Span, ...] = ()
    boxes: tuple[Box, ...] = ()
    source: FinalSource
    guideline_version: int
    model_id: str | None = None
    model_version: int | None = None
    confidence: float | None = None
    submitted_at: datetime
    gold: bool = False
    """A gold item: ``labels`` is its known answer, whatever its reviewers said."""


class GuidelineChanged(Event):
    """A project's guidelines got a new version. ``item_id`` is the project id: these events are per project."""

    topic: ClassVar[str] = "labelgate.guideline.changed.v1"
    event_type: Literal["guideline.changed"] = "guideline.changed"
    version: int
    text: str
    task: TaskSpec
    routing: RoutingPolicy

    @property
    def key(self) -> str:
        return self.project_id


class ModelUpdated(Event):
    """The labeler trained a new model version for a project. ``item_id`` is the project id."""

    topic: ClassVar[str] = "labelgate.model.updated.v1"
    event_type: Literal["model.updated"] = "model.updated"
    model_id: str
    model_version: int
    trained_on: int
    holdout_accuracy: float | None = None
    train_seconds: float

    @property
    def key(self) -> str:
        return self.project_id


EVENT_TYPES: tuple[type[Event], ...] = (
    ItemSubmitted,
    LabelScored,
    DecisionMade,
    ReviewSubmitted,
    LabelFinalized,
    GuidelineChanged,
    ModelUpdated,
)
