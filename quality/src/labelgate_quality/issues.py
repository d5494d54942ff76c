"""Systematic errors: likely label errors among final labels (confident learning, via cleanlab) and the
confusion between AI and human labels by class.

cleanlab needs out-of-sample predicted probabilities: a model's probabilities on items it was trained on
agree with their labels by construction and hide every error. ``cross_validated_probabilities`` produces them
for text with a small TF-IDF + logistic regression model when the caller has no better model at hand.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import confusion_matrix
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline


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
    ranked: Any = _find(given, probs, filter_by=filter_by, return_indices_ranked_by="self_confidence")
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
