"""Gold items: items with a known answer, mixed into reviewers' queues to measure each reviewer's accuracy.

The answer stays in the review API (never on an event, never shown); the item's final label is its answer."""

from __future__ import annotations

from collections.abc import Sequence, Set

from labelgate_core.events import TaskSpec
from labelgate_core.store.port import Doc
from labelgate_quality.consensus import Annotation, reviewer_accuracy

from .annotations import check_labels
from .errors import InvalidItemError, InvalidLabelsError
from .overlap import OVERLAP_TASK_TYPES
from .schemas import GoldCreate, ReviewerPublic


def check_gold(spec: TaskSpec, gold: GoldCreate, where: str) -> Doc:
    """The stored form of a submitted gold answer, checked against the project's labels; a 422 naming the item
    (``where``) otherwise."""
    if spec.type not in OVERLAP_TASK_TYPES:
        raise InvalidItemError(
            f"{where}.gold: gold items are supported for classification and multi-label projects, not {spec.type.value}"
        )
    try:
        labels = check_labels(spec, gold.labels)
    except InvalidLabelsError as exc:
        raise InvalidLabelsError(f"{where}.gold: {exc.message}", details=exc.details) from exc
    return {"labels": list(labels)}


def reviewers_public(
    reviewers: Sequence[Doc], gold_reviews: Sequence[Doc], *, leaked: Set[str] = frozenset()
) -> list[ReviewerPublic]:
    """Each reviewer's answers, and their accuracy on gold items with its Wilson lower bound. Answers to the gold
    items in ``leaked`` (whose proposal leaked a training item) are left out of the accuracy and counted apart."""
    scoring = [r for r in gold_reviews if r["item_id"] not in leaked]
    leaked_items: dict[str, set[str]] = {}
    for r in gold_reviews:
        if r["item_id"] in leaked:
            leaked_items.setdefault(r["reviewer_id"], set()).add(r["item_id"])
    # One annotation per gold answer, labelled by whether it was right: the gold answer of each is True.
    annotations = [Annotation(r["_id"], r["reviewer_id"], bool(r.get("gold_correct"))) for r in scoring]
    accuracy = reviewer_accuracy(annotations, {r["_id"]: True for r in scoring})
    out = []
    for doc in reviewers:
        scored = accuracy.get(doc["reviewer_id"])
        out.append(
            ReviewerPublic(
                reviewer_id=doc["reviewer_id"],
                reviews=int(doc.get("reviews") or 0),
                gold_reviews=scored.n_gold if scored else 0,
                gold_correct=scored.n_correct if scored else 0,
                gold_accuracy=scored.accuracy if scored else None,
                gold_accuracy_lower_bound=scored.lower_bound if scored else None,
                leaked_gold_items=len(leaked_items.get(doc["reviewer_id"], ())),
            )
        )
    return out
