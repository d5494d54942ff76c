"""Agreement between raters (AI vs human, human vs human): kappas, Krippendorff's alpha, span F1 for entities,
IoU for boxes, and the labels whose guidelines people read differently.

Degenerate cases return None (undefined) rather than NaN, so callers can skip them without checking floats:
fewer than two ratings, or no variation at all where the statistic divides by zero. One exception follows the
metrics service: when both raters used one and the same class for every item they never disagreed, and
Cohen's kappa is reported as 1.0 rather than undefined.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import krippendorff
import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import cohen_kappa_score

from ._stats import counts_table, fleiss_kappa_of_table

Level = Literal["nominal", "ordinal", "interval", "ratio"]


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


# -- kappas and alpha ------------------------------------------------------------------------------------


def cohen_kappa(
    first: Sequence[Hashable],
    second: Sequence[Hashable],
    *,
    weights: Literal["linear", "quadratic"] | None = None,
) -> float | None:
    """Cohen's kappa of two raters over the same items (sklearn); weights only for ordered numeric labels."""
    if len(first) != len(second):
        raise ValueError(f"{len(first)} ratings against {len(second)}")
    if len(first) < 2:
        return None
    if len(set(first) | set(second)) == 1:
        return 1.0
    return _finite(float(cohen_kappa_score(list(first), list(second), weights=weights)))


def fleiss_kappa(ratings: Sequence[Sequence[Hashable]]) -> float | None:
    """Fleiss' kappa (statsmodels) of an items x raters matrix of labels; every item needs the same number
    (≥ 2) of ratings. Labels may be any hashable values."""
    if not ratings:
        return None
    raters = {len(row) for row in ratings}
    if len(raters) != 1 or raters.pop() < 2:
        raise ValueError("every item needs the same number (at least 2) of ratings")
    categories = sorted({label for row in ratings for label in row}, key=repr)
    if len(categories) == 1:
        return 1.0
    code = {label: i for i, label in enumerate(categories)}
    table = counts_table([[code[label] for label in row] for row in ratings])
    return fleiss_kappa_from_table(table)


def fleiss_kappa_from_table(table: Sequence[Sequence[float]] | np.ndarray) -> float | None:
    """Fleiss' kappa from an items x categories table of counts (the layout of Fleiss 1971, Table 1)."""
    return _finite(fleiss_kappa_of_table(table))


def krippendorff_alpha(
    reliability_data: Sequence[Sequence[float | Hashable | None]],
    level: Level = "nominal",
    *,
    order: Sequence[Hashable] | None = None,
) -> float | None:
    """Krippendorff's alpha (krippendorff package) of a coders x units matrix; None marks a missing rating.

    Nominal data may use any hashable labels. Ordinal data may be numbers or labels with an explicit ``order``
    (lowest first); interval and ratio data must be numbers."""
    rows = [list(row) for row in reliability_data]
    if len({len(row) for row in rows}) > 1:
        raise ValueError("every coder's row must cover the same units (use None for a missing rating)")
    present = [v for row in rows for v in row if v is not None and not _is_nan(v)]
    if len(set(present)) < 2:
        return None
    if order is not None:
        rank = {label: float(i) for i, label in enumerate(order)}
        unknown = set(present) - set(rank)
        if unknown:
            raise ValueError(f"values missing from order: {sorted(map(repr, unknown))}")
        coded = [[math.nan if v is None or _is_nan(v) else rank[v] for v in row] for row in rows]
    elif level == "nominal" and not all(isinstance(v, int | float) for v in present):
        code = {label: float(i) for i, label in enumerate(sorted(set(present), key=repr))}
        coded = [[math.nan if v is None or _is_nan(v) else code[v] for v in row] for row in rows]
    else:
        coded = [[math.nan if v is None else float(v) for v in row] for row in rows]  # type: ignore[arg-type]
    data = np.asarray(coded, dtype=np.float64)
    # Units rated by fewer than two coders carry no pairable values; krippendorff needs at least one pair.
    if not (np.sum(~np.isnan(data), axis=0) >= 2).any():
        return None
    return _finite(float(krippendorff.alpha(reliability_data=data, level_of_measurement=level)))


def _is_nan(value: object) -> bool:
    return isinstance(value, float) and math.isnan(value)


# -- entities: span F1 -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Span:
    start: int
    end: int
    """Exclusive, as in Python slices."""
    label: str

    def overlaps(self, other: Span) -> bool:
        return self.label == other.label and self.start < other.end and other.start < self.end


@dataclass(frozen=True, slots=True)
class PRF:
    true_positives: int
    false_positives: int
    false_negatives: int

    @property
    def precision(self) -> float | None:
        predicted = self.true_positives + self.false_positives
        return self.true_positives / predicted if predicted else None

    @property
    def recall(self) -> float | None:
        actual = self.true_positives + self.false_negatives
        return self.true_positives / actual if actual else None

    @property
    def f1(self) -> float | None:
        denominator = 2 * self.true_positives + self.false_positives + self.false_negatives
        return 2 * self.true_positives / denominator if denominator else None

    def __add__(self, other: PRF) -> PRF:
        return PRF(
            self.true_positives + other.true_positives,
            self.false_positives + other.false_positives,
            self.false_negatives + other.false_negatives,
        )


def span_prf(gold: Iterable[Span], predicted: Iterable[Span], match: Literal["exact", "overlap"] = "exact") -> PRF:
    """True/false positives of one document's predicted spans against the reference spans.

    ``exact``: same start, end and label. ``overlap``: same label and overlapping ranges; each span matches at
    most one span of the other side (a one-to-one assignment maximising the number of matches)."""
    gold_spans, predicted_spans = sorted(set(gold), key=_span_key), sorted(set(predicted), key=_span_key)
    if match == "exact":
        tp = len(set(gold_spans) & set(predicted_spans))
    else:
        matrix = np.array([[p.overlaps(g) for g in gold_spans] for p in predicted_spans], dtype=np.float64)
        if matrix.size:
            rows, cols = linear_sum_assignment(matrix, maximize=True)
            tp = int(matrix[rows, cols].sum())
        else:
            tp = 0
    return PRF(tp, len(predicted_spans) - tp, len(gold_spans) - tp)


def _span_key(span: Span) -> tuple[int, int, str]:
    return span.start, span.end, span.label


def span_f1(
    gold: Sequence[Iterable[Span]],
    predicted: Sequence[Iterable[Span]],
    match: Literal["exact", "overlap"] = "exact",
) -> PRF:
    """Micro-averaged span precision/recall/F1 over documents (``gold[i]`` against ``predicted[i]``)."""
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} reference documents against {len(predicted)}")
    total = PRF(0, 0, 0)
    for g, p in zip(gold, predicted, strict=True):
        total += span_prf(g, p, match)
    return total


# -- boxes: IoU ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Box:
    x0: float
    y0: float
    x1: float
    y1: float
    label: str | None = None

    @property
    def area(self) -> float:
        return max(0.0, self.x1 - self.x0) * max(0.0, self.y1 - self.y0)


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes (0 when they do not touch or both are empty)."""
    width = min(a.x1, b.x1) - max(a.x0, b.x0)
    height = min(a.y1, b.y1) - max(a.y0, b.y0)
    intersection = max(0.0, width) * max(0.0, height)
    union = a.area + b.area - intersection
    return intersection / union if union > 0 else 0.0


@dataclass(frozen=True, slots=True)
class BoxMatch:
    pairs: tuple[tuple[int, int, float], ...]
    """(gold index, predicted index, IoU) of each matched pair."""
    unmatched_gold: tuple[int, ...]
    unmatched_predicted: tuple[int, ...]
    mean_iou: float | None
    """Sum of matched IoUs over max(#gold, #predicted): a missed or extra box counts as IoU 0.
    None when both sides are empty."""


def match_boxes(gold: Sequence[Box], predicted: Sequence[Box], *, min_iou: float = 0.5) -> BoxMatch:
    """One-to-one matching that maximises total IoU (Hungarian), between boxes of the same label (labels are
    ignored when either box has none); pairs below ``min_iou`` stay unmatched."""
    scores = np.zeros((len(gold), len(predicted)))
    for i, g in enumerate(gold):
        for j, p in enumerate(predicted):
            if g.label is None or p.label is None or g.label == p.label:
                scores[i, j] = iou(g, p)
    pairs: list[tuple[int, int, float]] = []
    if scores.size:
        rows, cols = linear_sum_assignment(scores, maximize=True)
        pairs = [(int(i), int(j), float(scores[i, j])) for i, j in zip(rows, cols, strict=True)]
        pairs = [pair for pair in pairs if pair[2] >= min_iou and pair[2] > 0]
    matched_gold = {i for i, _, _ in pairs}
    matched_predicted = {j for _, j, _ in pairs}
    denominator = max(len(gold), len(predicted))
    return BoxMatch(
        pairs=tuple(pairs),
        unmatched_gold=tuple(i for i in range(len(gold)) if i not in matched_gold),
        unmatched_predicted=tuple(j for j in range(len(predicted)) if j not in matched_predicted),
        mean_iou=sum(score for _, _, score in pairs) / denominator if denominator else None,
    )


def mean_iou(gold: Sequence[Box], predicted: Sequence[Box], *, min_iou: float = 0.0) -> float | None:
    """Mean IoU after optimal matching; see ``match_boxes``."""
    return match_boxes(gold, predicted, min_iou=min_iou).mean_iou


# -- ambiguous guidelines --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LabelAgreement:
    label: str
    support: int
    """How many ratings used the label, on items rated by at least two people."""
    specific_agreement: float | None
    """Of the rater pairs on an item where one used the label, the share where the other did too."""
    ambiguous: bool


def label_agreement(
    ratings: Mapping[Any, Sequence[Hashable]],
    *,
    threshold: float = 0.6,
    min_support: int = 10,
) -> list[LabelAgreement]:
    """Per-label human-vs-human agreement from several people's labels per item, lowest first; labels with
    enough support and agreement below ``threshold`` are flagged ``ambiguous``: their guideline is read
    differently by different people.

    The statistic is category-specific (positive) agreement, ps_j = sum_i n_ij (n_ij - 1) / sum_i n_ij
    (n_i - 1), with n_ij the ratings of label j on item i and n_i the item's ratings (Fleiss 1971, sec. 3;
    Uebersax 1982). Unlike a per-label kappa it needs no fixed number of raters per item."""
    agreeing: dict[str, float] = defaultdict(float)
    possible: dict[str, float] = defaultdict(float)
    support: Counter[str] = Counter()
    for labels in ratings.values():
        n = len(labels)
        if n < 2:
            continue
        for label, count in Counter(str(label) for label in labels).items():
            agreeing[label] += count * (count - 1)
            possible[label] += count * (n - 1)
            support[label] += count
    out = []
    for label in support:
        agreement = agreeing[label] / possible[label] if possible[label] else None
        out.append(
            LabelAgreement(
                label=label,
                support=support[label],
                specific_agreement=agreement,
                ambiguous=agreement is not None and support[label] >= min_support and agreement < threshold,
            )
        )
    return sorted(out, key=lambda a: (a.specific_agreement if a.specific_agreement is not None else 2.0, a.label))


def ambiguous_labels(
    ratings: Mapping[Any, Sequence[Hashable]], *, threshold: float = 0.6, min_support: int = 10
) -> list[str]:
    """The labels whose human-vs-human agreement is below ``threshold`` (see ``label_agreement``)."""
    return [a.label for a in label_agreement(ratings, threshold=threshold, min_support=min_support) if a.ambiguous]
