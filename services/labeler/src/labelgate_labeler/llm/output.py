"""Validation of a model's answer against the task's label schema, before anything uses it.

Entities must point at the item's text: a span whose ``text`` is not ``item[start:end]`` has its offsets
repaired when its ``text`` occurs exactly once in the item (models often miscount characters but quote
correctly); otherwise, or with a type outside the task's labels, the whole answer is invalid. Boxes must lie
inside the image and carry a label of the task."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from labelgate_core.events import Box, ImageRef, Span, TaskSpec, TaskType

_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)


class InvalidOutputError(ValueError):
    """The answer is not JSON, does not fit the schema, or names a label the task does not have."""


class _Single(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    label: str
    confidence: Annotated[float, Field(ge=0, le=1)] | None = None


Probability = Annotated[float, Field(ge=0, le=1, strict=False)]
"""A stated probability: ``1`` and ``0`` are as good as ``1.0`` and ``0.0``."""


class _Multi(BaseModel):
    """``labels`` as a yes/no per label (what is asked for), or as a list of the labels that apply."""

    model_config = ConfigDict(extra="ignore", strict=True)

    labels: dict[str, bool] | list[str]
    confidence: dict[str, Probability] | Probability | None = None


class _Entity(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    text: str
    start: int
    end: int
    type: str
    confidence: Probability | None = None


class _Entities(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    entities: list[_Entity]


class _Box(BaseModel):
    model_config = ConfigDict(extra="ignore")

    label: Annotated[str, Field(strict=True)]
    x: float
    y: float
    width: float
    height: float
    confidence: Probability | None = None


class _Boxes(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    boxes: list[_Box]


@dataclass(frozen=True, slots=True)
class Answer:
    labels: tuple[str, ...]
    verbalized: float | None
    label_confidence: dict[str, float] = field(default_factory=dict)
    """Multi-label, verbalized: the stated probability that each label's yes/no is right."""
    spans: tuple[Span, ...] = ()
    """Entities, validated against the text (with each one's stated confidence, if any)."""
    boxes: tuple[Box, ...] = ()
    """Boxes, validated against the image (with each one's stated confidence, if any)."""
    repaired: int = 0
    """Entities whose offsets were repaired from their text."""
    raw_labels: tuple[str, ...] = ()
    """Entities and boxes: the type (label) of every object, in the answer's own order."""
    sources: tuple[tuple[int, ...], ...] = ()
    """Entities and boxes: for each of ``spans``/``boxes``, its positions in ``raw_labels`` (a span the answer
    repeats has several)."""


def parse_answer(
    content: str | None, task: TaskSpec, *, text: str | None = None, image: ImageRef | None = None
) -> Answer:
    """The answer, validated. Entities are checked against ``text`` (the item's text as the model saw it),
    boxes against ``image``'s size. Raise ``InvalidOutputError`` when it cannot be used."""
    if content is None or not content.strip():
        raise InvalidOutputError("empty answer")
    fenced = _FENCE.match(content)
    raw = fenced.group(1) if fenced else content
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InvalidOutputError(f"not JSON: {exc.msg} at {exc.pos}") from exc
    if isinstance(data, dict) and isinstance(data.get("confidence"), int) and not isinstance(
        data["confidence"], bool
    ):
        data["confidence"] = float(data["confidence"])
    allowed = set(task.label_names)
    try:
        if task.type is TaskType.multi_label:
            return _multi(_Multi.model_validate(data), task)
        if task.type is TaskType.entities:
            return _entities(_Entities.model_validate(data), task, text or "")
        if task.type is TaskType.boxes:
            if image is None:
                raise InvalidOutputError("a boxes answer cannot be checked without the image's size")
            return _boxes(_Boxes.model_validate(data), task, image)
        single = _Single.model_validate(data)
        labels = (single.label.strip(),)
        verbalized = single.confidence
    except ValidationError as exc:
        raise InvalidOutputError(f"does not fit the schema: {exc.errors()[0]['msg']}") from exc
    _known(labels, allowed)
    return Answer(labels, verbalized)


def _known(labels: Sequence[str], allowed: set[str]) -> None:
    unknown = [label for label in labels if label not in allowed]
    if unknown:
        raise InvalidOutputError(f"labels outside the schema: {list(dict.fromkeys(unknown))[:5]}")


def _multi(multi: _Multi, task: TaskSpec) -> Answer:
    names = task.label_names
    if isinstance(multi.labels, dict):
        said = {label.strip(): value for label, value in multi.labels.items()}
        _known(list(said), set(names))
        labels = tuple(name for name in names if said.get(name, False))
    else:
        labels = tuple(dict.fromkeys(label.strip() for label in multi.labels))
        _known(labels, set(names))
    if isinstance(multi.confidence, dict):
        stated = {label.strip(): p for label, p in multi.confidence.items()}
        _known(list(stated), set(names))
        return Answer(labels, min(stated.values(), default=None), stated)
    return Answer(labels, multi.confidence)


def _entities(parsed: _Entities, task: TaskSpec, text: str) -> Answer:
    _known([e.type.strip() for e in parsed.entities], set(task.label_names))
    spans: dict[tuple[int, int, str], Span] = {}
    sources: dict[tuple[int, int, str], list[int]] = {}
    repaired = 0
    for index, entity in enumerate(parsed.entities):
        start, end = entity.start, entity.end
        if not (0 <= start < end <= len(text) and text[start:end] == entity.text):
            first = text.find(entity.text) if entity.text else -1
            if first < 0 or text.find(entity.text, first + 1) >= 0:
                raise InvalidOutputError(
                    f"entity {entity.text[:80]!r} at [{start}, {end}) does not match the item's text"
                )
            start, end = first, first + len(entity.text)
            repaired += 1
        label = entity.type.strip()
        spans.setdefault((start, end, label), Span(start=start, end=end, label=label, text=text[start:end],
                                                   confidence=entity.confidence))
        sources.setdefault((start, end, label), []).append(index)
    keys = sorted(spans)
    ordered = tuple(spans[key] for key in keys)
    return Answer(
        tuple(dict.fromkeys(s.label for s in ordered)), None, spans=ordered, repaired=repaired,
        raw_labels=tuple(e.type for e in parsed.entities), sources=tuple(tuple(sources[key]) for key in keys),
    )


def _boxes(parsed: _Boxes, task: TaskSpec, image: ImageRef) -> Answer:
    _known([b.label.strip() for b in parsed.boxes], set(task.label_names))
    boxes: list[Box] = []
    for b in parsed.boxes:
        inside = (
            b.x >= 0 and b.y >= 0 and b.width > 0 and b.height > 0
            and b.x + b.width <= image.width + _PIXEL_SLACK and b.y + b.height <= image.height + _PIXEL_SLACK
        )
        if not inside:
            raise InvalidOutputError(
                f"box {b.label!r} ({b.x}, {b.y}, {b.width}x{b.height}) is outside the {image.width}x{image.height} "
                "image"
            )
        boxes.append(Box(label=b.label.strip(), x=b.x, y=b.y, width=b.width, height=b.height,
                         confidence=b.confidence))
    return Answer(
        tuple(dict.fromkeys(b.label for b in boxes)), None, boxes=tuple(boxes),
        raw_labels=tuple(b.label for b in parsed.boxes), sources=tuple((i,) for i in range(len(boxes))),
    )


_PIXEL_SLACK = 0.5
"""A box may overrun the image by rounding (half a pixel), not more."""
