"""A reviewer's answer by task type: labels for classification, spans for entities, boxes for boxes. Checking
it against the item and the label schema, comparing it with the AI's proposal, and its stored form."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from labelgate_core.events import Box, Span, TaskSpec, TaskType
from labelgate_core.store.port import Doc
from labelgate_quality.agreement import Box as GeometricBox
from labelgate_quality.agreement import match_boxes

from .errors import InvalidBoxesError, InvalidLabelsError, InvalidSpansError
from .schemas import ReviewCreate

_SHOWN_LABELS = 50
BOX_MATCH_IOU = 0.5
"""Boxes match when they have the same label and an intersection over union of at least this."""


@dataclass(frozen=True, slots=True)
class Answer:
    """A checked answer: the labels (derived for entities and boxes), and the spans or boxes."""

    labels: tuple[str, ...]
    spans: tuple[Span, ...] = ()
    boxes: tuple[Box, ...] = ()


def _unknown_label(
    spec: TaskSpec,
    label: str,
    what: str,
    error: type[InvalidLabelsError | InvalidSpansError | InvalidBoxesError],
    **details: Any,
) -> Exception:
    allowed = spec.label_names
    shown = ", ".join(f"'{name}'" for name in allowed[:_SHOWN_LABELS])
    more = f" and {len(allowed) - _SHOWN_LABELS} more" if len(allowed) > _SHOWN_LABELS else ""
    return error(
        f"{what}label '{label}' is not in the project's labels (allowed: {shown}{more})",
        details={**details, "allowed": list(allowed)},
    )


def check_labels(spec: TaskSpec, labels: Sequence[str]) -> tuple[str, ...]:
    """The reviewer's labels, without repeats, if the task's schema allows them; ``InvalidLabelsError`` if not.

    Single-label classification takes exactly one label; the other task types take any subset of the schema
    (the empty one included)."""
    allowed = spec.label_names
    unknown = [label for label in labels if label not in allowed]
    if unknown:
        raise _unknown_label(spec, unknown[0], "", InvalidLabelsError, unknown=unknown)
    unique = tuple(dict.fromkeys(labels))
    if spec.type == TaskType.classification and len(unique) != 1:
        raise InvalidLabelsError(
            f"a classification task takes exactly one label, got {len(unique)}",
            details={"allowed": list(allowed)},
        )
    return unique


def check_answer(spec: TaskSpec, body: ReviewCreate, item: Doc) -> Answer:
    """The answer ``body`` gives for ``item``, checked for the project's task type; a 422 error saying what is
    wrong otherwise."""
    kind = spec.type
    if kind in (TaskType.classification, TaskType.multi_label):
        for field in ("spans", "boxes"):
            if getattr(body, field) is not None:
                raise InvalidLabelsError(f"a {kind.value} task is reviewed with `labels`, not `{field}`")
        if body.labels is None:
            raise InvalidLabelsError(f"a {kind.value} task's review needs `labels`")
        return Answer(check_labels(spec, body.labels))
    wanted, other = ("spans", "boxes") if kind is TaskType.entities else ("boxes", "spans")
    error = InvalidSpansError if kind is TaskType.entities else InvalidBoxesError
    task = "an entities task" if kind is TaskType.entities else "a boxes task"
    if getattr(body, other) is not None:
        raise error(f"{task} is reviewed with `{wanted}`, not `{other}`")
    if getattr(body, wanted) is None:
        raise error(f"{task}'s review needs `{wanted}` (an empty list when there is nothing to mark)")
    if kind is TaskType.entities:
        spans = check_spans(spec, body, str(item.get("text") or ""))
        answer = Answer(distinct(span.label for span in spans), spans=spans)
    else:
        boxes = check_boxes(spec, body, item.get("image") or {})
        answer = Answer(distinct(box.label for box in boxes), boxes=boxes)
    if body.labels is not None and set(body.labels) != set(answer.labels):
        raise error(
            f"the labels of {task} are those of its {wanted} ({', '.join(answer.labels) or 'none'});"
            " leave `labels` out",
            details={"labels": list(answer.labels)},
        )
    return answer


def check_spans(spec: TaskSpec, body: ReviewCreate, text: str) -> tuple[Span, ...]:
    """The reviewer's spans, without repeats, with their text taken from the item."""
    spans: dict[tuple[int, int, str], Span] = {}
    for index, given in enumerate(body.spans or ()):
        where = f"spans[{index}]"
        if given.label not in spec.label_names:
            raise _unknown_label(spec, given.label, f"{where}: ", InvalidSpansError, field=where)
        if given.end > len(text):
            raise InvalidSpansError(
                f"{where} ends at {given.end}, past the end of the item's text ({len(text)} characters)",
                details={"field": where, "text_length": len(text)},
            )
        covered = text[given.start : given.end]
        if given.text is not None and given.text != covered:
            raise InvalidSpansError(
                f"{where}.text is {given.text!r} but the item's text from {given.start} to {given.end} is {covered!r}"
                " (offsets count Python characters, i.e. Unicode code points)",
                details={"field": f"{where}.text", "covered": covered},
            )
        span = Span(start=given.start, end=given.end, label=given.label, text=covered)
        spans.setdefault(span_key(span), span)
    return tuple(sorted(spans.values(), key=span_key))


def check_boxes(spec: TaskSpec, body: ReviewCreate, image: Mapping[str, Any]) -> tuple[Box, ...]:
    """The reviewer's boxes, without repeats, each inside the item's image."""
    width, height = float(image.get("width") or 0), float(image.get("height") or 0)
    boxes: dict[tuple[str, float, float, float, float], Box] = {}
    for index, given in enumerate(body.boxes or ()):
        where = f"boxes[{index}]"
        if given.label not in spec.label_names:
            raise _unknown_label(spec, given.label, f"{where}: ", InvalidBoxesError, field=where)
        right, bottom = given.x + given.width, given.y + given.height
        if right > width or bottom > height:
            raise InvalidBoxesError(
                f"{where} reaches ({right:g}, {bottom:g}), outside the image of {width:g}x{height:g} pixels",
                details={"field": where, "image_width": width, "image_height": height},
            )
        box = Box(label=given.label, x=given.x, y=given.y, width=given.width, height=given.height)
        boxes.setdefault(box_key(box), box)
    return tuple(boxes.values())


def distinct(labels: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(labels))


def span_key(span: Span) -> tuple[int, int, str]:
    return span.start, span.end, span.label


def box_key(box: Box) -> tuple[str, float, float, float, float]:
    return box.label, box.x, box.y, box.width, box.height


# -- agreement with the AI -----------------------------------------------------------------------------------


def spans_agree(a: Iterable[Span], b: Iterable[Span]) -> bool:
    """Same spans, as sets of (start, end, label)."""
    return {span_key(s) for s in a} == {span_key(s) for s in b}


def boxes_agree(a: Sequence[Box], b: Sequence[Box], min_iou: float = BOX_MATCH_IOU) -> bool:
    """Every box of each side matched one-to-one to a box of the other with the same label at IoU ≥ ``min_iou``."""
    if len(a) != len(b):
        return False
    match = match_boxes([geometric(box) for box in a], [geometric(box) for box in b], min_iou=min_iou)
    return not match.unmatched_gold and not match.unmatched_predicted


def geometric(box: Box) -> GeometricBox:
    return GeometricBox(box.x, box.y, box.x + box.width, box.y + box.height, box.label)


def agrees(spec: TaskSpec, answer: Answer, proposal: Doc | None) -> bool:
    """Whether the reviewer's answer is the AI's proposal: the same labels (as a set) for classification, the
    same spans for entities, matching boxes for boxes."""
    if proposal is None:
        return False
    if spec.type is TaskType.entities:
        return spans_agree(answer.spans, spans_from_docs(proposal.get("spans")))
    if spec.type is TaskType.boxes:
        return boxes_agree(answer.boxes, boxes_from_docs(proposal.get("boxes")))
    return set(answer.labels) == set(proposal.get("labels") or ())


# -- stored form ---------------------------------------------------------------------------------------------


def span_docs(spans: Iterable[Span]) -> list[Doc]:
    return [span.model_dump(mode="json") for span in spans]


def box_docs(boxes: Iterable[Box]) -> list[Doc]:
    return [box.model_dump(mode="json") for box in boxes]


def spans_from_docs(docs: Iterable[Mapping[str, Any]] | None) -> tuple[Span, ...]:
    return tuple(Span.model_validate(doc) for doc in docs or ())


def boxes_from_docs(docs: Iterable[Mapping[str, Any]] | None) -> tuple[Box, ...]:
    return tuple(Box.model_validate(doc) for doc in docs or ())


def answer_fields(answer: Answer) -> Doc:
    """The spans and boxes of an answer, as a review, a final label or an export line stores them."""
    return {"spans": span_docs(answer.spans), "boxes": box_docs(answer.boxes)}
