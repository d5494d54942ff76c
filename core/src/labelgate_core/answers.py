"""The JSON a language model answers with, per task type: what the labeler asks models for and shows in its
few-shot examples, and what the fine-tuning export writes as the assistant's turn, so that a model tuned on
Labelgate's exports answers in the shape the labeler parses."""

from __future__ import annotations

import json
from collections.abc import Sequence

from .events import Box, Span, TaskSpec, TaskType


def answer_json(task: TaskSpec, labels: Sequence[str], spans: Sequence[Span] = (), boxes: Sequence[Box] = ()) -> str:
    """``{"label": …}`` (single-label), ``{"labels": {name: bool, …}}`` (multi-label: a yes/no per label of the
    schema), ``{"entities": [{text, start, end, type}]}`` or ``{"boxes": [{label, x, y, width, height}]}``."""
    if task.type is TaskType.multi_label:
        chosen = set(labels)
        return json.dumps({"labels": {name: name in chosen for name in task.label_names}}, ensure_ascii=False)
    if task.type is TaskType.entities:
        entities = [{"text": s.text, "start": s.start, "end": s.end, "type": s.label} for s in spans]
        return json.dumps({"entities": entities}, ensure_ascii=False)
    if task.type is TaskType.boxes:
        out = [{"label": b.label, "x": b.x, "y": b.y, "width": b.width, "height": b.height} for b in boxes]
        return json.dumps({"boxes": out}, ensure_ascii=False)
    return json.dumps({"label": labels[0] if labels else ""}, ensure_ascii=False)
