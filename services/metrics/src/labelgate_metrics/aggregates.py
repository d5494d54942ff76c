"""The metrics domain: what each event adds to a project's business aggregates, and the agreement math.

Everything here is pure. An event becomes a list of ``Change``s (a counter increment, a histogram
observation, a version that may only go up); the service writes them to its store in the handler's
transaction and applies the same list to the in-memory ``Aggregates`` once that transaction commits, so the
snapshot and the store never disagree and an event redelivered after its commit is never counted twice.

Agreement (Cohen's kappa, audit accuracy) is computed from one ``ReviewRecord`` per reviewed item, replaced
when the item is reviewed again. Kappa's degenerate cases are decided here:

- fewer than 2 (AI, human) ratings: kappa is undefined and not exposed (``None``);
- AI and humans used one and the same class for every rating: sklearn returns NaN (chance agreement is 1),
  but the two never disagreed, so we expose 1.0.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from sklearn.metrics import cohen_kappa_score

from labelgate_core.events import (
    DecisionMade,
    DecisionOutcome,
    Event,
    GuidelineChanged,
    ItemSubmitted,
    LabelFinalized,
    LabelScored,
    ModelUpdated,
    ReviewSubmitted,
    RoutingReason,
    TaskType,
)

from .annotation_agreement import AnnotationAgreement, AnnotationRecord
from .schemas import AgreementPublic, BucketPublic, LatencyPublic, ProjectMetricsPublic

# -- what is measured ------------------------------------------------------------------------------------


class Kind(StrEnum):
    counter = "counter"
    gauge = "gauge"
    histogram = "histogram"


@dataclass(frozen=True, slots=True)
class MetricDef:
    name: str
    kind: Kind
    help: str
    labels: tuple[str, ...] = ()
    """Label names besides ``project``, which every metric has."""
    buckets: tuple[float, ...] = ()
    exported: bool = True
    """False for aggregates that only the read API shows."""


# Seconds from submission to decision: an LLM call or a local model, plus queueing in the pipeline.
DECISION_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
# Seconds from entering the review queue to the review: minutes to days of human time.
REVIEW_LATENCY_BUCKETS = (
    10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 4 * 3600.0, 8 * 3600.0, 86400.0, 2 * 86400.0, 7 * 86400.0,
)

ITEMS_SUBMITTED = MetricDef(
    "labelgate_pipeline_items_submitted_total", Kind.counter, "Items submitted for labeling"
)
PROPOSALS = MetricDef(
    "labelgate_labeler_proposals_total", Kind.counter, "Label proposals scored by a model", ("model",)
)
LEAKED_PROPOSALS = MetricDef(
    "labelgate_labeler_leaked_proposals_total",
    Kind.counter,
    "Proposals for items that duplicate the model's training items or few-shot examples, by exact or near",
    ("kind",),
)
COST = MetricDef(
    "labelgate_labeler_cost_usd_total", Kind.counter, "Labeler cost of the proposals, in US dollars", ("model",)
)
DECISIONS = MetricDef(
    "labelgate_router_decisions_total",
    Kind.counter,
    "Routing decisions by outcome and reason (a decision with several reasons counts once per reason)",
    ("outcome", "reason"),
)
DECISION_OUTCOMES = MetricDef(
    "decision_outcomes", Kind.counter, "Routing decisions by outcome, each once", ("outcome",), exported=False
)
REVIEWS = MetricDef("labelgate_review_reviews_total", Kind.counter, "Human reviews by action", ("action",))
FINALIZED = MetricDef(
    "labelgate_pipeline_labels_finalized_total", Kind.counter, "Final labels by source", ("source",)
)
QUEUE = MetricDef("labelgate_review_queue_items", Kind.gauge, "Items waiting for a human review")
DECISION_LATENCY = MetricDef(
    "labelgate_pipeline_decision_latency_seconds",
    Kind.histogram,
    "Time from item submission to the routing decision",
    buckets=DECISION_LATENCY_BUCKETS,
)
REVIEW_LATENCY = MetricDef(
    "labelgate_review_latency_seconds",
    Kind.histogram,
    "Time from an item entering the review queue to its human review",
    buckets=REVIEW_LATENCY_BUCKETS,
)
MODEL_VERSION = MetricDef(
    "labelgate_labeler_model_version", Kind.gauge, "Latest model version the labeler trained for the project"
)
GUIDELINE_VERSION = MetricDef(
    "labelgate_pipeline_guideline_version", Kind.gauge, "Latest guideline version of the project"
)

SERIES_METRICS: tuple[MetricDef, ...] = (
    ITEMS_SUBMITTED, PROPOSALS, LEAKED_PROPOSALS, COST, DECISIONS, DECISION_OUTCOMES, REVIEWS, FINALIZED, QUEUE,
    DECISION_LATENCY, REVIEW_LATENCY, MODEL_VERSION, GUIDELINE_VERSION,
)
METRICS_BY_NAME: dict[str, MetricDef] = {m.name: m for m in SERIES_METRICS}

KAPPA = MetricDef(
    "labelgate_agreement_cohen_kappa",
    Kind.gauge,
    "Cohen's kappa between the AI's proposal and the human review (absent below 2 ratings)",
)
AUDIT_ACCURACY = MetricDef(
    "labelgate_audit_accuracy_ratio",
    Kind.gauge,
    "Share of audited would-be auto-accepts where the human's labels equal the AI's",
)
SPAN_F1 = MetricDef(
    "labelgate_agreement_span_f1_ratio",
    Kind.gauge,
    "Entities: micro F1 of the AI's spans against the human review's (exact start, end and label)",
)
BOX_IOU = MetricDef(
    "labelgate_agreement_box_iou_ratio",
    Kind.gauge,
    "Boxes: mean IoU of the AI's boxes matched one to one with the human review's (missed or extra count 0)",
)


# -- changes: what one event adds ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SeriesKey:
    metric: str
    project: str
    labels: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        """A stable, unambiguous document id, whatever characters project ids and label values hold."""
        return json.dumps([self.metric, self.project, *self.labels], ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class Change:
    """One update to one series: exactly one of the three fields is set."""

    key: SeriesKey
    add: float = 0.0
    observe: float | None = None
    """A histogram observation, in seconds."""
    maximum: float | None = None
    """The series' value becomes this if it is larger (versions never go back)."""


def bucket_key(bound: float) -> str:
    """The store field that counts observations in the bucket ending at ``bound`` (non-cumulative)."""
    return "inf" if math.isinf(bound) else "le_" + repr(float(bound)).replace(".", "_").replace("-", "m")


def bucket_for(buckets: Sequence[float], seconds: float) -> str:
    for bound in buckets:
        if seconds <= bound:
            return bucket_key(bound)
    return bucket_key(math.inf)


def _seconds(later: datetime, earlier: datetime) -> float:
    # Timestamps come from different processes' clocks: a small skew must not make a latency negative.
    return max(0.0, (later - earlier).total_seconds())


def changes_for(event: Event) -> list[Change]:
    """The changes an event makes that depend on nothing but the event (see ``ItemState`` for the rest)."""
    p = event.project_id
    match event:
        case ItemSubmitted():
            return [Change(SeriesKey(ITEMS_SUBMITTED.name, p), add=1)]
        case LabelScored(proposal=proposal):
            model = proposal.model_id
            changes = [
                Change(SeriesKey(PROPOSALS.name, p, (model,)), add=1),
                Change(SeriesKey(COST.name, p, (model,)), add=max(0.0, proposal.cost_usd)),
            ]
            if proposal.leakage is not None:
                changes.append(Change(SeriesKey(LEAKED_PROPOSALS.name, p, (proposal.leakage,)), add=1))
            return changes
        case DecisionMade(outcome=outcome, reasons=reasons):
            names = [str(r) for r in dict.fromkeys(reasons)] or ["none"]
            return [
                *(Change(SeriesKey(DECISIONS.name, p, (str(outcome), reason)), add=1) for reason in names),
                Change(SeriesKey(DECISION_OUTCOMES.name, p, (str(outcome),)), add=1),
                Change(SeriesKey(DECISION_LATENCY.name, p),
                       observe=_seconds(event.occurred_at, event.submitted_at)),
            ]
        case ReviewSubmitted(action=action):
            return [
                Change(SeriesKey(REVIEWS.name, p, (str(action),)), add=1),
                Change(SeriesKey(REVIEW_LATENCY.name, p), observe=_seconds(event.occurred_at, event.queued_at)),
            ]
        case LabelFinalized(source=source):
            return [Change(SeriesKey(FINALIZED.name, p, (str(source),)), add=1)]
        case ModelUpdated(model_version=version):
            return [Change(SeriesKey(MODEL_VERSION.name, p), maximum=version)]
        case GuidelineChanged(version=version):
            return [Change(SeriesKey(GUIDELINE_VERSION.name, p), maximum=version)]
    return []


# -- per-item state: the review queue and the review records behind agreement ----------------------------


@dataclass(frozen=True, slots=True)
class ReviewRecord:
    """The latest human review of one item, beside what the AI had proposed."""

    multi: bool
    """True for every task type but single-label classification: labels are compared as memberships."""
    ai: tuple[str, ...]
    human: tuple[str, ...]
    classes: tuple[str, ...] = ()
    """For ``multi``: the labels each (item, label) membership is rated over."""
    audited: bool = False
    annotations: AnnotationRecord | None = None
    """Entities and boxes tasks: the spans or boxes behind the labels."""

    @property
    def ai_proposed(self) -> bool:
        return bool(self.ai)

    @property
    def agrees(self) -> bool:
        """The same labels (as sets); for entities and boxes, the same spans or matching boxes."""
        if self.annotations is not None:
            return self.annotations.agrees
        return set(self.ai) == set(self.human)

    def ratings(self) -> list[tuple[str, str]]:
        """(AI, human) ratings for Cohen's kappa: the label itself for single-label items; for multi-label
        items one binary rating per label of the task ("1": the label applies)."""
        if not self.multi:
            return [("|".join(self.ai), "|".join(self.human))]
        ai, human = set(self.ai), set(self.human)
        return [(str(int(c in ai)), str(int(c in human))) for c in self.classes]

    @classmethod
    def from_review(cls, event: ReviewSubmitted) -> ReviewRecord:
        ai, human = tuple(sorted(set(event.ai_labels))), tuple(sorted(set(event.labels)))
        multi = event.task.type != TaskType.classification
        classes = tuple(sorted(set(event.task.label_names) | set(ai) | set(human))) if multi else ()
        return cls(multi, ai, human, classes, RoutingReason.audit in event.decision_reasons,
                   AnnotationRecord.from_review(event))

    def to_doc(self) -> dict[str, Any]:
        doc = {"multi": self.multi, "ai": list(self.ai), "human": list(self.human),
               "classes": list(self.classes), "audited": self.audited}
        if self.annotations is not None:
            doc["annotations"] = self.annotations.to_doc()
        return doc

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> ReviewRecord:
        annotations = doc.get("annotations")
        return cls(bool(doc["multi"]), tuple(doc["ai"]), tuple(doc["human"]), tuple(doc.get("classes", ())),
                   bool(doc.get("audited", False)), AnnotationRecord.from_doc(annotations) if annotations else None)


@dataclass(frozen=True, slots=True)
class ItemState:
    """What the metrics service remembers of one item.

    An item waits in the review queue when its latest ``needs_review`` decision is later than its latest
    review or final label. Comparing event times, rather than counting decisions minus reviews, keeps the
    gauge right when several reviewers review one item, when an item is routed again, and when a consumer
    sees a review before the decision that queued it (they travel on different topics)."""

    queued_at: float | None = None
    closed_at: float | None = None
    review: ReviewRecord | None = None

    @property
    def in_queue(self) -> bool:
        return self.queued_at is not None and (self.closed_at is None or self.queued_at > self.closed_at)

    def advance(self, event: Event) -> ItemState:
        at = event.occurred_at.timestamp()
        match event:
            case DecisionMade(outcome=DecisionOutcome.needs_review):
                return ItemState(_later(self.queued_at, at), self.closed_at, self.review)
            case ReviewSubmitted():
                return ItemState(self.queued_at, _later(self.closed_at, at), ReviewRecord.from_review(event))
            case LabelFinalized():
                return ItemState(self.queued_at, _later(self.closed_at, at), self.review)
        return self

    def to_doc(self) -> dict[str, Any]:
        doc: dict[str, Any] = {}
        if self.queued_at is not None:
            doc["queued_at"] = self.queued_at
        if self.closed_at is not None:
            doc["closed_at"] = self.closed_at
        if self.review is not None:
            doc["review"] = self.review.to_doc()
        return doc

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any] | None) -> ItemState:
        if not doc:
            return cls()
        review = doc.get("review")
        return cls(doc.get("queued_at"), doc.get("closed_at"), ReviewRecord.from_doc(review) if review else None)


def _later(current: float | None, at: float) -> float:
    return at if current is None else max(current, at)


def tracks_item(event: Event) -> bool:
    """Whether ``event`` moves an item's ``ItemState`` (so the handler must read and write it)."""
    return isinstance(event, (DecisionMade, ReviewSubmitted, LabelFinalized))


def queue_change(project: str, before: ItemState, after: ItemState) -> Change:
    """The queue gauge's change (possibly 0, which still makes the gauge exist for the project)."""
    return Change(SeriesKey(QUEUE.name, project), add=int(after.in_queue) - int(before.in_queue))


# -- agreement math --------------------------------------------------------------------------------------


def cohen_kappa(ratings: Sequence[tuple[str, str]]) -> float | None:
    """Cohen's kappa of (AI, human) ratings (see the module's docstring for the degenerate cases)."""
    if len(ratings) < 2:
        return None
    ai = [a for a, _ in ratings]
    human = [h for _, h in ratings]
    if len(set(ai) | set(human)) == 1:
        return 1.0
    kappa = float(cohen_kappa_score(ai, human))
    return None if math.isnan(kappa) else kappa


def audit_accuracy(records: Iterable[ReviewRecord]) -> tuple[int, float | None]:
    """(audited items, share of them where the human's labels equal the AI's)."""
    audited = [r for r in records if r.audited]
    if not audited:
        return 0, None
    return len(audited), sum(r.agrees for r in audited) / len(audited)


@dataclass(frozen=True, slots=True)
class Agreement:
    kappa: float | None
    kappa_ratings: int
    reviewed_items: int
    audited_items: int
    audit_accuracy: float | None
    annotations: AnnotationAgreement = field(default_factory=AnnotationAgreement)
    """Span F1 (entities) and mean IoU (boxes)."""

    @classmethod
    def of(cls, records: Sequence[ReviewRecord]) -> Agreement:
        ratings = [pair for r in records if r.ai_proposed for pair in r.ratings()]
        audited, accuracy = audit_accuracy(records)
        annotations = AnnotationAgreement.of(r.annotations for r in records if r.annotations is not None)
        return cls(cohen_kappa(ratings), len(ratings), len(records), audited, accuracy, annotations)


# -- the in-memory snapshot ------------------------------------------------------------------------------


@dataclass(slots=True)
class SeriesState:
    key: SeriesKey
    value: float = 0.0
    count: float = 0.0
    sum: float = 0.0
    buckets: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> SeriesState:
        key = SeriesKey(str(doc["metric"]), str(doc["project"]), tuple(str(v) for v in doc.get("labels", ())))
        return cls(key, float(doc.get("value", 0.0)), float(doc.get("count", 0.0)), float(doc.get("sum", 0.0)),
                   {k: float(v) for k, v in (doc.get("buckets") or {}).items()})

    def cumulative(self, bounds: Sequence[float]) -> list[tuple[float, float]]:
        """(bound, observations at or below it) for each finite bound, as Prometheus exposes buckets."""
        out: list[tuple[float, float]] = []
        running = 0.0
        for bound in bounds:
            running += self.buckets.get(bucket_key(bound), 0.0)
            out.append((bound, running))
        return out


def histogram_quantile(q: float, cumulative: Sequence[tuple[float, float]], count: float) -> float | None:
    """Estimate the ``q`` quantile from cumulative buckets, interpolating linearly as Prometheus does."""
    if count <= 0:
        return None
    rank = q * count
    lower_bound, lower_count = 0.0, 0.0
    for bound, cum in cumulative:
        if cum >= rank:
            in_bucket = cum - lower_count
            if in_bucket <= 0:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / in_bucket
        lower_bound, lower_count = bound, cum
    return cumulative[-1][0] if cumulative else None


class Aggregates:
    """Every project's aggregates, in memory: loaded from the store at start-up, then moved forward by the
    changes of each committed transaction. Agreement is recomputed at most every ``refresh_s`` seconds."""

    def __init__(self, *, refresh_s: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._refresh_s = refresh_s
        self._clock = clock
        self._series: dict[str, SeriesState] = {}
        self._reviews: dict[str, dict[str, ReviewRecord]] = {}
        self._agreement: dict[str, tuple[float, Agreement]] = {}
        self._stale: set[str] = set()

    # -- moving forward --

    def load(self, series_docs: Iterable[Mapping[str, Any]], item_docs: Iterable[Mapping[str, Any]]) -> None:
        self._series = {}
        self._reviews = {}
        self._agreement = {}
        self._stale = set()
        for doc in series_docs:
            state = SeriesState.from_doc(doc)
            self._series[state.key.id] = state
        for doc in item_docs:
            review = ItemState.from_doc(doc).review
            if review is not None:
                self.put_review(str(doc["project"]), str(doc["item_id"]), review)

    def apply(self, changes: Iterable[Change]) -> None:
        for change in changes:
            state = self._series.get(change.key.id)
            if state is None:
                state = self._series[change.key.id] = SeriesState(change.key)
            if change.observe is not None:
                definition = METRICS_BY_NAME[change.key.metric]
                slot = bucket_for(definition.buckets, change.observe)
                state.count += 1
                state.sum += change.observe
                state.buckets[slot] = state.buckets.get(slot, 0.0) + 1
            elif change.maximum is not None:
                state.value = max(state.value, change.maximum)
            else:
                state.value += change.add

    def put_review(self, project: str, item_id: str, record: ReviewRecord) -> None:
        self._reviews.setdefault(project, {})[item_id] = record
        self._stale.add(project)

    # -- reading --

    def projects(self) -> set[str]:
        return {s.key.project for s in list(self._series.values())}

    def series(self, metric: MetricDef, project: str | None = None) -> Iterator[SeriesState]:
        # A copy: a scrape served from another thread must not see the dict change under it.
        for state in list(self._series.values()):
            if state.key.metric == metric.name and (project is None or state.key.project == project):
                yield state

    def agreement(self, project: str) -> Agreement:
        cached = self._agreement.get(project)
        now = self._clock()
        if cached is not None and (project not in self._stale or now - cached[0] < self._refresh_s):
            return cached[1]
        result = Agreement.of(list(self._reviews.get(project, {}).values()))
        self._agreement[project] = (now, result)
        self._stale.discard(project)
        return result

    def report(self, project: str) -> ProjectMetricsPublic:
        def by(metric: MetricDef, position: int = 0) -> dict[str, float]:
            return {s.key.labels[position]: s.value for s in self.series(metric, project)}

        def total(metric: MetricDef) -> float:
            return sum(s.value for s in self.series(metric, project))

        def version(metric: MetricDef) -> int | None:
            values = [int(s.value) for s in self.series(metric, project)]
            return values[0] if values else None

        reasons: dict[str, dict[str, int]] = {}
        for s in self.series(DECISIONS, project):
            outcome, reason = s.key.labels
            reasons.setdefault(outcome, {})[reason] = int(s.value)
        cost = by(COST)
        finalized = by(FINALIZED)
        final_total = sum(finalized.values())
        agreement = self.agreement(project)
        return ProjectMetricsPublic(
            project_id=project,
            items_submitted=int(total(ITEMS_SUBMITTED)),
            proposals={k: int(v) for k, v in by(PROPOSALS).items()},
            leaked_proposals={k: int(v) for k, v in by(LEAKED_PROPOSALS).items()},
            cost_usd=cost,
            cost_usd_total=sum(cost.values()),
            cost_usd_per_final_label=sum(cost.values()) / final_total if final_total else None,
            decisions={k: int(v) for k, v in by(DECISION_OUTCOMES).items()},
            decision_reasons=reasons,
            reviews={k: int(v) for k, v in by(REVIEWS).items()},
            labels_finalized={k: int(v) for k, v in finalized.items()},
            queue_items=max(0, int(total(QUEUE))),
            decision_latency=self._latency(DECISION_LATENCY, project),
            review_latency=self._latency(REVIEW_LATENCY, project),
            agreement=AgreementPublic(
                cohen_kappa=agreement.kappa,
                kappa_ratings=agreement.kappa_ratings,
                reviewed_items=agreement.reviewed_items,
                audited_items=agreement.audited_items,
                audit_accuracy=agreement.audit_accuracy,
                span_items=agreement.annotations.span_items,
                span_precision=agreement.annotations.span_precision,
                span_recall=agreement.annotations.span_recall,
                span_f1=agreement.annotations.span_f1,
                box_items=agreement.annotations.box_items,
                box_mean_iou=agreement.annotations.box_mean_iou,
            ),
            model_version=version(MODEL_VERSION),
            guideline_version=version(GUIDELINE_VERSION),
        )

    def _latency(self, metric: MetricDef, project: str) -> LatencyPublic:
        state = next(self.series(metric, project), None) or SeriesState(SeriesKey(metric.name, project))
        cumulative = state.cumulative(metric.buckets)
        return LatencyPublic(
            count=int(state.count),
            sum_seconds=state.sum,
            mean_seconds=state.sum / state.count if state.count else None,
            p50_seconds=histogram_quantile(0.5, cumulative, state.count),
            p90_seconds=histogram_quantile(0.9, cumulative, state.count),
            buckets=[BucketPublic(le=bound, count=int(cum)) for bound, cum in cumulative],
        )
