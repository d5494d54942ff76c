"""Per-project calibration of the router: reviewed outcomes in, a versioned calibration document out.

Pure code: it reads outcome documents the router already keeps and returns the document the router stores, so
the fit can run in a worker thread and be tested without a bus or a store."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from labelgate_quality.calibration import (
    ConfidenceBin,
    Method,
    ProjectCalibration,
    ReviewedOutcome,
    expected_calibration_error,
    fit_project_calibration,
    out_of_fold_calibrated,
    reliability_curve,
)


@dataclass(frozen=True)
class FittedCalibration:
    project_id: str
    version: int
    calibration: ProjectCalibration
    n_outcomes: int
    """Outcomes read, unscored ones included: the count that tells whether a refit is due."""
    n_scored: int
    """Outcomes with a confidence: what the calibrator was fitted on."""
    ece_raw: float | None
    ece_calibrated: float | None
    reliability_raw: tuple[ConfidenceBin, ...]
    reliability_calibrated: tuple[ConfidenceBin, ...]
    fitted_at: float

    def to_doc(self) -> dict[str, Any]:
        return {
            "_id": self.project_id,
            "project_id": self.project_id,
            "version": self.version,
            "calibration": self.calibration.to_dict(),
            "n_outcomes": self.n_outcomes,
            "n_scored": self.n_scored,
            "ece_raw": self.ece_raw,
            "ece_calibrated": self.ece_calibrated,
            "reliability": {
                "raw": [_bin_doc(b) for b in self.reliability_raw],
                "calibrated": [_bin_doc(b) for b in self.reliability_calibrated],
            },
            "fitted_at": self.fitted_at,
        }


def _bin_doc(b: ConfidenceBin) -> dict[str, Any]:
    return {"lower": b.lower, "upper": b.upper, "count": b.count, "mean_confidence": b.mean_confidence,
            "accuracy": b.accuracy}


def calibration_from_doc(doc: Mapping[str, Any]) -> tuple[int, ProjectCalibration]:
    """The version and calibration a stored document holds."""
    return int(doc["version"]), ProjectCalibration.from_dict(doc["calibration"])


def reviewed_outcomes(docs: Sequence[Mapping[str, Any]]) -> list[ReviewedOutcome]:
    """The scored outcomes among the router's outcome documents: a proposal without a confidence (cold start)
    was reviewed, but says nothing about how confidence relates to correctness."""
    out = []
    for doc in docs:
        confidence = doc.get("confidence")
        if confidence is None:
            continue
        labels = doc.get("ai_labels") or []
        out.append(ReviewedOutcome(float(confidence), bool(doc.get("correct")), labels[0] if labels else None))
    return out


def fit_from_outcomes(
    project_id: str,
    docs: Sequence[Mapping[str, Any]],
    *,
    version: int,
    target_precision: float | None,
    min_samples: int,
    fitted_at: float,
    n_bins: int = 10,
    bound_level: float | None = None,
    method: Method = Method.isotonic,
) -> FittedCalibration:
    """Fit the project's calibration (``method``; thresholds on out-of-fold calibrated confidences) and measure
    its reliability: the curve and ECE of the raw confidences, and of the out-of-fold calibrated ones."""
    outcomes = reviewed_outcomes(docs)
    calibration = fit_project_calibration(
        outcomes, method=method, target_precision=target_precision, min_samples=min_samples, n_bins=n_bins,
        bound_level=bound_level,
    )
    raw = np.array([o.confidence for o in outcomes], dtype=np.float64)
    right = np.array([o.correct for o in outcomes], dtype=bool)
    oof = (
        out_of_fold_calibrated(raw, right, method=method, min_samples=min_samples, bound_level=bound_level)
        if calibration.overall.fitted
        else raw
    )
    return FittedCalibration(
        project_id=project_id,
        version=version,
        calibration=calibration,
        n_outcomes=len(docs),
        n_scored=len(outcomes),
        ece_raw=expected_calibration_error(raw, right, n_bins),
        ece_calibrated=expected_calibration_error(oof, right, n_bins),
        reliability_raw=tuple(reliability_curve(raw, right, n_bins)),
        reliability_calibrated=tuple(reliability_curve(oof, right, n_bins)),
        fitted_at=fitted_at,
    )
