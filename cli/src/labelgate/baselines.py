"""What the gate's labels are worth against the alternatives, computed from one replay's records: every item
reviewed by hand (all-human), no review at all (AI-only), and the same number of reviews spent on a random
sample instead of the routed items; plus the budget curve (final quality against the share reviewed) for the
router's confidence ordering and for random review, and the cost per label under a stated price model.

Only the gate's own figures were produced by the pipeline; the baselines re-use its proposals. A model trained on
a random sample of reviews would have made somewhat different proposals, so the random-review figures are a
simulation on the gate's proposals, not a second run."""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from numpy.typing import NDArray

from labelgate_quality.agreement import Span
from labelgate_quality.economics import cost_report

TaskKind = Literal["classification", "multi_label", "entities"]
IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]

PRIMARY_METRIC: dict[str, str] = {"classification": "accuracy", "multi_label": "micro_f1", "entities": "span_f1"}
"""The figure the budget curve and the targets are stated in, per task: accuracy for one label per item, F1 where
an item holds several labels or mentions (most of Reuters' items hold none, so accuracy would flatter)."""


@dataclass(frozen=True)
class ItemRecord:
    """One replayed item: its gold answer, what the model proposed, what became final, and how."""

    gold_labels: tuple[str, ...]
    ai_labels: tuple[str, ...]
    final_labels: tuple[str, ...]
    reviewed: bool
    """Its final label came from a review (anything not auto-accepted)."""
    confidence: float | None = None
    """The proposal's raw confidence; None when the model could not score it (or there was no model yet)."""
    calibrated_confidence: float | None = None
    """The confidence the router compared with its threshold (calibrated when a calibration existed)."""
    gold_spans: tuple[Span, ...] = ()
    ai_spans: tuple[Span, ...] = ()
    final_spans: tuple[Span, ...] = ()


@dataclass(frozen=True)
class PriceModel:
    """What a label costs: reviewer time at an hourly rate, plus what the model costs per item."""

    review_seconds: float = 30.0
    hourly_rate_usd: float = 30.0
    model_cost_per_item_usd: float = 0.0

    def describe(self) -> str:
        model = "$0" if self.model_cost_per_item_usd == 0 else f"${self.model_cost_per_item_usd:g}/item"
        return f"reviewer {self.review_seconds:g} s/item at ${self.hourly_rate_usd:g}/h, model {model}"


# -- per-item outcomes as counts ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcomes:
    """Per item and label: true positives, false positives, false negatives of the AI's answer and of a
    reviewer's (gold) answer, plus whether the AI's answer was entirely right. Any mix of reviewed and
    unreviewed items is scored by picking, item by item, one of the two rows, so the baselines and the budget
    curve need no re-scoring."""

    task: TaskKind
    labels: tuple[str, ...]
    ai: IntArray
    """Shape (items, labels, 3): tp, fp, fn."""
    gold: IntArray
    ai_correct: BoolArray

    @property
    def n(self) -> int:
        return int(self.ai_correct.size)

    def score(self, reviewed: BoolArray) -> dict[str, float | None]:
        """Quality of the final labels when exactly the ``reviewed`` items are reviewed (and then right)."""
        counts = np.where(reviewed[:, None, None], self.gold, self.ai).sum(axis=0)
        correct = reviewed | self.ai_correct
        return _metrics(self.task, counts, float(correct.mean()) if self.n else None)


def _metrics(task: TaskKind, counts: IntArray, accuracy: float | None) -> dict[str, float | None]:
    tp, fp, fn = (int(v) for v in counts.sum(axis=0))
    if task == "classification":
        return {"accuracy": accuracy, "macro_f1": _macro_f1(counts)}
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else None
    if task == "multi_label":
        return {
            "accuracy": accuracy,
            "micro_precision": precision,
            "micro_recall": recall,
            "micro_f1": _f1(tp, fp, fn),
            "macro_f1": _macro_f1(counts),
        }
    return {
        "accuracy": accuracy,
        "span_precision": precision,
        "span_recall": recall,
        "span_f1": _f1(tp, fp, fn),
        "macro_f1": _macro_f1(counts),
    }


def _f1(tp: int, fp: int, fn: int) -> float | None:
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None


def _macro_f1(counts: IntArray) -> float | None:
    """Mean F1 over the labels that occur in the gold or the predicted answers (a label nobody used has none)."""
    scores = [_f1(int(tp), int(fp), int(fn)) for tp, fp, fn in counts]
    present = [s for s in scores if s is not None]
    return sum(present) / len(present) if present else None


def _label_counts(predicted: Iterable[str], gold: Iterable[str], index: Mapping[str, int]) -> IntArray:
    out = np.zeros((len(index), 3), dtype=np.int64)
    p, g = set(predicted), set(gold)
    for label in p | g:
        row = index[label]
        out[row, 0 if label in p and label in g else 1 if label in p else 2] += 1
    return out


def _span_counts(predicted: Iterable[Span], gold: Iterable[Span], index: Mapping[str, int]) -> IntArray:
    """Exact-match span counts per label (same start, end and type), as ``span_prf(match="exact")`` counts."""
    out = np.zeros((len(index), 3), dtype=np.int64)
    p, g = set(predicted), set(gold)
    for span in p & g:
        out[index[span.label], 0] += 1
    for span in p - g:
        out[index[span.label], 1] += 1
    for span in g - p:
        out[index[span.label], 2] += 1
    return out


def _label_index(records: Sequence[ItemRecord], task: TaskKind) -> dict[str, int]:
    names: set[str] = set()
    for r in records:
        if task == "entities":
            names.update(s.label for s in (*r.gold_spans, *r.ai_spans, *r.final_spans))
        else:
            names.update((*r.gold_labels, *r.ai_labels, *r.final_labels))
    return {name: i for i, name in enumerate(sorted(names))}


def _counts(
    record: ItemRecord, which: Literal["ai", "final", "gold"], task: TaskKind, index: Mapping[str, int]
) -> IntArray:
    if task == "entities":
        spans = {"ai": record.ai_spans, "final": record.final_spans, "gold": record.gold_spans}[which]
        return _span_counts(spans, record.gold_spans, index)
    labels = {"ai": record.ai_labels, "final": record.final_labels, "gold": record.gold_labels}[which]
    return _label_counts(labels, record.gold_labels, index)


def _right(record: ItemRecord, which: Literal["ai", "final"], task: TaskKind) -> bool:
    if task == "entities":
        spans = record.ai_spans if which == "ai" else record.final_spans
        return set(spans) == set(record.gold_spans)
    labels = record.ai_labels if which == "ai" else record.final_labels
    return set(labels) == set(record.gold_labels)


def outcomes(records: Sequence[ItemRecord], task: TaskKind) -> Outcomes:
    index = _label_index(records, task)
    width = len(index)
    ai = np.stack([_counts(r, "ai", task, index) for r in records]) if records else np.zeros((0, width, 3), np.int64)
    gold = np.stack([_counts(r, "gold", task, index) for r in records]) if records else ai.copy()
    correct = np.array([_right(r, "ai", task) for r in records], dtype=bool)
    return Outcomes(task, tuple(index), ai, gold, correct)


def score_final(records: Sequence[ItemRecord], task: TaskKind) -> dict[str, float | None]:
    """Quality of what actually became final (reviewed items included, as the reviewers answered)."""
    index = _label_index(records, task)
    counts = (
        np.stack([_counts(r, "final", task, index) for r in records]).sum(axis=0)
        if records
        else np.zeros((len(index), 3), np.int64)
    )
    right = [_right(r, "final", task) for r in records]
    return _metrics(task, counts, sum(right) / len(right) if right else None)


# -- baselines and the budget curve -------------------------------------------------------------------------


def review_order(records: Sequence[ItemRecord]) -> list[int]:
    """The router's ordering, most in need of review first: unscored proposals (they are always reviewed), then
    ascending confidence as the router compared it with its threshold. Ties keep submission order."""

    def key(i: int) -> tuple[int, float, int]:
        r = records[i]
        confidence = r.calibrated_confidence if r.calibrated_confidence is not None else r.confidence
        return (0, 0.0, i) if confidence is None else (1, confidence, i)

    return sorted(range(len(records)), key=key)


def random_review(outcome: Outcomes, budget: int, seeds: int = 20, seed: int = 0) -> dict[str, Any]:
    """Mean (and standard deviation over ``seeds`` draws) of the final quality when ``budget`` items drawn at
    random are reviewed and the rest keep the AI's proposal."""
    rng = np.random.default_rng(seed)
    draws: list[dict[str, float | None]] = []
    for _ in range(max(seeds, 1)):
        reviewed = np.zeros(outcome.n, dtype=bool)
        reviewed[rng.choice(outcome.n, size=min(budget, outcome.n), replace=False)] = True
        draws.append(outcome.score(reviewed))
    mean: dict[str, float | None] = {}
    std: dict[str, float | None] = {}
    for name in draws[0]:
        values = [d[name] for d in draws]
        known = [v for v in values if v is not None]
        mean[name] = float(np.mean(known)) if known else None
        std[name] = float(np.std(known)) if known else None
    return {"reviewed": min(budget, outcome.n), "seeds": max(seeds, 1), "mean": mean, "std": std}


@dataclass
class BudgetCurve:
    metric: str
    shares: list[float]
    router: list[float | None]
    random_mean: list[float | None]
    random_std: list[float | None]
    operating_point: dict[str, Any] = field(default_factory=dict)
    """The share the gate actually reviewed, its final quality and random review's at that budget."""

    def shares_not_above_random(self) -> list[float]:
        """Budgets strictly between none and all (at 0 and 100% the two coincide by construction) where the
        router's ordering is not above random review's mean; a budget where both are already perfect counts as
        above, since nothing is left to win there."""
        return [
            s
            for s, r, m in zip(self.shares, self.router, self.random_mean, strict=True)
            if 0.0 < s < 1.0 and r is not None and m is not None and not (r > m or r >= 1.0)
        ]

    def beats_random(self) -> bool:
        return not self.shares_not_above_random()

    def as_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "shares": self.shares,
            "router": self.router,
            "random_mean": self.random_mean,
            "random_std": self.random_std,
            "operating_point": self.operating_point,
            "beats_random_at_every_budget": self.beats_random(),
            "shares_not_above_random": self.shares_not_above_random(),
        }


def budget_curve(
    records: Sequence[ItemRecord], task: TaskKind, steps: int = 20, seeds: int = 20, seed: int = 0
) -> BudgetCurve:
    """Final quality when the first k items of the router's ordering are reviewed, against k random items, for
    k = 0, N/steps, …, N; and both at the number of items the gate really reviewed."""
    metric = PRIMARY_METRIC[task]
    outcome = outcomes(records, task)
    order = review_order(records)
    n = outcome.n
    shares = [i / steps for i in range(steps + 1)]
    router: list[float | None] = []
    random_mean: list[float | None] = []
    random_std: list[float | None] = []
    for share in shares:
        k = round(share * n)
        reviewed = np.zeros(n, dtype=bool)
        reviewed[order[:k]] = True
        router.append(outcome.score(reviewed)[metric])
        draw = random_review(outcome, k, seeds, seed)
        random_mean.append(draw["mean"][metric])
        random_std.append(draw["std"][metric])
    actual = np.array([r.reviewed for r in records], dtype=bool)
    at_budget = random_review(outcome, int(actual.sum()), seeds, seed)
    return BudgetCurve(
        metric,
        shares,
        router,
        random_mean,
        random_std,
        {
            "share": float(actual.mean()) if n else 0.0,
            "gate": outcome.score(actual)[metric],
            "random_mean": at_budget["mean"][metric],
            "random_std": at_budget["std"][metric],
        },
    )


def baselines(
    records: Sequence[ItemRecord], task: TaskKind, price: PriceModel, reviews: int, seeds: int = 20, seed: int = 0
) -> dict[str, Any]:
    """The gate against all-human, AI-only and random review at the gate's budget: quality and cost per label.
    ``reviews`` counts every review the gate needed (an item may get more than one)."""
    outcome = outcomes(records, task)
    n = outcome.n
    reviewed = np.array([r.reviewed for r in records], dtype=bool)
    gate_cost = _cost(n, reviews, price)
    human_cost = _cost(n, n, price)
    random = random_review(outcome, int(reviewed.sum()), seeds, seed)
    return {
        "price_model": {**price.__dict__, "description": price.describe()},
        "gate": {
            "reviewed": int(reviewed.sum()),
            "reviews": reviews,
            "quality": score_final(records, task),
            **gate_cost,
        },
        "all_human": {
            "reviewed": n,
            "reviews": n,
            "quality": outcome.score(np.ones(n, dtype=bool)),
            **human_cost,
            "note": "every item reviewed; equal to gold by construction, since the gold labels play the reviewers",
        },
        "ai_only": {
            "reviewed": 0,
            "reviews": 0,
            "quality": outcome.score(np.zeros(n, dtype=bool)),
            **_cost(n, 0, price),
            "note": "the gate's own proposals with no review (unscored items keep an empty proposal)",
        },
        "random_review": {
            "reviewed": random["reviewed"],
            "reviews": random["reviewed"],
            "seeds": random["seeds"],
            "quality": random["mean"],
            "quality_std": random["std"],
            **_cost(n, random["reviewed"], price),
            "note": "simulated on the gate's proposals: the same number of reviewed items drawn at random",
        },
    }


def _cost(n: int, reviews: int, price: PriceModel) -> dict[str, float | None]:
    report = cost_report(
        n_final=n,
        llm_cost_usd=price.model_cost_per_item_usd * n,
        reviewer_seconds=reviews * price.review_seconds,
        n_reviewed=min(reviews, n),
        hourly_rate_usd=price.hourly_rate_usd,
        human_seconds_per_label=price.review_seconds,
    )
    return {
        "cost_usd": round(report.total_cost_usd, 4),
        "cost_per_label_usd": None if report.cost_per_label_usd is None else round(report.cost_per_label_usd, 5),
        "savings_vs_all_human": None if report.savings_share is None else round(report.savings_share, 4),
    }


# -- the plot -----------------------------------------------------------------------------------------------


def budget_curve_png(curve: BudgetCurve, *, title: str) -> bytes:
    """The router's ordering against random review (mean, ±1 standard deviation), with the gate's operating
    point; PNG bytes rendered with matplotlib's object API (no global pyplot state)."""
    figure = Figure(figsize=(6.0, 4.5), dpi=100)
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    x = [100 * s for s in curve.shares]
    router = [math.nan if v is None else v for v in curve.router]
    mean = np.array([math.nan if v is None else v for v in curve.random_mean])
    std = np.array([0.0 if v is None else v for v in curve.random_std])
    ax.plot(x, router, marker="o", markersize=3, label="router's order (lowest confidence first)")
    ax.plot(x, mean, linestyle="--", color="grey", label="random review (mean)")
    ax.fill_between(x, mean - std, mean + std, color="grey", alpha=0.2, label="random review ±1 sd")
    point = curve.operating_point
    if point.get("gate") is not None:
        ax.scatter([100 * point["share"]], [point["gate"]], color="C3", zorder=3, label="the gate as run")
    ax.set(
        xlabel="share of items reviewed (%)",
        ylabel=f"final {curve.metric.replace('_', ' ')}",
        title=title,
        xlim=(0, 100),
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
