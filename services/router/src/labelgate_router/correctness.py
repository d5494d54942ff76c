"""Whether the AI was right about a reviewed item: the outcome calibration learns from, by task type."""

from __future__ import annotations

from collections.abc import Sequence

from labelgate_core.events import Box, ReviewSubmitted, Span, TaskType
from labelgate_quality.agreement import Box as GeometricBox
from labelgate_quality.agreement import match_boxes

BOX_MATCH_IOU = 0.5
"""A proposed box is right when it matches a reviewed box of the same label at an IoU of at least this."""


def ai_was_right(event: ReviewSubmitted) -> bool:
    """Classification: the reviewer's labels are the AI's (as sets). Entities: the reviewed spans are the AI's,
    as sets of (start, end, label). Boxes: the AI's and the reviewer's boxes match one to one, each pair with
    the same label at IoU ≥ ``BOX_MATCH_IOU``."""
    if event.task.type is TaskType.entities:
        return spans_agree(event.ai_spans, event.spans)
    if event.task.type is TaskType.boxes:
        return boxes_agree(event.ai_boxes, event.boxes)
    return set(event.ai_labels) == set(event.labels)


def spans_agree(ai: Sequence[Span], human: Sequence[Span]) -> bool:
    return {(s.start, s.end, s.label) for s in ai} == {(s.start, s.end, s.label) for s in human}


def boxes_agree(ai: Sequence[Box], human: Sequence[Box], min_iou: float = BOX_MATCH_IOU) -> bool:
    if len(ai) != len(human):
        return False
    match = match_boxes([_geometric(b) for b in human], [_geometric(b) for b in ai], min_iou=min_iou)
    return not match.unmatched_gold and not match.unmatched_predicted


def _geometric(box: Box) -> GeometricBox:
    return GeometricBox(box.x, box.y, box.x + box.width, box.y + box.height, box.label)
