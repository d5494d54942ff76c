"""Human-vs-AI agreement on entities (micro span F1) and boxes (mean IoU): the math, and the metrics service
exposing it per project in /metrics and the JSON read API, each review counted once across redeliveries and
restarts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta

import pytest

from labelgate_core.bus.memory import MemoryBus
from labelgate_core.events import (
    Box,
    DecisionMade,
    DecisionOutcome,
    Event,
    FinalSource,
    LabelDef,
    Proposal,
    ReviewAction,
    ReviewSubmitted,
    RoutingReason,
    Span,
    TaskSpec,
    TaskType,
)
from labelgate_metrics.annotation_agreement import AnnotationAgreement, AnnotationRecord

from .builders import finalized, submitted
from .harness import PARTITIONS, Start, stop

ENTITIES = TaskSpec(type=TaskType.entities, labels=(LabelDef(name="PER"), LabelDef(name="ORG")))
BOXES = TaskSpec(type=TaskType.boxes, labels=(LabelDef(name="cat"), LabelDef(name="dog")))


def span(start: int, end: int, label: str = "PER") -> Span:
    return Span(start=start, end=end, label=label)


def box(x: float, y: float, w: float, h: float, label: str = "cat") -> Box:
    return Box(label=label, x=x, y=y, width=w, height=h)


Marks = Mapping[str, Sequence[Span | Box]]
"""{"spans": (...)} or {"boxes": (...)}"""


def _spans(marks: Marks) -> tuple[Span, ...]:
    return tuple(x for x in marks.get("spans", ()) if isinstance(x, Span))


def _boxes(marks: Marks) -> tuple[Box, ...]:
    return tuple(x for x in marks.get("boxes", ()) if isinstance(x, Box))


def reviewed_item(
    project: str,
    item: str,
    task: TaskSpec,
    *,
    ai: Marks,
    human: Marks,
    confidence: float | None = 0.6,
    reasons: tuple[RoutingReason, ...] = (RoutingReason.low_confidence,),
) -> list[Event]:
    """An entities or boxes item routed to review and reviewed: submitted → decided → reviewed → finalized."""
    sub = submitted(project, item, task=task)
    ai_spans, ai_boxes = _spans(ai), _boxes(ai)
    labels = tuple(dict.fromkeys([*(x.label for x in ai_spans), *(x.label for x in ai_boxes)]))
    decision = DecisionMade(
        producer="router",
        **sub.caused(),
        occurred_at=sub.occurred_at + timedelta(seconds=1),
        outcome=DecisionOutcome.needs_review,
        reasons=reasons,
        guideline_version=1,
        submitted_at=sub.occurred_at,
        proposal=Proposal(
            model_id="crf", model_version=1, labels=labels, confidence=confidence, spans=ai_spans, boxes=ai_boxes
        ),
    )
    spans, boxes = _spans(human), _boxes(human)
    review = ReviewSubmitted.model_validate(
        {
            "producer": "review-api",
            **decision.caused(),
            "occurred_at": decision.occurred_at + timedelta(seconds=30),
            "review_id": f"review-of-{item}",
            "reviewer_id": "rev-1",
            "action": ReviewAction.correct,
            "labels": tuple(dict.fromkeys([*(x.label for x in spans), *(x.label for x in boxes)])),
            "ai_labels": labels,
            "ai_confidence": confidence,
            "spans": spans,
            "ai_spans": ai_spans,
            "boxes": boxes,
            "ai_boxes": ai_boxes,
            "decision_reasons": reasons,
            "text": "Ada Lovelace met Babbage at IBM",
            "task": task,
            "guideline_version": 1,
            "queued_at": decision.occurred_at,
        }
    )
    return [sub, decision, review, finalized(review, review.labels, FinalSource.review, sub.occurred_at)]


def project_events() -> list[Event]:
    """Entities project "ner": 3 items (one a cold start), and boxes project "pets": 2 items."""
    return [
        # AI 2 spans, human 2 spans, 1 in common: tp 1, fp 1, fn 1.
        *reviewed_item(
            "ner",
            "e1",
            ENTITIES,
            ai={"spans": (span(0, 12), span(17, 24))},
            human={"spans": (span(0, 12), span(28, 31, "ORG"))},
        ),
        # All 3 agree: tp 3. This one was an audit, and the AI was right.
        *reviewed_item(
            "ner",
            "e2",
            ENTITIES,
            ai={"spans": (span(0, 3), span(4, 12), span(28, 31, "ORG"))},
            human={"spans": (span(0, 3), span(4, 12), span(28, 31, "ORG"))},
            reasons=(RoutingReason.audit,),
        ),
        # Cold start: no model proposed anything, unscored; it says nothing of the AI's agreement.
        *reviewed_item(
            "ner",
            "e3",
            ENTITIES,
            ai={},
            human={"spans": (span(0, 12),)},
            confidence=None,
            reasons=(RoutingReason.no_confidence,),
        ),
        # One box nudged (IoU 0.8) and one missed (IoU 0): (0.8 + 0) / 2 slots.
        *reviewed_item(
            "pets",
            "b1",
            BOXES,
            ai={"boxes": (box(0, 0, 100, 100),)},
            human={"boxes": (box(0, 0, 100, 80), box(200, 200, 50, 50, "dog"))},
        ),
        # Exactly the same box: 1.0 over 1 slot. An audit the AI got right (IoU ≥ 0.5, same label).
        *reviewed_item(
            "pets",
            "b2",
            BOXES,
            ai={"boxes": (box(10, 10, 20, 20, "dog"),)},
            human={"boxes": (box(10, 10, 20, 20, "dog"),)},
            reasons=(RoutingReason.audit,),
        ),
    ]


# -- the math --------------------------------------------------------------------------------------------


def record(task: TaskSpec, *, ai: Marks, human: Marks, scored: bool = True) -> AnnotationRecord:
    events = reviewed_item("p", "i", task, ai=ai, human=human, confidence=0.5 if scored else None)
    review = next(e for e in events if isinstance(e, ReviewSubmitted))
    result = AnnotationRecord.from_review(review)
    assert result is not None
    return result


@pytest.mark.unit
def test_span_f1_is_micro_averaged_over_items_with_exact_matches() -> None:
    a = record(ENTITIES, ai={"spans": (span(0, 12), span(17, 24))}, human={"spans": (span(0, 12), span(28, 31))})
    b = record(ENTITIES, ai={"spans": (span(0, 3),)}, human={"spans": (span(0, 3),)})
    overlapping = record(ENTITIES, ai={"spans": (span(0, 11),)}, human={"spans": (span(0, 12),)})

    both = AnnotationAgreement.of([a, b])
    assert both.span_precision == pytest.approx(2 / 3)
    assert both.span_recall == pytest.approx(2 / 3)
    assert both.span_f1 == pytest.approx(2 / 3)
    assert both.span_items == 2
    assert AnnotationAgreement.of([overlapping]).span_f1 == 0.0  # exact match: off by one is a miss
    assert not a.agrees
    assert b.agrees


@pytest.mark.unit
def test_degenerate_cases_are_null_not_zero() -> None:
    nothing = record(ENTITIES, ai={}, human={})  # a scored "nothing to mark", confirmed
    cold = record(ENTITIES, ai={}, human={"spans": (span(0, 3),)}, scored=False)

    result = AnnotationAgreement.of([nothing, cold])
    assert result.span_items == 1  # the cold start does not count
    assert result.span_f1 is None
    assert nothing.agrees
    assert AnnotationAgreement.of([]).box_mean_iou is None


@pytest.mark.unit
def test_box_iou_counts_missed_and_extra_boxes_as_zero() -> None:
    nudged = record(BOXES, ai={"boxes": (box(0, 0, 100, 100),)}, human={"boxes": (box(0, 0, 100, 80),)})
    missed = record(
        BOXES, ai={"boxes": (box(0, 0, 10, 10),)}, human={"boxes": (box(0, 0, 10, 10), box(50, 50, 10, 10))}
    )
    wrong_label = record(BOXES, ai={"boxes": (box(0, 0, 10, 10, "dog"),)}, human={"boxes": (box(0, 0, 10, 10),)})

    assert AnnotationAgreement.of([nudged]).box_mean_iou == pytest.approx(0.8)
    assert AnnotationAgreement.of([nudged, missed]).box_mean_iou == pytest.approx((0.8 + 1.0) / 3)
    assert AnnotationAgreement.of([wrong_label]).box_mean_iou == 0.0
    assert nudged.agrees
    assert not missed.agrees
    assert not wrong_label.agrees


@pytest.mark.unit
def test_a_record_survives_its_document() -> None:
    a = record(BOXES, ai={"boxes": (box(0.5, 1, 10, 10),)}, human={"boxes": (box(0, 0, 10, 10, "dog"),)})
    b = record(ENTITIES, ai={"spans": (span(0, 12),)}, human={"spans": (span(3, 5, "ORG"),)}, scored=False)
    assert AnnotationRecord.from_doc(a.to_doc()) == a
    assert AnnotationRecord.from_doc(b.to_doc()) == b


# -- the service -----------------------------------------------------------------------------------------


@pytest.mark.integration
async def test_span_f1_and_box_iou_per_project_in_metrics_and_json(start: Start) -> None:
    system = await start()
    await system.publish(project_events())
    m = await system.scrape()

    # ner: e1 tp 1 fp 1 fn 1, e2 tp 3: precision = recall = 4/5.
    assert m.get("labelgate_agreement_span_f1_ratio", project="ner") == pytest.approx(0.8)
    assert m.get("labelgate_agreement_box_iou_ratio", project="ner") is None
    assert m.get("labelgate_agreement_box_iou_ratio", project="pets") == pytest.approx((0.8 + 0 + 1) / 3)
    assert m.get("labelgate_agreement_span_f1_ratio", project="pets") is None
    # Audits judge the AI by its spans and boxes: both audited items were right.
    assert m.get("labelgate_audit_accuracy_ratio", project="ner") == 1.0
    assert m.get("labelgate_audit_accuracy_ratio", project="pets") == 1.0

    ner = (await system.http.get("/v1/projects/ner/metrics")).json()["agreement"]
    assert ner["span_items"] == 2
    assert ner["span_precision"] == pytest.approx(0.8)
    assert ner["span_recall"] == pytest.approx(0.8)
    assert ner["span_f1"] == pytest.approx(0.8)
    assert ner["box_mean_iou"] is None
    pets = (await system.http.get("/v1/projects/pets/metrics")).json()["agreement"]
    assert pets["box_items"] == 2
    assert pets["box_mean_iou"] == pytest.approx(0.6)
    assert pets["span_f1"] is None


@pytest.mark.integration
async def test_span_f1_and_box_iou_survive_redelivery_and_restart(start: Start) -> None:
    first = await start()
    events = project_events()
    await first.publish(events)
    await first.publish(events)  # a redelivery changes nothing
    before = await first.scrape()
    assert before.get("labelgate_agreement_span_f1_ratio", project="ner") == pytest.approx(0.8)
    await stop(first)

    second = await start(MemoryBus(partitions=PARTITIONS))  # same store, every event delivered again
    await second.publish(events)
    after = await second.scrape()
    for project in ("ner", "pets"):
        assert after.project(project) == before.project(project)
    assert after.get("labelgate_agreement_box_iou_ratio", project="pets") == pytest.approx(0.6)
