"""The expected value of a human review, for ordering the review queue: review first what teaches the most.

The score of an item, each term in [0, 1]::

    value = (w_u * uncertainty + w_d * disagreement + w_r * rarity) / (w_u + w_d + w_r)

- uncertainty: 1 - calibrated confidence of the proposed label (``margin`` mode: 1 - (p_top - p_second));
  an unscored proposal is fully uncertain (1);
- disagreement: share of ensemble members or samples that did not propose the label (0 when unknown);
- rarity: 1 - (n_label + 1) / (n_most_common + 1), with n counted over already reviewed labels, so the most
  common class scores 0 and a class no one has reviewed yet scores close to 1 (class balance).

The value is non-decreasing in uncertainty, disagreement and rarity, and non-increasing in confidence and in
how often the label was already reviewed. Ordering is greedy: the next item is the one with the highest

    value * (1 - diversity * max_similarity(item, the last ``window`` items queued))

where similarity is the cosine of TF-IDF vectors of character 3-5-grams, so near-duplicates are not queued in
a row (a reviewer learns nothing from the fifth copy of one email) but are not dropped either.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from sklearn.feature_extraction.text import TfidfVectorizer


@dataclass(frozen=True, slots=True)
class Weights:
    uncertainty: float = 1.0
    disagreement: float = 0.5
    rarity: float = 0.25

    def __post_init__(self) -> None:
        if min(self.uncertainty, self.disagreement, self.rarity) < 0 or self.total == 0:
            raise ValueError("weights must be non-negative and not all zero")

    @property
    def total(self) -> float:
        return self.uncertainty + self.disagreement + self.rarity


@dataclass(frozen=True, slots=True)
class Candidate:
    item_id: Hashable
    text: str
    label: Hashable | None
    """The proposed label (the first one for multi-label proposals)."""
    confidence: float | None = None
    """Calibrated confidence of the proposal; None when unscored."""
    second_confidence: float | None = None
    """Calibrated probability of the runner-up label, for the margin mode."""
    disagreement: float = 0.0


def uncertainty(candidate: Candidate, mode: Literal["confidence", "margin"] = "confidence") -> float:
    if candidate.confidence is None:
        return 1.0
    if mode == "margin":
        margin = candidate.confidence - (candidate.second_confidence or 0.0)
        return float(np.clip(1.0 - margin, 0.0, 1.0))
    return float(np.clip(1.0 - candidate.confidence, 0.0, 1.0))


def rarity(label: Hashable | None, reviewed_counts: Mapping[Any, int]) -> float:
    if label is None or not reviewed_counts:
        return 0.0
    most = max(reviewed_counts.values())
    return 1.0 - (reviewed_counts.get(label, 0) + 1) / (most + 1)


def review_value(
    candidate: Candidate,
    reviewed_counts: Mapping[Any, int] | None = None,
    *,
    weights: Weights = Weights(),
    mode: Literal["confidence", "margin"] = "confidence",
) -> float:
    """The expected value of reviewing ``candidate`` (see the module docstring), in [0, 1]."""
    counts = reviewed_counts or {}
    score = (
        weights.uncertainty * uncertainty(candidate, mode)
        + weights.disagreement * float(np.clip(candidate.disagreement, 0.0, 1.0))
        + weights.rarity * rarity(candidate.label, counts)
    )
    return score / weights.total


def text_similarity(texts: Sequence[str]) -> NDArray[np.float64]:
    """Pairwise cosine similarity of TF-IDF character 3-5-gram vectors (1 on the diagonal for non-empty)."""
    if not texts:
        return np.zeros((0, 0))
    vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), lowercase=True, sublinear_tf=True)
    try:
        matrix: Any = vectorizer.fit_transform(texts)
    except ValueError:  # every text empty or too short for a 3-gram
        return np.zeros((len(texts), len(texts)))
    # TF-IDF rows are L2-normalised, so the dot product is the cosine.
    return np.asarray((matrix @ matrix.T).toarray(), dtype=np.float64)


@dataclass(frozen=True, slots=True)
class Ranked:
    item_id: Hashable
    value: float
    adjusted: float
    """``value`` after the diversity penalty at the moment it was queued."""


def order_queue(
    candidates: Sequence[Candidate],
    reviewed_counts: Mapping[Any, int] | None = None,
    *,
    weights: Weights = Weights(),
    mode: Literal["confidence", "margin"] = "confidence",
    diversity: float = 0.5,
    window: int = 5,
    limit: int | None = None,
) -> list[Ranked]:
    """The queue order: greedy highest value after the near-duplicate penalty (see the module docstring).

    Costs O(n^2) memory for the similarity of n candidates: order a bounded pool (the top few thousand by
    ``review_value``), not the whole backlog. Ties keep the input order."""
    if not 0.0 <= diversity <= 1.0:
        raise ValueError("diversity must be in [0, 1]")
    n = len(candidates)
    values = np.array([review_value(c, reviewed_counts, weights=weights, mode=mode) for c in candidates])
    similarity = text_similarity([c.text for c in candidates]) if diversity > 0 and n > 1 else np.zeros((n, n))
    recent: deque[int] = deque(maxlen=max(window, 1))
    taken = np.zeros(n, dtype=bool)
    ranked: list[Ranked] = []
    for _ in range(n if limit is None else min(limit, n)):
        penalty = similarity[list(recent)].max(axis=0) if recent and diversity > 0 else np.zeros(n)
        adjusted = values * (1.0 - diversity * np.clip(penalty, 0.0, 1.0))
        adjusted[taken] = -np.inf
        best = int(np.argmax(adjusted))  # first maximum: ties keep the input order
        taken[best] = True
        recent.append(best)
        ranked.append(Ranked(candidates[best].item_id, float(values[best]), float(adjusted[best])))
    return ranked


def reviewed_label_counts(labels: Sequence[Hashable]) -> dict[Hashable, int]:
    """Counts of reviewed labels, the input of the rarity term."""
    return dict(Counter(labels))
