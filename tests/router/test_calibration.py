"""The router's calibration fit: reviewed outcomes become a stored, versioned calibration with its reliability."""

from __future__ import annotations

import random
from typing import Any

import pytest

from labelgate_quality.calibration import Method
from labelgate_router.calibration import calibration_from_doc, fit_from_outcomes, reviewed_outcomes

pytestmark = pytest.mark.unit


def overconfident(n: int, seed: int = 3) -> list[dict[str, Any]]:
    """A model that says 0.5..1.0 but is right only (confidence ** 4) of the time."""
    rng = random.Random(seed)
    docs = []
    for i in range(n):
        confidence = rng.uniform(0.5, 1.0)
        docs.append({"item_id": f"i{i}", "ai_labels": ["spam" if i % 2 else "ham"], "confidence": confidence,
                     "correct": rng.random() < confidence**4})
    return docs


def test_calibration_of_an_overconfident_model_lowers_its_calibration_error() -> None:
    fitted = fit_from_outcomes("p", overconfident(600), version=1, target_precision=None, min_samples=30,
                               fitted_at=0.0)
    assert fitted.calibration.overall.fitted
    assert fitted.ece_raw is not None
    assert fitted.ece_calibrated is not None
    assert fitted.ece_raw > 0.1
    assert fitted.ece_calibrated < fitted.ece_raw / 2
    # A raw 0.9 is right about 0.9 ** 4 = 66% of the time: the calibrated value says so.
    assert 0.5 < fitted.calibration.calibrate(0.9) < 0.8


@pytest.mark.parametrize("method", [Method.platt, Method.identity])
def test_other_calibration_methods(method: Method) -> None:
    fitted = fit_from_outcomes("p", overconfident(600), version=1, target_precision=0.6, min_samples=30,
                               fitted_at=0.0, method=method)
    assert fitted.calibration.overall.method is method
    if method is Method.identity:  # the raw confidence is used as it is, and judged the same way
        assert fitted.calibration.calibrate(0.9) == 0.9
        assert fitted.ece_calibrated == fitted.ece_raw
    else:
        assert 0.5 < fitted.calibration.calibrate(0.9) < 0.8
        assert fitted.ece_calibrated is not None
        assert fitted.ece_raw is not None
        assert fitted.ece_calibrated < fitted.ece_raw / 2
    assert fitted.calibration.threshold is not None


def test_stored_document_round_trips_and_keeps_the_reliability_curves() -> None:
    fitted = fit_from_outcomes("p", overconfident(300), version=4, target_precision=0.9, min_samples=30,
                               fitted_at=12.0)
    doc = fitted.to_doc()
    version, calibration = calibration_from_doc(doc)
    assert version == 4
    assert calibration.target_precision == 0.9
    assert calibration.calibrate(0.8) == fitted.calibration.calibrate(0.8)
    for curve in ("raw", "calibrated"):
        bins = doc["reliability"][curve]
        assert len(bins) == 10
        assert sum(b["count"] for b in bins) == 300


def test_cold_start_outcomes_are_kept_out_of_the_fit() -> None:
    docs = [*overconfident(40), {"item_id": "cold", "ai_labels": [], "confidence": None, "correct": False}]
    assert len(reviewed_outcomes(docs)) == 40
    fitted = fit_from_outcomes("p", docs, version=1, target_precision=None, min_samples=30, fitted_at=0.0)
    assert (fitted.n_outcomes, fitted.n_scored) == (41, 40)


def test_too_few_outcomes_leave_the_identity_and_no_threshold() -> None:
    fitted = fit_from_outcomes("p", overconfident(10), version=1, target_precision=0.99, min_samples=30,
                               fitted_at=0.0)
    assert not fitted.calibration.overall.fitted
    assert fitted.calibration.calibrate(0.7) == 0.7
    assert fitted.calibration.threshold is None
