"""Consensus: one label per item from several reviewers (majority vote, Dawid-Skene), and reviewers' accuracy
on gold items.

Dawid-Skene (Dawid & Skene 1979, "Maximum likelihood estimation of observer error-rates using the EM
algorithm") weighs each reviewer by an estimated confusion matrix, so a careful minority can outvote careless
majorities. It comes from crowd-kit (the ``crowd`` extra; no torch needed), imported only when called.
"""

from __future__ import annotations

import warnings
from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ._stats import proportion_lower_bound


@dataclass(frozen=True, slots=True)
class Annotation:
    item: Hashable
    reviewer: Hashable
    label: Hashable


@dataclass(frozen=True, slots=True)
class Vote:
    label: Hashable
    support: float
    """Share of the item's annotations (majority vote) or posterior probability (Dawid-Skene) of ``label``."""
    n_annotations: int
    tied: bool = False
    """Majority vote only: several labels had the top count; the smallest by ``repr`` won, so the result is
    stable, but the item deserves another reviewer."""


def majority_vote(annotations: Iterable[Annotation]) -> dict[Hashable, Vote]:
    """The most frequent label per item; ties go to the smallest label by ``repr`` and are flagged."""
    by_item: dict[Hashable, Counter[Hashable]] = defaultdict(Counter)
    for a in annotations:
        by_item[a.item][a.label] += 1
    votes: dict[Hashable, Vote] = {}
    for item, counts in by_item.items():
        top = max(counts.values())
        winners = sorted((label for label, c in counts.items() if c == top), key=repr)
        total = sum(counts.values())
        votes[item] = Vote(winners[0], top / total, total, tied=len(winners) > 1)
    return votes


@dataclass(frozen=True)
class DawidSkeneResult:
    votes: Mapping[Hashable, Vote]
    posteriors: Mapping[Hashable, Mapping[Hashable, float]]
    """Per item, the posterior probability of each label."""
    reviewer_accuracy: Mapping[Hashable, float]
    """Per reviewer, the estimated probability of giving the true label (the confusion matrix's diagonal
    weighted by the label priors)."""
    priors: Mapping[Hashable, float]


def dawid_skene(annotations: Sequence[Annotation], *, n_iter: int = 100, tol: float = 1e-5) -> DawidSkeneResult:
    """Dawid-Skene EM over the annotations, via crowd-kit's ``DawidSkene``; initialised from majority vote."""
    try:
        import pandas as pd  # type: ignore[import-untyped]
        from crowdkit.aggregation import DawidSkene
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise ImportError("Dawid-Skene needs crowd-kit: install labelgate-quality[crowd]") from exc
    if not annotations:
        return DawidSkeneResult({}, {}, {}, {})
    # crowd-kit wants plain columns; keep our own hashables through integer codes.
    items = {item: i for i, item in enumerate(dict.fromkeys(a.item for a in annotations))}
    reviewers = {r: i for i, r in enumerate(dict.fromkeys(a.reviewer for a in annotations))}
    labels = {label: i for i, label in enumerate(dict.fromkeys(a.label for a in annotations))}
    item_of = {i: item for item, i in items.items()}
    reviewer_of = {i: r for r, i in reviewers.items()}
    label_of = {i: label for label, i in labels.items()}
    frame = pd.DataFrame(
        {
            "task": [items[a.item] for a in annotations],
            "worker": [reviewers[a.reviewer] for a in annotations],
            "label": [labels[a.label] for a in annotations],
        }
    )
    model: Any = DawidSkene(n_iter=n_iter, tol=tol)
    with warnings.catch_warnings():
        # crowd-kit 1.4 still passes inplace=/copy= to pandas, deprecated in pandas 3 (removed in 4).
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        model.fit(frame)
    probas: Any = model.probas_
    counts = frame.groupby("task").size()
    posteriors: dict[Hashable, dict[Hashable, float]] = {}
    votes: dict[Hashable, Vote] = {}
    for task, row in probas.iterrows():
        dist = {label_of[int(code)]: float(p) for code, p in row.items()}
        posteriors[item_of[int(task)]] = dist
        best = max(dist.items(), key=lambda kv: (kv[1], -labels[kv[0]]))
        votes[item_of[int(task)]] = Vote(best[0], best[1], int(counts[task]))
    priors_series: Any = model.priors_
    priors = {label_of[int(code)]: float(p) for code, p in priors_series.items()}
    errors: Any = model.errors_  # index (worker, observed label), columns true label: P(observed | true)
    accuracy: dict[Hashable, float] = {}
    for worker_code, worker_id in reviewer_of.items():
        confusion = errors.loc[worker_code]
        accuracy[worker_id] = float(
            sum(
                priors[label_of[int(true)]] * float(confusion.loc[true, true])
                for true in confusion.columns
                if true in confusion.index
            )
        )
    return DawidSkeneResult(votes=votes, posteriors=posteriors, reviewer_accuracy=accuracy, priors=priors)


@dataclass(frozen=True, slots=True)
class ReviewerAccuracy:
    reviewer: Hashable
    n_gold: int
    n_correct: int
    lower_bound: float
    """One-sided 95% Wilson lower bound: a reviewer with 3 of 3 right is not yet known to be good."""

    @property
    def accuracy(self) -> float:
        return self.n_correct / self.n_gold


def reviewer_accuracy(
    annotations: Iterable[Annotation], gold: Mapping[Any, Hashable], *, confidence_level: float = 0.95
) -> dict[Hashable, ReviewerAccuracy]:
    """Each reviewer's accuracy on the gold items they labeled (other items are ignored)."""
    seen: Counter[Hashable] = Counter()
    right: Counter[Hashable] = Counter()
    for a in annotations:
        if a.item in gold:
            seen[a.reviewer] += 1
            right[a.reviewer] += a.label == gold[a.item]
    reviewers = list(seen)
    bounds = proportion_lower_bound(
        [right[r] for r in reviewers], [seen[r] for r in reviewers], confidence_level, "wilson"
    )
    return {
        r: ReviewerAccuracy(r, seen[r], right[r], float(b)) for r, b in zip(reviewers, bounds, strict=True)
    }
