"""Calibration: turn a model's raw confidence into P(correct) learned from reviewed outcomes, measure how well
confidences are calibrated, and pick the auto-accept threshold that meets a target precision with confidence.

A threshold only means a precision once confidences are calibrated on the project's own reviewed items: a raw
0.9 from one model can be right 70% of the time. The router fits a ``Calibrator`` per project (and per label
where there is enough data), stores it with ``to_dict``, and picks the threshold with
``threshold_for_precision`` on out-of-fold calibrated confidences, so the threshold is not tuned on the very
predictions it is judged by.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

from ._stats import proportion_lower_bound

FloatArray = NDArray[np.float64]

DEFAULT_MIN_SAMPLES = 30
"""Fewer reviewed outcomes than this and a fitted curve is mostly noise: the calibrator stays the identity."""
DEFAULT_MIN_PER_OUTCOME = 3
"""Both outcomes (right and wrong) must be seen this often, or the fit can only say 'always right'."""


class Method(StrEnum):
    identity = "identity"
    isotonic = "isotonic"
    platt = "platt"


def _as_confidence(values: ArrayLike) -> FloatArray:
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if array.size and (np.isnan(array).any() or array.min() < 0.0 or array.max() > 1.0):
        raise ValueError("confidences must be numbers in [0, 1]")
    return array


def _as_outcomes(values: ArrayLike, n: int) -> NDArray[np.bool_]:
    array = np.asarray(values).reshape(-1).astype(bool)
    if array.size != n:
        raise ValueError(f"{n} confidences but {array.size} outcomes")
    return array


@dataclass(frozen=True)
class Calibrator:
    """A monotone map from raw confidence to P(correct). Immutable and serialisable to a plain dict.

    ``isotonic`` keeps the step function's knots (``x``, ``y``) and interpolates between them, exactly as
    sklearn's ``IsotonicRegression.predict`` does with ``out_of_bounds="clip"``; ``platt`` keeps the logistic
    slope and intercept on the raw score; ``identity`` returns the raw confidence.
    """

    method: Method = Method.identity
    n_samples: int = 0
    x: tuple[float, ...] = ()
    y: tuple[float, ...] = ()
    slope: float = 0.0
    intercept: float = 0.0
    fallback_reason: str | None = None
    """Why a requested fit fell back to the identity (too few samples, one outcome only), for the reports."""

    @property
    def fitted(self) -> bool:
        return self.method is not Method.identity

    def predict(self, confidence: ArrayLike) -> FloatArray:
        raw = _as_confidence(confidence)
        if self.method is Method.isotonic:
            stepped: FloatArray = np.interp(raw, np.asarray(self.x), np.asarray(self.y))
            return stepped
        if self.method is Method.platt:
            out: FloatArray = 1.0 / (1.0 + np.exp(-(self.slope * raw + self.intercept)))
            return out
        return raw.copy()

    def __call__(self, confidence: float) -> float:
        return float(self.predict([confidence])[0])

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method.value,
            "n_samples": self.n_samples,
            "x": list(self.x),
            "y": list(self.y),
            "slope": self.slope,
            "intercept": self.intercept,
            "fallback_reason": self.fallback_reason,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Calibrator:
        return cls(
            method=Method(data.get("method", Method.identity)),
            n_samples=int(data.get("n_samples", 0)),
            x=tuple(float(v) for v in data.get("x", ())),
            y=tuple(float(v) for v in data.get("y", ())),
            slope=float(data.get("slope", 0.0)),
            intercept=float(data.get("intercept", 0.0)),
            fallback_reason=data.get("fallback_reason"),
        )


def fit_calibrator(
    confidence: ArrayLike,
    correct: ArrayLike,
    *,
    method: Method | Literal["isotonic", "platt"] = Method.isotonic,
    min_samples: int = DEFAULT_MIN_SAMPLES,
    min_per_outcome: int = DEFAULT_MIN_PER_OUTCOME,
    bound_level: float | None = None,
) -> Calibrator:
    """Fit raw confidence → P(correct) on reviewed outcomes; the identity when there are too few of them.

    With ``bound_level`` (isotonic only), each step of the curve is the one-sided Wilson lower bound, at that
    level, of the accuracy of the outcomes it pools, instead of their plain accuracy: a step resting on a
    handful of outcomes, all right by luck, no longer reads as certainty. The curve trusts itself as far as
    its data goes."""
    raw = _as_confidence(confidence)
    outcomes = _as_outcomes(correct, raw.size)
    n = int(raw.size)
    n_right = int(outcomes.sum())
    method = Method(method)
    if n < min_samples:
        return Calibrator(n_samples=n, fallback_reason=f"{n} reviewed outcomes, fewer than {min_samples}")
    if min(n_right, n - n_right) < min_per_outcome:
        return Calibrator(
            n_samples=n,
            fallback_reason=f"{n_right} right and {n - n_right} wrong; each needs at least {min_per_outcome}",
        )
    if method is Method.isotonic:
        iso = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip")
        iso.fit(raw, outcomes.astype(np.float64))
        if bound_level is not None:
            x_knots, y_knots = _bounded_steps(raw, outcomes, np.asarray(iso.predict(raw)), bound_level)
            return Calibrator(method=Method.isotonic, n_samples=n, x=x_knots, y=y_knots)
        return Calibrator(
            method=Method.isotonic,
            n_samples=n,
            x=tuple(float(v) for v in iso.X_thresholds_),
            y=tuple(float(v) for v in iso.y_thresholds_),
        )
    if method is Method.platt:
        # Nearly unregularised: the single feature is the score itself, and Platt's fit is a plain MLE.
        logistic = LogisticRegression(C=1e6, max_iter=1000)
        logistic.fit(raw.reshape(-1, 1), outcomes.astype(int))
        return Calibrator(
            method=Method.platt,
            n_samples=n,
            slope=float(logistic.coef_[0, 0]),
            intercept=float(logistic.intercept_[0]),
        )
    return Calibrator(n_samples=n)


def _bounded_steps(
    raw: FloatArray, outcomes: NDArray[np.bool_], fitted: FloatArray, level: float
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Knots of the isotonic curve with each step (a run of equal fitted values, in confidence order) lowered to
    the Wilson lower bound of its outcomes' accuracy, then made non-decreasing again (a running maximum)."""
    order = np.argsort(raw, kind="stable")
    conf, right, value = raw[order], outcomes[order].astype(np.float64), fitted[order]
    starts = np.flatnonzero(np.r_[True, value[1:] != value[:-1]])
    ends = np.r_[starts[1:], conf.size]
    successes = np.add.reduceat(right, starts)
    lower = np.maximum.accumulate(proportion_lower_bound(successes, ends - starts, level))
    x: list[float] = []
    y: list[float] = []
    for start, end, bound in zip(starts, ends, lower, strict=True):
        for edge in (float(conf[start]), float(conf[end - 1])):
            if x and edge <= x[-1]:
                edge = np.nextafter(x[-1], np.inf)  # np.interp needs increasing knots
            x.append(float(edge))
            y.append(float(bound))
    return tuple(x), tuple(y)


def out_of_fold_calibrated(
    confidence: ArrayLike,
    correct: ArrayLike,
    *,
    method: Method | Literal["isotonic", "platt"] = Method.isotonic,
    folds: int = 5,
    min_samples: int = DEFAULT_MIN_SAMPLES,
    min_per_outcome: int = DEFAULT_MIN_PER_OUTCOME,
    seed: int = 0,
    bound_level: float | None = None,
) -> FloatArray:
    """Each item's calibrated confidence from a calibrator fitted without it (stratified k-fold).

    Use these, not in-sample predictions, to choose thresholds and to report ECE after calibration: an isotonic
    fit reproduces its own training outcomes too well."""
    raw = _as_confidence(confidence)
    outcomes = _as_outcomes(correct, raw.size)
    out = raw.copy()
    smallest = int(min(outcomes.sum(), (~outcomes).sum()))
    k = min(folds, smallest)
    if k < 2:
        return fit_calibrator(raw, outcomes, method=method, min_samples=min_samples,
                              min_per_outcome=min_per_outcome, bound_level=bound_level).predict(raw)
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    for train, test in splitter.split(raw.reshape(-1, 1), outcomes):
        calibrator = fit_calibrator(
            raw[train], outcomes[train], method=method, min_samples=min_samples, min_per_outcome=min_per_outcome,
            bound_level=bound_level,
        )
        out[test] = calibrator.predict(raw[test])
    return out


# -- measuring calibration -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConfidenceBin:
    lower: float
    upper: float
    count: int
    mean_confidence: float | None
    """None for an empty bin."""
    accuracy: float | None


def _bin_index(confidence: FloatArray, edges: FloatArray) -> NDArray[np.intp]:
    # Bins are [lower, upper) except the last, which also holds its upper edge (a confidence of exactly 1).
    index = np.searchsorted(edges, confidence, side="right") - 1
    return np.clip(index, 0, edges.size - 2)


def accuracy_by_bin(confidence: ArrayLike, correct: ArrayLike, edges: Sequence[float]) -> list[ConfidenceBin]:
    """Count, mean confidence and accuracy of the items in each bin ``[edges[i], edges[i+1])``."""
    conf = _as_confidence(confidence)
    outcomes = _as_outcomes(correct, conf.size)
    bounds = np.asarray(edges, dtype=np.float64)
    if bounds.size < 2 or np.any(np.diff(bounds) <= 0):
        raise ValueError("edges must be at least two increasing numbers")
    index = _bin_index(conf, bounds)
    bins = []
    for i in range(bounds.size - 1):
        mask = index == i
        count = int(mask.sum())
        bins.append(
            ConfidenceBin(
                lower=float(bounds[i]),
                upper=float(bounds[i + 1]),
                count=count,
                mean_confidence=float(conf[mask].mean()) if count else None,
                accuracy=float(outcomes[mask].mean()) if count else None,
            )
        )
    return bins


def reliability_curve(confidence: ArrayLike, correct: ArrayLike, n_bins: int = 10) -> list[ConfidenceBin]:
    """Equal-width bins over [0, 1]: what a reliability diagram plots (empty bins included, with None)."""
    return accuracy_by_bin(confidence, correct, np.linspace(0.0, 1.0, n_bins + 1).tolist())


def expected_calibration_error(confidence: ArrayLike, correct: ArrayLike, n_bins: int = 10) -> float | None:
    """ECE: the count-weighted mean of |accuracy - mean confidence| over equal-width bins; None with no data."""
    bins = reliability_curve(confidence, correct, n_bins)
    total = sum(b.count for b in bins)
    if total == 0:
        return None
    return sum(
        b.count / total * abs(b.accuracy - b.mean_confidence)
        for b in bins
        if b.accuracy is not None and b.mean_confidence is not None
    )


# -- thresholds ------------------------------------------------------------------------------------------


class BoundMethod(StrEnum):
    wilson = "wilson"
    clopper_pearson = "beta"
    """statsmodels' name for the exact Clopper-Pearson interval."""


@dataclass(frozen=True, slots=True)
class ThresholdChoice:
    threshold: float
    """Auto-accept when calibrated confidence ≥ this."""
    n_accepted: int
    """Reviewed items at or above the threshold: the evidence the bound rests on."""
    precision: float
    lower_bound: float


def threshold_for_precision(
    confidence: ArrayLike,
    correct: ArrayLike,
    target: float,
    *,
    confidence_level: float = 0.95,
    bound: BoundMethod | Literal["wilson", "beta"] = BoundMethod.wilson,
    min_accepted: int = 1,
) -> ThresholdChoice | None:
    """The smallest threshold t (among the observed confidences) such that the one-sided lower confidence
    bound of precision among reviewed items with confidence ≥ t reaches ``target``; None when no t does.

    Pass calibrated (ideally out-of-fold) confidences. Precision is not monotone in t, so every candidate is
    checked and the smallest qualifying one wins: it auto-accepts the most items while meeting the target."""
    if not 0.0 < target <= 1.0:
        raise ValueError("target precision must be in (0, 1]")
    conf = _as_confidence(confidence)
    outcomes = _as_outcomes(correct, conf.size)
    if conf.size == 0:
        return None
    order = np.argsort(-conf, kind="stable")
    sorted_conf = conf[order]
    right = np.cumsum(outcomes[order])
    # The last position of each distinct confidence: everything at or above that value is accepted there.
    last = np.flatnonzero(np.r_[sorted_conf[1:] != sorted_conf[:-1], True])
    accepted = last + 1
    successes = right[last]
    lower = proportion_lower_bound(successes, accepted, confidence_level, BoundMethod(bound).value)
    ok = (lower >= target) & (accepted >= min_accepted)
    if not ok.any():
        return None
    best = int(np.flatnonzero(ok)[-1])  # descending order: the last qualifying candidate is the smallest t
    return ThresholdChoice(
        threshold=float(sorted_conf[last[best]]),
        n_accepted=int(accepted[best]),
        precision=float(successes[best] / accepted[best]),
        lower_bound=float(lower[best]),
    )


# -- per project and per label ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReviewedOutcome:
    """One reviewed AI proposal: its raw confidence, whether the reviewer kept it, and its (first) label."""

    confidence: float
    correct: bool
    label: Hashable | None = None


@dataclass(frozen=True)
class ProjectCalibration:
    """A project's calibrator, per-label calibrators where a label has enough reviewed outcomes, and the
    threshold for the target precision (per label too). Labels without their own calibrator use the project's."""

    overall: Calibrator
    per_label: Mapping[str, Calibrator] = field(default_factory=dict)
    target_precision: float | None = None
    threshold: float | None = None
    label_thresholds: Mapping[str, float | None] = field(default_factory=dict)
    ece_before: float | None = None
    ece_after: float | None = None
    """ECE of the raw and of the out-of-fold calibrated confidences on the reviewed outcomes."""

    def calibrator_for(self, label: Hashable | None) -> Calibrator:
        if label is not None and str(label) in self.per_label:
            return self.per_label[str(label)]
        return self.overall

    def calibrate(self, confidence: float, label: Hashable | None = None) -> float:
        return self.calibrator_for(label)(confidence)

    def threshold_for(self, label: Hashable | None = None) -> float | None:
        """The label's own threshold when it has one, else the project's."""
        if label is not None and str(label) in self.label_thresholds:
            return self.label_thresholds[str(label)]
        return self.threshold

    def to_dict(self) -> dict[str, Any]:
        return {
            "overall": self.overall.to_dict(),
            "per_label": {k: v.to_dict() for k, v in self.per_label.items()},
            "target_precision": self.target_precision,
            "threshold": self.threshold,
            "label_thresholds": dict(self.label_thresholds),
            "ece_before": self.ece_before,
            "ece_after": self.ece_after,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProjectCalibration:
        return cls(
            overall=Calibrator.from_dict(data["overall"]),
            per_label={k: Calibrator.from_dict(v) for k, v in data.get("per_label", {}).items()},
            target_precision=data.get("target_precision"),
            threshold=data.get("threshold"),
            label_thresholds=dict(data.get("label_thresholds", {})),
            ece_before=data.get("ece_before"),
            ece_after=data.get("ece_after"),
        )


def fit_project_calibration(
    outcomes: Sequence[ReviewedOutcome],
    *,
    method: Method | Literal["isotonic", "platt"] = Method.isotonic,
    target_precision: float | None = None,
    min_samples: int = DEFAULT_MIN_SAMPLES,
    min_label_samples: int | None = None,
    min_per_outcome: int = DEFAULT_MIN_PER_OUTCOME,
    confidence_level: float = 0.95,
    bound: BoundMethod | Literal["wilson", "beta"] = BoundMethod.wilson,
    n_bins: int = 10,
    bound_level: float | None = None,
) -> ProjectCalibration:
    """Fit the project calibrator and, for each label with at least ``min_label_samples`` outcomes (default:
    ``min_samples``), a label calibrator; with a ``target_precision``, choose thresholds on out-of-fold
    calibrated confidences (a label's from its own outcomes, only when its calibrator was fitted). With
    ``bound_level``, every isotonic curve is made of lower confidence bounds (see ``fit_calibrator``)."""
    min_label = min_samples if min_label_samples is None else min_label_samples
    conf = np.array([o.confidence for o in outcomes], dtype=np.float64)
    right = np.array([o.correct for o in outcomes], dtype=bool)
    kwargs: dict[str, Any] = {"method": method, "min_per_outcome": min_per_outcome, "bound_level": bound_level}
    overall = fit_calibrator(conf, right, min_samples=min_samples, **kwargs)
    oof = out_of_fold_calibrated(conf, right, min_samples=min_samples, **kwargs) if overall.fitted else conf

    per_label: dict[str, Calibrator] = {}
    label_thresholds: dict[str, float | None] = {}
    labels = sorted({str(o.label) for o in outcomes if o.label is not None})
    for label in labels:
        mask = np.array([o.label is not None and str(o.label) == label for o in outcomes], dtype=bool)
        fitted = fit_calibrator(conf[mask], right[mask], min_samples=min_label, **kwargs)
        if not fitted.fitted:
            continue
        per_label[label] = fitted
        if target_precision is not None:
            label_oof = out_of_fold_calibrated(conf[mask], right[mask], min_samples=min_label, **kwargs)
            choice = threshold_for_precision(
                label_oof, right[mask], target_precision, confidence_level=confidence_level, bound=bound
            )
            label_thresholds[label] = choice.threshold if choice else None

    threshold = None
    if target_precision is not None and conf.size:
        choice = threshold_for_precision(
            oof, right, target_precision, confidence_level=confidence_level, bound=bound
        )
        threshold = choice.threshold if choice else None
    ece_before = expected_calibration_error(conf, right, n_bins)
    ece_after = expected_calibration_error(oof, right, n_bins)
    return ProjectCalibration(
        overall=overall,
        per_label=per_label,
        target_precision=target_precision,
        threshold=threshold,
        label_thresholds=label_thresholds,
        ece_before=ece_before,
        ece_after=ece_after if overall.fitted else ece_before,
    )
