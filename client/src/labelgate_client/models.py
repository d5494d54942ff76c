"""What the Labelgate REST API returns, as the client sees it. Models ignore fields they do not know, so a newer
server does not break an older client."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

TaskType = Literal["classification", "multi_label", "entities", "boxes"]
ItemState = Literal["submitted", "queued", "final"]
FinalSource = Literal["auto", "review"]
ReviewAction = Literal["confirm", "correct"]


class Model(BaseModel):
    model_config = ConfigDict(extra="ignore")


class LabelDef(Model):
    name: str
    description: str = ""


class TaskSpec(Model):
    type: TaskType = "classification"
    labels: list[LabelDef]
    subjective: bool = False

    @property
    def label_names(self) -> list[str]:
        return [label.name for label in self.labels]


class Routing(Model):
    threshold: float = 0.9
    audit_rate: float = 0.05
    target_precision: float | None = None


class Project(Model):
    id: str
    name: str
    task: TaskSpec
    guidelines: str
    guideline_version: int
    routing: Routing
    data_owner: str | None = None
    license: str | None = None
    created_at: datetime
    updated_at: datetime


class ImageIn(Model):
    """The image of a boxes item: a ``url`` with its ``width`` and ``height``, or uploaded bytes (``from_bytes``)."""

    url: str | None = None
    data_base64: str | None = None
    media_type: str | None = None
    width: int | None = None
    height: int | None = None

    @classmethod
    def from_bytes(
        cls, data: bytes, media_type: str, *, width: int | None = None, height: int | None = None
    ) -> ImageIn:
        """An upload; the server reads the size from the image (and checks ``width``/``height`` if given)."""
        encoded = base64.b64encode(data).decode("ascii")
        return cls(data_base64=encoded, media_type=media_type, width=width, height=height)


class ItemIn(Model):
    """An item to submit. Give an ``idempotency_key`` to make resubmission safe; the client fills one in
    when it is missing, so its own retries never create an item twice. The items of a boxes project carry an
    ``image`` (their ``text`` may then be empty)."""

    text: str = ""
    idempotency_key: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    image: ImageIn | None = None


class SubmittedItem(Model):
    item_id: str
    idempotency_key: str
    created: bool


class SubmitResult(Model):
    accepted: int
    duplicates: int
    items: list[SubmittedItem]


class Span(Model):
    """An entity mention: characters ``[start, end)`` of the item's text, with its type."""

    start: int
    end: int
    label: str
    text: str = ""
    confidence: float | None = None


class Box(Model):
    """A bounding box in pixels of the item's image: top-left corner, width and height."""

    label: str
    x: float
    y: float
    width: float
    height: float
    confidence: float | None = None


class Image(Model):
    """An item's image; ``href`` is the API path that serves it (``LabelgateClient.image`` reads it)."""

    url: str | None = None
    blob_id: str | None = None
    width: int
    height: int
    media_type: str
    href: str


class Proposal(Model):
    model_id: str
    model_version: int
    labels: list[str]
    confidence: float | None = None
    scores: dict[str, float] = Field(default_factory=dict)
    spans: list[Span] = Field(default_factory=list)
    boxes: list[Box] = Field(default_factory=list)


class Decision(Model):
    outcome: str
    reasons: list[str]
    proposal: Proposal
    decided_at: datetime
    calibrated_confidence: float | None = None
    calibration_version: int | None = None
    threshold: float | None = None


class ReviewRecord(Model):
    review_id: str
    reviewer_id: str
    action: ReviewAction
    labels: list[str]
    created_at: datetime
    duration_s: float | None = None
    spans: list[Span] = Field(default_factory=list)
    boxes: list[Box] = Field(default_factory=list)


class Final(Model):
    labels: list[str]
    source: FinalSource
    finalized_at: datetime
    spans: list[Span] = Field(default_factory=list)
    boxes: list[Box] = Field(default_factory=list)


class Item(Model):
    item_id: str
    project_id: str
    text: str
    image: Image | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    idempotency_key: str
    state: ItemState
    guideline_version: int
    submitted_at: datetime
    decision: Decision | None = None
    reviews: list[ReviewRecord] = Field(default_factory=list)
    final: Final | None = None


class ItemPage(Model):
    items: list[Item]
    next_after: str | None = None


class FinalBySource(Model):
    auto: int
    review: int


class Stats(Model):
    items: int
    submitted: int
    queued: int
    in_review: int
    final: int
    final_by_source: FinalBySource
    reviews: int
    queue_depth: int


class Task(Model):
    """A review task leased to the caller: keep ``lease_token`` to heartbeat, release or review it."""

    task_id: str
    project_id: str
    item_id: str
    text: str
    image: Image | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    task: TaskSpec
    guideline_version: int
    proposal: Proposal | None = None
    reasons: list[str] = Field(default_factory=list)
    lease_token: str
    lease_expires_at: datetime


class Lease(Model):
    task_id: str
    lease_token: str
    lease_expires_at: datetime


class Review(Model):
    review_id: str
    task_id: str
    item_id: str
    action: ReviewAction
    labels: list[str]
    spans: list[Span] = Field(default_factory=list)
    boxes: list[Box] = Field(default_factory=list)


class FinalLabel(Model):
    item_id: str
    idempotency_key: str
    text: str
    image: Image | None = None
    labels: list[str]
    spans: list[Span] = Field(default_factory=list)
    boxes: list[Box] = Field(default_factory=list)
    source: FinalSource
    guideline_version: int
    metadata: dict[str, Any] = Field(default_factory=dict)
    finalized_at: datetime
