"""Systematic errors: likely label errors among final labels (confident learning, via cleanlab), the
confusion between AI and human labels by class, and the labels (per slice) the AI is consistently wrong on.

cleanlab needs out-of-sample predicted probabilities: a model's probabilities on items it was trained on
agree with their labels by construction and hide every error. ``cross_validated_probabilities`` produces them
for text with a small TF-IDF + logistic regression model when the caller has no better model at hand.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import confusion_matrix
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline

from ._stats import proportion_lower_bound


@dataclass(frozen=True, slots=True)
class LabelIssue:
    index: int
    """Position of the item in the input."""
    given: Hashable
    suggested: Hashable
    """The class the out-of-sample model finds most likely."""
    label_quality: float
    """cleanlab's self-confidence: the probability the model gives the given label (lower is worse)."""


def find_label_issues(
    labels: Sequence[Hashable],
    pred_probs: ArrayLike,
    classes: Sequence[Hashable],
    *,
    filter_by: str = "prune_by_noise_rate",
) -> list[LabelIssue]:
    """Items whose given label is likely wrong, worst first (cleanlab ``find_label_issues``).

    ``pred_probs[i, k]`` is the out-of-sample probability of ``classes[k]`` for item i; every class should
    occur among ``labels``."""
    from cleanlab.filter import find_label_issues as _find  # type: ignore[import-untyped]

    probs = np.asarray(pred_probs, dtype=np.float64)
    code = {c: k for k, c in enumerate(classes)}
    if probs.shape != (len(labels), len(classes)):
        raise ValueError(f"pred_probs has shape {probs.shape}, expected ({len(labels)}, {len(classes)})")
    unknown = {label for label in labels if label not in code}
    if unknown:
        raise ValueError(f"labels not among classes: {sorted(map(repr, unknown))}")
    given = np.array([code[label] for label in labels])
    # One process: cleanlab's default forks a pool, which can deadlock inside a threaded server (the router runs
    # this in a worker thread of its event loop), and costs more than it saves on a project's finals.
    ranked: Any = _find(given, probs, filter_by=filter_by, return_indices_ranked_by="self_confidence", n_jobs=1)
    return [
        LabelIssue(
            index=int(i),
            given=labels[int(i)],
            suggested=classes[int(np.argmax(probs[int(i)]))],
            label_quality=float(probs[int(i), given[int(i)]]),
        )
        for i in ranked
    ]


def cross_validated_probabilities(
    texts: Sequence[str], labels: Sequence[Hashable], classes: Sequence[Hashable], *, folds: int = 5, seed: int = 0
) -> NDArray[np.float64]:
    """Out-of-sample class probabilities (columns in ``classes`` order) from a TF-IDF word/bigram logistic
    regression, each item predicted by a model fitted on the other folds."""
    code = {c: k for k, c in enumerate(classes)}
    y = np.array([code[label] for label in labels])
    smallest = int(np.bincount(y, minlength=len(classes)).min())
    if smallest < 2:
        raise ValueError("every class needs at least 2 items for cross-validation")
    model = make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), min_df=1, sublinear_tf=True), LogisticRegression(max_iter=1000)
    )
    splitter = StratifiedKFold(n_splits=min(folds, smallest), shuffle=True, random_state=seed)
    probs: Any = cross_val_predict(model, list(texts), y, cv=splitter, method="predict_proba")
    return np.asarray(probs, dtype=np.float64)


@dataclass(frozen=True)
class Confusion:
    classes: tuple[Hashable, ...]
    matrix: NDArray[np.int64]
    """``matrix[i, j]``: items humans labeled ``classes[i]`` that the AI labeled ``classes[j]``."""

    def top_confusions(self, n: int = 5) -> list[tuple[Hashable, Hashable, int]]:
        """The most frequent (human label, AI label, count) disagreements."""
        off = [
            (self.classes[i], self.classes[j], int(self.matrix[i, j]))
            for i in range(len(self.classes))
            for j in range(len(self.classes))
            if i != j and self.matrix[i, j] > 0
        ]
        return sorted(off, key=lambda t: -t[2])[:n]


def confusion(
    human: Sequence[Hashable], ai: Sequence[Hashable], classes: Sequence[Hashable] | None = None
) -> Confusion:
    """Confusion of AI labels against human labels (rows human, columns AI)."""
    names = tuple(classes) if classes is not None else tuple(sorted(set(human) | set(ai), key=repr))
    code = {c: k for k, c in enumerate(names)}
    matrix = confusion_matrix(
        [code[h] for h in human], [code[a] for a in ai], labels=list(range(len(names)))
    )
    return Confusion(names, np.asarray(matrix, dtype=np.int64))


# -- where the AI is consistently wrong ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LabelReliability:
    """How often a human kept the AI's label when the AI proposed ``label`` (within one slice, or overall)."""

    label: str
    support: int
    """Reviewed items where the AI proposed ``label``."""
    correct: int
    """Of those, the items the human labeled ``label`` too."""
    accuracy: float
    lower_bound: float
    upper_bound: float
    """Wilson confidence interval of the accuracy, each bound one-sided at the requested level."""
    unreliable: bool
    """Enough support, and even the upper bound is below the required accuracy: consistently wrong."""
    mistaken_for: dict[str, int]
    """What humans said instead, when they disagreed: label → count."""
    slice_field: str | None = None
    slice_value: str | None = None


def label_reliability(
    ai_labels: Sequence[str | None],
    human_labels: Sequence[str],
    *,
    slices: Sequence[Mapping[str, object]] | None = None,
    min_support: int = 20,
    min_accuracy: float = 0.8,
    confidence_level: float = 0.95,
) -> tuple[list[LabelReliability], list[LabelReliability]]:
    """AI accuracy per proposed label, overall and per slice (``slices[i]`` holds item i's metadata fields:
    each scalar ``field=value`` pair is a slice), worst lower bound first.

    A label is unreliable when it has at least ``min_support`` reviewed items and the upper confidence bound of
    its accuracy is below ``min_accuracy``: the AI is wrong on it more often than allowed, beyond chance. Slices
    with fewer than ``min_support`` items are left out (a per-item id would otherwise make one slice per item).
    Items the AI proposed no label for (cold start) say nothing about its labels and are skipped."""
    if len(ai_labels) != len(human_labels):
        raise ValueError(f"{len(ai_labels)} AI labels but {len(human_labels)} human labels")
    if slices is not None and len(slices) != len(ai_labels):
        raise ValueError(f"{len(ai_labels)} labels but {len(slices)} slice records")
    if not 0.0 < min_accuracy <= 1.0:
        raise ValueError("min_accuracy must be in (0, 1]")
    groups: dict[tuple[str | None, str | None, str], list[str]] = {}
    for i, (ai, human) in enumerate(zip(ai_labels, human_labels, strict=True)):
        if ai is None:
            continue
        groups.setdefault((None, None, ai), []).append(human)
        for name, value in (slices[i] if slices is not None else {}).items():
            if isinstance(value, str | int | bool) and not isinstance(value, float):
                groups.setdefault((str(name), str(value), ai), []).append(human)
    keys = [k for k, humans in groups.items() if k[0] is None or len(humans) >= min_support]
    if not keys:
        return [], []
    support = np.array([len(groups[k]) for k in keys], dtype=np.float64)
    correct = np.array([sum(h == k[2] for h in groups[k]) for k in keys], dtype=np.float64)
    lower = proportion_lower_bound(correct, support, confidence_level)
    upper = 1.0 - proportion_lower_bound(support - correct, support, confidence_level)
    overall: list[LabelReliability] = []
    sliced: list[LabelReliability] = []
    for i, (field_name, value, label) in enumerate(keys):
        wrong = Counter(h for h in groups[(field_name, value, label)] if h != label)
        row = LabelReliability(
            label=label,
            support=int(support[i]),
            correct=int(correct[i]),
            accuracy=float(correct[i] / support[i]),
            lower_bound=float(lower[i]),
            upper_bound=float(upper[i]),
            unreliable=bool(support[i] >= min_support and upper[i] < min_accuracy),
            mistaken_for=dict(wrong.most_common()),
            slice_field=field_name,
            slice_value=value,
        )
        (overall if field_name is None else sliced).append(row)
    return sorted(overall, key=_worst_first), sorted(sliced, key=_worst_first)


def _worst_first(row: LabelReliability) -> tuple[float, str, str, str]:
    return row.lower_bound, row.label, row.slice_field or "", row.slice_value or ""
