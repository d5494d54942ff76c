"""What counts as "the AI was right" for each task type: the outcome calibration and audits learn from."""

from __future__ import annotations

import pytest

from labelgate_core.events import (
    Box,
    LabelDef,
    ReviewAction,
    ReviewSubmitted,
    RoutingReason,
    Span,
    TaskSpec,
    TaskType,
    utcnow,
)
from labelgate_router.correctness import ai_was_right, boxes_agree, spans_agree

pytestmark = pytest.mark.unit

LABELS = (LabelDef(name="PER"), LabelDef(name="ORG"))


def review(task: TaskType, **fields: object) -> ReviewSubmitted:
    defaults: dict[str, object] = {
        "producer": "review-api",
        "project_id": "p",
        "item_id": "i",
        "review_id": "r",
        "reviewer_id": "ana",
        "action": ReviewAction.correct,
        "labels": (),
        "ai_labels": (),
        "ai_confidence": 0.8,
        "decision_reasons": (RoutingReason.low_confidence,),
        "text": "Ada Lovelace met Babbage at IBM",
        "task": TaskSpec(type=task, labels=LABELS),
        "guideline_version": 1,
        "queued_at": utcnow(),
    }
    return ReviewSubmitted.model_validate({**defaults, **fields})


def span(start: int, end: int, label: str = "PER", confidence: float | None = None) -> Span:
    return Span(start=start, end=end, label=label, confidence=confidence)


def box(x: float, y: float, w: float, h: float, label: str = "PER") -> Box:
    return Box(label=label, x=x, y=y, width=w, height=h)


def test_spans_are_right_only_as_the_same_set_of_start_end_and_label() -> None:
    ai = (span(0, 12, confidence=0.9), span(17, 24))
    # Order, repeats, the covered text and confidences do not matter; offsets and labels do.
    assert spans_agree(ai, (span(17, 24), span(0, 12), span(0, 12)))
    assert not spans_agree(ai, (span(0, 12),))  # one missed
    assert not spans_agree(ai, (span(0, 12), span(17, 24), span(28, 31, "ORG")))  # one extra
    assert not spans_agree(ai, (span(0, 3), span(17, 24)))  # a boundary moved
    assert not spans_agree(ai, (span(0, 12, "ORG"), span(17, 24)))  # a type changed
    assert spans_agree((), ())


def test_boxes_are_right_when_they_match_one_to_one_with_the_same_label_at_iou_one_half() -> None:
    ai = (box(0, 0, 10, 10), box(50, 50, 10, 10, "ORG"))
    nudged = (box(1, 1, 10, 10), box(50, 52, 10, 10, "ORG"))  # IoUs 0.68 and 0.67
    assert boxes_agree(ai, nudged)
    assert not boxes_agree(ai, (box(5, 5, 10, 10), box(50, 50, 10, 10, "ORG")))  # IoU 25/175 = 0.14
    assert not boxes_agree(ai, (box(0, 0, 10, 10), box(50, 50, 10, 10, "PER")))  # same place, other label
    assert not boxes_agree(ai, ai[:1])  # one missed
    assert not boxes_agree(ai[:1], ai)  # one extra
    # Two AI boxes on one object do not both match it.
    assert not boxes_agree((box(0, 0, 10, 10), box(0, 0, 10, 10)), (box(0, 0, 10, 10), box(80, 80, 5, 5)))
    assert boxes_agree((), ())


def test_boxes_at_exactly_one_half_match() -> None:
    # 10x10 against 10x5 inside it: IoU = 50 / 100 = 0.5.
    assert boxes_agree((box(0, 0, 10, 10),), (box(0, 0, 10, 5),))


def test_ai_was_right_reads_the_review_by_task_type() -> None:
    spans = (span(0, 12), span(28, 31, "ORG"))
    assert ai_was_right(
        review(TaskType.entities, ai_spans=spans, spans=spans, ai_labels=("PER", "ORG"), labels=("PER", "ORG"))
    )
    # Same distinct labels, but a different span: wrong, though the labels alone would say right.
    assert not ai_was_right(
        review(
            TaskType.entities,
            ai_spans=spans,
            spans=(span(0, 3), span(28, 31, "ORG")),
            ai_labels=("PER", "ORG"),
            labels=("PER", "ORG"),
        )
    )
    boxes = (box(0, 0, 100, 100),)
    assert ai_was_right(review(TaskType.boxes, ai_boxes=boxes, boxes=(box(5, 5, 100, 100),)))
    assert not ai_was_right(
        review(TaskType.boxes, ai_boxes=boxes, boxes=(box(60, 60, 100, 100),), ai_labels=("PER",), labels=("PER",))
    )
    assert ai_was_right(review(TaskType.multi_label, ai_labels=("PER", "ORG"), labels=("ORG", "PER")))
    assert not ai_was_right(review(TaskType.classification, ai_labels=("PER",), labels=("ORG",)))
