"""Validation of a model's answer against the task's label schema, before anything uses it."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from labelgate_core.events import TaskSpec, TaskType

_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)


class InvalidOutputError(ValueError):
    """The answer is not JSON, does not fit the schema, or names a label the task does not have."""


class _Single(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    label: str
    confidence: Annotated[float, Field(ge=0, le=1)] | None = None


class _Multi(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    labels: list[str]
    confidence: Annotated[float, Field(ge=0, le=1)] | None = None


@dataclass(frozen=True, slots=True)
class Answer:
    labels: tuple[str, ...]
    verbalized: float | None


def parse_answer(content: str | None, task: TaskSpec) -> Answer:
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
            multi = _Multi.model_validate(data)
            labels = tuple(dict.fromkeys(label.strip() for label in multi.labels))
            verbalized = multi.confidence
        else:
            single = _Single.model_validate(data)
            labels = (single.label.strip(),)
            verbalized = single.confidence
    except ValidationError as exc:
        raise InvalidOutputError(f"does not fit the schema: {exc.errors()[0]['msg']}") from exc
    unknown = [label for label in labels if label not in allowed]
    if unknown:
        raise InvalidOutputError(f"labels outside the schema: {unknown[:5]}")
    return Answer(labels, verbalized)
