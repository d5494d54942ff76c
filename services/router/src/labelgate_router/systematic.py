"""Systematic errors of a project's AI, from the router's reviewed outcomes: the confusion between AI and
human labels, and the labels (overall and per metadata slice) the AI is consistently wrong on.

Pure code over the outcome documents the router keeps: the same function feeds the read API and the set of
unreliable labels that routing applies (``RoutingPolicy.exclude_unreliable_labels``)."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from labelgate_quality.issues import LabelReliability, confusion, label_reliability


@dataclass(frozen=True)
class SystematicErrors:
    reviewed: int
    """Reviewed outcomes with an AI label that the figures rest on."""
    leaked: int
    """Reviewed outcomes left out because the item duplicates the model's own examples."""
    labels: list[LabelReliability]
    slices: list[LabelReliability]
    classes: tuple[str, ...]
    matrix: list[list[int]]
    """``matrix[i][j]``: reviewed items humans labeled ``classes[i]`` that the AI labeled ``classes[j]``."""

    @property
    def unreliable_labels(self) -> frozenset[str]:
        return frozenset(r.label for r in self.labels if r.unreliable)


def usable_outcomes(outcomes: Sequence[Mapping[str, Any]], leaked: Collection[str]) -> list[Mapping[str, Any]]:
    """Outcomes that may measure the AI: single-label, proposed by a model, and not of a leaked item (a
    memorised answer says nothing about how the model does on new items)."""
    return [
        doc
        for doc in outcomes
        if doc["item_id"] not in leaked and len(doc.get("ai_labels") or []) == 1 and len(doc.get("labels") or []) == 1
    ]


def systematic_errors(
    outcomes: Sequence[Mapping[str, Any]],
    metadata: Mapping[str, Mapping[str, Any]],
    leaked: Collection[str],
    *,
    min_support: int,
    min_accuracy: float,
    confidence_level: float = 0.95,
) -> SystematicErrors:
    """The report over ``outcomes`` (the router's outcome documents), sliced by each item's ``metadata``."""
    usable = usable_outcomes(outcomes, leaked)
    ai = [str(doc["ai_labels"][0]) for doc in usable]
    human = [str(doc["labels"][0]) for doc in usable]
    slices = [metadata.get(str(doc["item_id"]), {}) for doc in usable]
    overall, sliced = label_reliability(
        ai,
        human,
        slices=slices,
        min_support=min_support,
        min_accuracy=min_accuracy,
        confidence_level=confidence_level,
    )
    table = confusion(human, ai) if usable else None
    return SystematicErrors(
        reviewed=len(usable),
        leaked=sum(1 for doc in outcomes if doc["item_id"] in leaked),
        labels=overall,
        slices=sliced,
        classes=tuple(str(c) for c in table.classes) if table else (),
        matrix=table.matrix.tolist() if table else [],
    )
