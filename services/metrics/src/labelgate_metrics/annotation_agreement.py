"""Human-vs-AI agreement on entities and boxes: micro span F1 (exact start, end and label) and mean IoU of
boxes matched one to one, per project, from the latest review of each item.

Which reviews count: those where the AI proposed something, i.e. spans or boxes, or a scored proposal (a
scored "nothing to mark" is an answer; an unscored empty proposal is the cold start, before any model exists,
and would only measure that no model was there). Degenerate cases: with no span on either side of any counted
item, precision, recall and F1 are undefined (null); likewise the mean IoU without a single box."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from labelgate_core.events import Box, ReviewSubmitted, Span, TaskType
from labelgate_quality.agreement import PRF, match_boxes, span_prf
from labelgate_quality.agreement import Box as GeometricBox
from labelgate_quality.agreement import Span as SpanRef

SpanKey = tuple[int, int, str]
"""(start, end, label)"""
BoxKey = tuple[str, float, float, float, float]
"""(label, x, y, width, height)"""

BOX_MATCH_IOU = 0.5
"""Boxes agree when they match one to one, with the same label, at an IoU of at least this."""


@dataclass(frozen=True, slots=True)
class AnnotationRecord:
    """The spans or boxes of one item's latest review, beside the AI's."""

    task: TaskType
    ai_spans: tuple[SpanKey, ...] = ()
    spans: tuple[SpanKey, ...] = ()
    ai_boxes: tuple[BoxKey, ...] = ()
    boxes: tuple[BoxKey, ...] = ()
    ai_scored: bool = False

    @property
    def proposed(self) -> bool:
        return bool(self.ai_spans or self.ai_boxes) or self.ai_scored

    @property
    def agrees(self) -> bool:
        """Entities: the same spans, as sets. Boxes: every box matched one to one at ``BOX_MATCH_IOU``."""
        if self.task is TaskType.entities:
            return set(self.ai_spans) == set(self.spans)
        if len(self.ai_boxes) != len(self.boxes):
            return False
        match = match_boxes(_geometric(self.boxes), _geometric(self.ai_boxes), min_iou=BOX_MATCH_IOU)
        return not match.unmatched_gold and not match.unmatched_predicted

    def span_prf(self) -> PRF:
        """True/false positives of the AI's spans against the reviewer's (exact match)."""
        return span_prf([SpanRef(*key) for key in self.spans], [SpanRef(*key) for key in self.ai_spans])

    def box_overlap(self) -> tuple[float, int]:
        """(sum of the IoUs of the optimally matched box pairs, max(#reviewer's boxes, #AI's boxes)): a missed or
        an extra box counts as IoU 0."""
        match = match_boxes(_geometric(self.boxes), _geometric(self.ai_boxes), min_iou=0.0)
        return sum(score for _, _, score in match.pairs), max(len(self.boxes), len(self.ai_boxes))

    @classmethod
    def from_review(cls, event: ReviewSubmitted) -> AnnotationRecord | None:
        """The record of an entities or boxes review; None for the classification task types."""
        task = event.task.type
        if task not in (TaskType.entities, TaskType.boxes):
            return None
        return cls(
            task,
            ai_spans=_span_keys(event.ai_spans),
            spans=_span_keys(event.spans),
            ai_boxes=_box_keys(event.ai_boxes),
            boxes=_box_keys(event.boxes),
            ai_scored=event.ai_confidence is not None,
        )

    def to_doc(self) -> dict[str, Any]:
        return {
            "task": self.task.value,
            "ai_spans": [list(k) for k in self.ai_spans],
            "spans": [list(k) for k in self.spans],
            "ai_boxes": [list(k) for k in self.ai_boxes],
            "boxes": [list(k) for k in self.boxes],
            "ai_scored": self.ai_scored,
        }

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> AnnotationRecord:
        def spans(name: str) -> tuple[SpanKey, ...]:
            return tuple((int(s), int(e), str(label)) for s, e, label in doc.get(name) or ())

        def boxes(name: str) -> tuple[BoxKey, ...]:
            return tuple(
                (str(label), float(x), float(y), float(w), float(h)) for label, x, y, w, h in doc.get(name) or ()
            )

        return cls(
            TaskType(doc["task"]),
            ai_spans=spans("ai_spans"),
            spans=spans("spans"),
            ai_boxes=boxes("ai_boxes"),
            boxes=boxes("boxes"),
            ai_scored=bool(doc.get("ai_scored", False)),
        )


@dataclass(frozen=True, slots=True)
class AnnotationAgreement:
    span_items: int = 0
    """Reviewed entities items counted (see the module's docstring)."""
    span_precision: float | None = None
    span_recall: float | None = None
    span_f1: float | None = None
    box_items: int = 0
    """Reviewed boxes items counted."""
    box_mean_iou: float | None = None

    @classmethod
    def of(cls, records: Iterable[AnnotationRecord]) -> AnnotationAgreement:
        span_records: list[AnnotationRecord] = []
        box_records: list[AnnotationRecord] = []
        for record in records:
            if record.proposed:
                (span_records if record.task is TaskType.entities else box_records).append(record)
        prf = PRF(0, 0, 0)
        for record in span_records:
            prf += record.span_prf()
        matched, slots = 0.0, 0
        for record in box_records:
            overlap, count = record.box_overlap()
            matched, slots = matched + overlap, slots + count
        return cls(
            span_items=len(span_records),
            span_precision=prf.precision,
            span_recall=prf.recall,
            span_f1=prf.f1,
            box_items=len(box_records),
            box_mean_iou=matched / slots if slots else None,
        )


def _span_keys(spans: Iterable[Span]) -> tuple[SpanKey, ...]:
    return tuple(sorted({(s.start, s.end, s.label) for s in spans}))


def _box_keys(boxes: Iterable[Box]) -> tuple[BoxKey, ...]:
    return tuple(sorted({(b.label, b.x, b.y, b.width, b.height) for b in boxes}))


def _geometric(keys: Sequence[BoxKey]) -> list[GeometricBox]:
    return [GeometricBox(x, y, x + w, y + h, label) for label, x, y, w, h in keys]
