"""What the REST API reads and writes: ``…Create``/``…Update`` bodies that refuse unknown fields, and
``…Public`` views. None of them is a storage document."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

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


class ConsensusMethod(StrEnum):
    majority = "majority"
    dawid_skene = "dawid_skene"


OverlapRate = Annotated[
    float,
    Field(
        ge=0.0,
        le=1.0,
        description="Share of review tasks answered by `overlap_k` different reviewers, whose consensus is the"
        " final label and whose agreement is measured",
    ),
]
OverlapK = Annotated[int, Field(ge=2, le=10, description="Reviewers per overlapped task (2..10)")]
Consensus = Annotated[
    ConsensusMethod,
    Field(
        description="How overlapped answers become one label: `majority`, or `dawid_skene` (weighs reviewers by"
        " their estimated accuracy; majority until the project has enough overlapped answers)"
    ),
]


EXCLUDE_UNRELIABLE = (
    "Send every proposal of a label the AI is consistently wrong on (per reviewed items; see the router's"
    " systematic errors) to review, whatever its confidence"
)


class RoutingCreate(Input):
    threshold: Probability = Field(default=0.9, description="Calibrated confidence needed to auto-accept")
    audit_rate: Probability = Field(default=0.05, description="Share of would-be auto-accepts sent to review")
    target_precision: TargetPrecision = None
    exclude_unreliable_labels: bool = Field(default=False, description=EXCLUDE_UNRELIABLE)
    overlap_rate: OverlapRate = 0.0
    overlap_k: OverlapK = 2
    consensus: Consensus = ConsensusMethod.majority


DataOwner = Annotated[
    str | None,
    Field(min_length=1, max_length=500, description="Who owns the project's data; every export carries it"),
]
License = Annotated[
    str | None,
    Field(
        min_length=1,
        max_length=2000,
        description="The licence the data and its labels may be used under (an SPDX id such as `CC-BY-4.0`, or"
        " free text); every export carries it",
    ),
]


class ProjectCreate(Input):
    id: Annotated[str, Field(pattern=PROJECT_ID_PATTERN, description="A slug: lowercase letters, digits, - and _")]
    name: Annotated[str, Field(min_length=1, max_length=200)]
    task: TaskSpecCreate
    guidelines: Annotated[str, Field(max_length=200_000)] = ""
    routing: RoutingCreate = Field(default_factory=RoutingCreate)
    data_owner: DataOwner = None
    license: License = None


class ProjectUpdate(Input):
    """Only the fields given change; an explicit null clears ``data_owner`` or ``license``."""

    name: Annotated[str | None, Field(min_length=1, max_length=200)] = None
    data_owner: DataOwner = None
    license: License = None

    @field_validator("name")
    @classmethod
    def _name_not_null(cls, name: str | None) -> str:
        if name is None:
            raise ValueError("name cannot be null")
        return name


RequeueScope = Literal["none", "all"] | Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)]


class GuidelinesUpdate(Input):
    text: Annotated[str, Field(max_length=200_000)]
    requeue: RequeueScope = Field(
        default="none",
        description="Items finalized under an older guideline version to send back to review (reason"
        " `guideline_change`): `none`, `all`, or a list of label names (the items whose final labels include"
        " one of them)",
    )


class RoutingUpdate(Input):
    """Only the fields given change; the new values apply to items submitted afterwards. An explicit null
    ``target_precision`` goes back to the fixed threshold."""

    threshold: Probability | None = None
    audit_rate: Probability | None = None
    target_precision: TargetPrecision = None
    exclude_unreliable_labels: bool | None = Field(default=None, description=EXCLUDE_UNRELIABLE)
    overlap_rate: OverlapRate | None = None
    overlap_k: OverlapK | None = None
    consensus: Consensus | None = None


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
    exclude_unreliable_labels: bool = False
    overlap_rate: float = 0.0
    overlap_k: int = 2
    consensus: ConsensusMethod = ConsensusMethod.majority


class ProjectPublic(Public):
    id: str
    name: str
    task: TaskSpecPublic
    guidelines: str
    guideline_version: int
    routing: RoutingPublic
    data_owner: str | None = None
    license: str | None = None
    created_at: datetime
    updated_at: datetime


class GuidelinesResult(ProjectPublic):
    requeued: int = Field(default=0, description="Final items this change sent back to review")


# -- items ---------------------------------------------------------------------------------------------------


class ItemState(StrEnum):
    submitted = "submitted"
    queued = "queued"
    final = "final"


IMAGE_MEDIA_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp", "image/tiff")
"""The media types an uploaded image may have."""

Pixels = Annotated[int, Field(gt=0, le=100_000)]


class ImageCreate(Input):
    """The image of a ``boxes`` item: a URL (the reviewers' browsers and the labeler load it from there, so its
    size must be given), or the image itself, base64-encoded, which the review API stores and serves."""

    url: Annotated[
        str | None, Field(min_length=1, max_length=4096, description="An http(s) URL of the image")
    ] = None
    data_base64: Annotated[
        str | None, Field(min_length=1, description="The image's bytes, base64-encoded (standard alphabet)")
    ] = None
    media_type: Annotated[
        str | None,
        Field(description=f"Required with `data_base64`: one of {', '.join(IMAGE_MEDIA_TYPES)}"),
    ] = None
    width: Annotated[Pixels | None, Field(description="Pixels; required with `url`, checked against uploads")] = None
    height: Annotated[Pixels | None, Field(description="Pixels; required with `url`, checked against uploads")] = None

    @model_validator(mode="after")
    def _one_source(self) -> ImageCreate:
        if (self.url is None) == (self.data_base64 is None):
            raise ValueError("an image needs exactly one of `url` and `data_base64`")
        if self.url is not None:
            parts = urlsplit(self.url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError("`url` must be an absolute http(s) URL")
            if self.width is None or self.height is None:
                raise ValueError("an image given by `url` needs its `width` and `height` in pixels")
        elif self.media_type not in IMAGE_MEDIA_TYPES:
            raise ValueError(f"an uploaded image needs a `media_type` among {', '.join(IMAGE_MEDIA_TYPES)}")
        return self


Skill = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$", description="A skill name")]


class GoldCreate(Input):
    labels: Annotated[list[str], Field(max_length=500, description="The item's known labels")]


class ItemCreate(Input):
    # ``image`` comes before ``text`` so that the check of ``text`` can see it: an image item may have no text.
    image: ImageCreate | None = Field(
        default=None, description="Boxes projects: the image to draw boxes on (then `text` may be empty)"
    )
    text: Annotated[str, Field(max_length=1_000_000, validate_default=True)] = ""
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
    gold: GoldCreate | None = Field(
        default=None,
        description="Makes the item a gold item: its known answer, checked against the project's labels. The"
        " answer is never shown or sent to the labeler; the item goes to reviewers like any other, their answers"
        " are scored against it, and it becomes the item's final label",
    )
    required_skill: Skill | None = Field(
        default=None, description="Only reviewers who declare this skill when leasing get the item"
    )

    @field_validator("text")
    @classmethod
    def _not_blank(cls, text: str, info: ValidationInfo) -> str:
        # An image that failed its own checks is missing from ``info.data``: its error says enough.
        if not text.strip() and "image" in info.data and info.data["image"] is None:
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


class SpanPublic(Public):
    start: int = Field(description="Offset of the first character (Python string index of the item's text)")
    end: int = Field(description="Offset just after the last character")
    label: str
    text: str = Field(default="", description="The covered text")
    confidence: float | None = None


class BoxPublic(Public):
    label: str
    x: float = Field(description="Left edge, in pixels from the image's left")
    y: float = Field(description="Top edge, in pixels from the image's top")
    width: float
    height: float
    confidence: float | None = None


class ImagePublic(Public):
    url: str | None = Field(default=None, description="Where the image is, when it was given by URL")
    blob_id: str | None = Field(default=None, description="The stored upload's id (SHA-256 of its bytes)")
    width: int
    height: int
    media_type: str
    href: str = Field(description="This API's path that serves the image (or redirects to its URL)")


class ProposalPublic(Public):
    model_id: str
    model_version: int
    labels: list[str]
    confidence: float | None = None
    scores: dict[str, float] = Field(default_factory=dict)
    spans: list[SpanPublic] = Field(default_factory=list, description="Entities: the proposed spans")
    boxes: list[BoxPublic] = Field(default_factory=list, description="Boxes: the proposed boxes")


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
    spans: list[SpanPublic] = Field(default_factory=list)
    boxes: list[BoxPublic] = Field(default_factory=list)
    created_at: datetime
    duration_s: float | None = None


class FinalPublic(Public):
    labels: list[str]
    spans: list[SpanPublic] = Field(default_factory=list)
    boxes: list[BoxPublic] = Field(default_factory=list)
    source: FinalSource
    finalized_at: datetime
    guideline_version: int | None = Field(default=None, description="The guideline version it was made under")
    consensus: ConsensusPublic | None = Field(
        default=None, description="Overlapped items: how the reviewers' answers became this label"
    )


class ConsensusPublic(Public):
    method: ConsensusMethod
    support: float = Field(description="Majority: share of answers that gave the label; Dawid-Skene: posterior")
    tied: bool = Field(description="The answers still tied after the extra reviewers; a stable rule broke the tie")
    answers: int


class ItemPublic(Public):
    item_id: str
    project_id: str
    text: str
    image: ImagePublic | None = None
    metadata: dict[str, Any]
    idempotency_key: str
    state: ItemState
    guideline_version: int
    submitted_at: datetime
    decision: DecisionPublic | None = None
    reviews: list[ReviewPublic] = Field(default_factory=list)
    final: FinalPublic | None = None
    earlier_finals: list[FinalPublic] = Field(
        default_factory=list, description="Final labels this item had before a re-review replaced them, oldest first"
    )
    gold: bool = Field(default=False, description="A gold item (its known answer is not shown)")
    gold_leaked: bool = Field(
        default=False,
        description="A gold item whose proposal duplicates a training item (leakage): reviewed as usual, but left"
        " out of reviewers' gold accuracy",
    )
    required_skill: str | None = None


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
    skills: Annotated[
        list[Skill],
        Field(
            max_length=100,
            description="The reviewer's skills: tasks that require one are leased only to reviewers who have it."
            " Self-declared until reviewers authenticate and roles carry their skills",
        ),
    ] = Field(default_factory=list)


class LeasedTask(Public):
    task_id: str
    project_id: str
    item_id: str
    text: str
    image: ImagePublic | None = None
    metadata: dict[str, Any]
    task: TaskSpecPublic
    guideline_version: int
    proposal: ProposalPublic | None = None
    reasons: list[RoutingReason]
    required_skill: str | None = None
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


class SpanCreate(Input):
    start: Annotated[int, Field(ge=0, description="Offset of the first character (a Python string index)")]
    end: Annotated[int, Field(gt=0, description="Offset just after the last character")]
    label: Annotated[str, Field(min_length=1, max_length=200)]
    text: Annotated[
        str | None,
        Field(description="Optional: when given it must equal the item's text from `start` to `end`, which catches"
              " offsets counted another way (UTF-16 units, bytes)"),
    ] = None

    @model_validator(mode="after")
    def _not_empty(self) -> SpanCreate:
        if self.end <= self.start:
            raise ValueError(f"a span's end ({self.end}) must be after its start ({self.start})")
        return self


Coordinate = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]
Extent = Annotated[float, Field(gt=0.0, allow_inf_nan=False)]


class BoxCreate(Input):
    label: Annotated[str, Field(min_length=1, max_length=200)]
    x: Coordinate = Field(description="Left edge, in pixels from the image's left")
    y: Coordinate = Field(description="Top edge, in pixels from the image's top")
    width: Extent
    height: Extent


class ReviewCreate(Input):
    """The reviewer's answer. Classification tasks give ``labels``; entities tasks give ``spans`` and boxes tasks
    ``boxes`` (possibly empty: nothing to mark), and their labels are the distinct labels of those."""

    lease_token: Annotated[str, Field(min_length=1, max_length=200)]
    reviewer_id: Annotated[str, Field(min_length=1, max_length=200)]
    labels: Annotated[
        list[str] | None,
        Field(max_length=500, description="Classification and multi-label tasks: the labels that apply"),
    ] = None
    spans: Annotated[list[SpanCreate] | None, Field(max_length=10_000, description="Entities tasks")] = None
    boxes: Annotated[list[BoxCreate] | None, Field(max_length=10_000, description="Boxes tasks")] = None
    duration_s: Annotated[float | None, Field(ge=0.0, description="Seconds the reviewer spent")] = None


class ReviewResult(Public):
    review_id: str
    task_id: str
    item_id: str
    action: ReviewAction
    labels: list[str]
    spans: list[SpanPublic] = Field(default_factory=list)
    boxes: list[BoxPublic] = Field(default_factory=list)


class ReviewerPublic(Public):
    reviewer_id: str
    reviews: int = Field(description="Answers given (overlapped and gold tasks included)")
    gold_reviews: int = Field(description="Answers to gold items")
    gold_correct: int = Field(description="Answers to gold items that matched the known answer")
    gold_accuracy: float | None = Field(description="gold_correct / gold_reviews; null without gold answers")
    gold_accuracy_lower_bound: float | None = Field(
        description="One-sided 95% Wilson lower bound of the gold accuracy: 3 right of 3 is not yet known good"
    )
    leaked_gold_items: int = Field(
        default=0,
        description="Gold items this reviewer answered that are left out of the gold accuracy: their proposal was "
        "found to duplicate a training item (leakage), so they no longer measure anyone",
    )


class LabelAgreementPublic(Public):
    label: str
    support: int = Field(description="Answers using the label on overlapped items")
    specific_agreement: float | None = Field(
        description="Of the reviewer pairs on an item where one used the label, the share where the other did too"
    )
    ambiguous: bool = Field(description="Enough support and low agreement: its guideline is read differently")


class AgreementPublic(Public):
    """Human-vs-human agreement on overlapped items. Kappas and alpha compare whole answers (the set of labels a
    reviewer gave); null when undefined (too few items, or no variation)."""

    overlapped_items: int = Field(description="Overlapped rounds with at least two answers")
    answers: int
    cohen_kappa: float | None = Field(description="Rounds answered by exactly two reviewers: first vs second")
    fleiss_kappa: float | None = Field(description="Rounds with the most common number of answers")
    krippendorff_alpha: float | None = Field(description="Nominal alpha over every round, reviewers as coders")
    labels: list[LabelAgreementPublic] = Field(description="Per label, lowest agreement first")
    ambiguous_labels: list[str]
    by_guideline_version: list[VersionAgreementPublic] = Field(
        default_factory=list,
        description="The same human-vs-human figures per guideline version the items were reviewed under, with"
        " human-vs-AI agreement under that version; oldest version first",
    )
    reviewers_vs_ai: list[ReviewerAiAgreementPublic] = Field(
        default_factory=list,
        description="Per reviewer, agreement between their answers and the AI's proposed labels on the items they"
        " reviewed (classification and multi-label projects; an answer agrees when its label set is the same)",
    )


class AiAgreementPublic(Public):
    """Human-vs-AI agreement: reviewers' answers against the labels the AI proposed for the same items (answers to
    items without a proposed label are left out). Null when undefined (fewer than two answers, no variation)."""

    items: int = Field(description="Answers compared (one per reviewer, item and review round)")
    raw_agreement: float | None = Field(description="Share of the answers with exactly the proposed label set")
    cohen_kappa: float | None = Field(description="Cohen's kappa of the answers against the proposals")


class ReviewerAiAgreementPublic(AiAgreementPublic):
    reviewer_id: str


class VersionAgreementPublic(Public):
    """Agreement on the items reviewed under one guideline version."""

    guideline_version: int
    overlapped_items: int = Field(description="Overlapped rounds with at least two answers under this version")
    answers: int
    cohen_kappa: float | None = Field(description="Rounds answered by exactly two reviewers: first vs second")
    fleiss_kappa: float | None = Field(description="Rounds with the most common number of answers")
    krippendorff_alpha: float | None = Field(description="Nominal alpha over every round, reviewers as coders")
    labels: list[LabelAgreementPublic] = Field(description="Per label, lowest agreement first")
    ambiguous_labels: list[str]
    human_vs_ai: AiAgreementPublic = Field(description="Every answer under this version against the AI's proposal")


# -- export and errors ---------------------------------------------------------------------------------------


class ExportLine(Public):
    item_id: str
    idempotency_key: str
    text: str
    image: ImagePublic | None = None
    labels: list[str]
    spans: list[SpanPublic] = Field(default_factory=list)
    boxes: list[BoxPublic] = Field(default_factory=list)
    source: FinalSource
    guideline_version: int
    metadata: dict[str, Any]
    finalized_at: datetime
    gold: bool = Field(default=False, description="A gold item: its final is the known answer. The training"
                       " formats of the export leave gold items out")
    data_owner: str | None = Field(default=None, description="The project's data owner")
    license: str | None = Field(default=None, description="The project's licence")


class ErrorDetail(Public):
    code: str
    message: str
    details: Any = None


class ErrorBody(Public):
    error: ErrorDetail
