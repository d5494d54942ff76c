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
ConsensusMethod = Literal["majority", "dawid_skene"]
"""How an overlapped task's answers become one label: majority vote, or Dawid-Skene (reviewers weighed by
their estimated accuracy)."""
ExportFormat = Literal["jsonl", "hf", "openai", "conll", "coco"]
"""``jsonl``: Labelgate's own lines (``FinalLabel``); ``hf``: Hugging Face datasets-style lines; ``openai``: chat
fine-tuning lines; ``conll``: entities as token/BIO-tag lines; ``coco``: boxes as one COCO JSON document."""
RequeueScope = Literal["none", "all"]


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
    """How the router treats the project's items. ``overlap_rate`` of the review tasks are answered by
    ``overlap_k`` different reviewers, whose ``consensus`` is the final label; ``exclude_unreliable_labels``
    sends every proposal of a label the AI is consistently wrong on to review."""

    threshold: float = 0.9
    audit_rate: float = 0.05
    target_precision: float | None = None
    exclude_unreliable_labels: bool = False
    overlap_rate: float = 0.0
    overlap_k: int = 2
    consensus: ConsensusMethod = "majority"


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


class GuidelinesResult(Project):
    """The project after a guideline change, and how many final items it sent back to review."""

    requeued: int = 0


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


class Gold(Model):
    """A gold item's known answer: never shown to reviewers nor sent to the labeler; reviewers' answers are
    scored against it and it becomes the item's final label."""

    labels: list[str]


class ItemIn(Model):
    """An item to submit. Give an ``idempotency_key`` to make resubmission safe; the client fills one in
    when it is missing, so its own retries never create an item twice. The items of a boxes project carry an
    ``image`` (their ``text`` may then be empty). ``gold`` makes it a gold item (classification and multi-label
    projects); ``required_skill`` leases it only to reviewers who declare that skill."""

    text: str = ""
    idempotency_key: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    image: ImageIn | None = None
    gold: Gold | None = None
    required_skill: str | None = None


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


class Consensus(Model):
    """How an overlapped item's answers became its final label. ``support``: with majority vote, the share of
    answers that gave the label; with Dawid-Skene, its posterior. ``tied``: the answers still tied after the
    extra reviewers, and a stable rule broke the tie."""

    method: ConsensusMethod
    support: float
    tied: bool
    answers: int


class Final(Model):
    labels: list[str]
    source: FinalSource
    finalized_at: datetime
    spans: list[Span] = Field(default_factory=list)
    boxes: list[Box] = Field(default_factory=list)
    guideline_version: int | None = None
    consensus: Consensus | None = None


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
    earlier_finals: list[Final] = Field(default_factory=list)
    """Final labels the item had before a re-review replaced them, oldest first."""
    gold: bool = False
    """A gold item (its known answer is not shown)."""
    gold_leaked: bool = False
    """A gold item whose proposal duplicates a training item: reviewed as usual, left out of gold accuracy."""
    required_skill: str | None = None


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
    required_skill: str | None = None
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
    gold: bool = False
    """A gold item: its final label is the known answer (the training formats of the export leave it out)."""
    data_owner: str | None = None
    license: str | None = None


class Reviewer(Model):
    """A reviewer's answers in a project and their accuracy on its gold items (``None`` without gold answers).
    ``gold_accuracy_lower_bound`` is a one-sided 95% Wilson bound: 3 right of 3 is not yet known good."""

    reviewer_id: str
    reviews: int
    gold_reviews: int
    gold_correct: int
    gold_accuracy: float | None = None
    gold_accuracy_lower_bound: float | None = None
    leaked_gold_items: int = 0
    """Gold items the reviewer answered that are left out of the accuracy: their proposal leaked a training item."""


class LabelAgreement(Model):
    """Agreement on one label over overlapped items: of the reviewer pairs where one used the label, the share
    where the other did too; ``ambiguous`` when enough answers use it and the agreement is low."""

    label: str
    support: int
    specific_agreement: float | None = None
    ambiguous: bool = False


class Agreement(Model):
    """Human-vs-human agreement on a project's overlapped items; a coefficient is ``None`` when undefined (too
    few items, or no variation). ``labels`` come lowest agreement first."""

    overlapped_items: int
    answers: int
    cohen_kappa: float | None = None
    fleiss_kappa: float | None = None
    krippendorff_alpha: float | None = None
    labels: list[LabelAgreement] = Field(default_factory=list)
    ambiguous_labels: list[str] = Field(default_factory=list)
    by_guideline_version: list[VersionAgreement] = Field(default_factory=list)
    """The same figures per guideline version the items were reviewed under, with human-vs-AI agreement."""
    reviewers_vs_ai: list[ReviewerAiAgreement] = Field(default_factory=list)
    """Per reviewer, their answers against the AI's proposed labels (a label set agrees only when equal)."""


class AiAgreement(Model):
    """Human-vs-AI agreement: answers against the labels the AI proposed for the same items; ``items`` counts the
    answers compared, ``None`` when undefined."""

    items: int
    raw_agreement: float | None = None
    cohen_kappa: float | None = None


class ReviewerAiAgreement(AiAgreement):
    reviewer_id: str


class VersionAgreement(Model):
    """Agreement on the items reviewed under one guideline version."""

    guideline_version: int
    overlapped_items: int
    answers: int
    cohen_kappa: float | None = None
    fleiss_kappa: float | None = None
    krippendorff_alpha: float | None = None
    labels: list[LabelAgreement] = Field(default_factory=list)
    ambiguous_labels: list[str] = Field(default_factory=list)
    human_vs_ai: AiAgreement
