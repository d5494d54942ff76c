"""Calibration turns raw confidence into a probability a threshold can rely on."""

from __future__ import annotations

import json

import numpy as np
import pytest

from labelgate_quality.calibration import (
    Calibrator,
    Method,
    ProjectCalibration,
    ReviewedOutcome,
    accuracy_by_bin,
    expected_calibration_error,
    fit_calibrator,
    fit_project_calibration,
    out_of_fold_calibrated,
    reliability_curve,
    threshold_for_precision,
)

pytestmark = pytest.mark.unit


def overconfident(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A model that says c but is right with probability c**3: badly overconfident."""
    rng = np.random.default_rng(seed)
    conf = rng.uniform(0.5, 1.0, n)
    correct = rng.uniform(size=n) < conf**3
    return conf, correct


@pytest.mark.parametrize("method", [Method.isotonic, Method.platt])
def test_fitted_calibrator_reduces_ece_on_held_out_items(method: Method) -> None:
    conf, correct = overconfident(4000)
    test_conf, test_correct = overconfident(4000, seed=1)
    calibrator = fit_calibrator(conf, correct, method=method)
    assert calibrator.method is method
    before = expected_calibration_error(test_conf, test_correct)
    after = expected_calibration_error(calibrator.predict(test_conf), test_correct)
    assert before is not None
    assert after is not None
    assert before > 0.1
    assert after < 0.05


@pytest.mark.parametrize("method", [Method.isotonic, Method.platt])
def test_calibrated_confidence_is_monotone_in_raw_confidence(method: Method) -> None:
    conf, correct = overconfident(2000)
    calibrated = fit_calibrator(conf, correct, method=method).predict(np.linspace(0, 1, 101))
    assert np.all(np.diff(calibrated) >= -1e-12)
    assert calibrated.min() >= 0.0
    assert calibrated.max() <= 1.0


def test_too_few_outcomes_fall_back_to_identity() -> None:
    calibrator = fit_calibrator([0.9, 0.8, 0.7], [True, False, True], min_samples=30)
    assert calibrator.method is Method.identity
    assert calibrator.fallback_reason is not None
    assert "3 reviewed outcomes" in calibrator.fallback_reason
    assert calibrator(0.73) == pytest.approx(0.73)


def test_one_outcome_only_falls_back_to_identity() -> None:
    calibrator = fit_calibrator(np.linspace(0.5, 1, 100), np.ones(100, dtype=bool))
    assert not calibrator.fitted
    assert calibrator(0.6) == pytest.approx(0.6)


@pytest.mark.parametrize("method", [Method.isotonic, Method.platt])
def test_calibrator_round_trips_through_json(method: Method) -> None:
    conf, correct = overconfident(500)
    calibrator = fit_calibrator(conf, correct, method=method)
    restored = Calibrator.from_dict(json.loads(json.dumps(calibrator.to_dict())))
    assert restored == calibrator
    grid = np.linspace(0, 1, 57)
    np.testing.assert_allclose(restored.predict(grid), calibrator.predict(grid))


def test_confidences_outside_unit_interval_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fit_calibrator([1.2], [True])


def test_ece_of_perfectly_calibrated_bins_is_zero_and_of_constant_overconfidence_is_the_gap() -> None:
    # 10 items at 0.75 of which 3 of 4 right (ten times over): accuracy equals confidence.
    conf = np.full(40, 0.75)
    correct = np.array([True, True, True, False] * 10)
    assert expected_calibration_error(conf, correct) == pytest.approx(0.0)
    assert expected_calibration_error(np.full(40, 0.95), correct) == pytest.approx(0.2)
    assert expected_calibration_error([], []) is None


def test_ece_weights_bins_by_count() -> None:
    # 30 items at 0.95 all right (gap 0.05), 10 at 0.55 all wrong (gap 0.55) → (30*0.05 + 10*0.55) / 40.
    conf = np.r_[np.full(30, 0.95), np.full(10, 0.55)]
    correct = np.r_[np.ones(30, dtype=bool), np.zeros(10, dtype=bool)]
    assert expected_calibration_error(conf, correct) == pytest.approx((30 * 0.05 + 10 * 0.55) / 40)


def test_reliability_curve_has_every_bin_and_puts_one_in_the_last() -> None:
    bins = reliability_curve([0.0, 0.05, 0.5, 1.0, 1.0], [False, False, True, True, False], n_bins=10)
    assert len(bins) == 10
    assert [b.count for b in bins] == [2, 0, 0, 0, 0, 1, 0, 0, 0, 2]
    assert bins[0].accuracy == 0.0
    assert bins[0].mean_confidence == pytest.approx(0.025)
    assert bins[1].accuracy is None
    assert bins[1].mean_confidence is None
    assert bins[9].accuracy == 0.5
    assert bins[9].upper == 1.0


def test_accuracy_by_custom_bins() -> None:
    bins = accuracy_by_bin([0.2, 0.6, 0.7, 0.95], [False, True, False, True], edges=[0.0, 0.5, 0.9, 1.0])
    assert [(b.count, b.accuracy) for b in bins] == [(1, 0.0), (2, 0.5), (1, 1.0)]


def test_threshold_is_the_smallest_whose_lower_bound_meets_the_target() -> None:
    # 100 items at each of 0.6 (60% right), 0.8 (80% right), 0.99 (99% right).
    conf = np.repeat([0.6, 0.8, 0.99], 100)
    correct = np.concatenate([np.arange(100) < k for k in (60, 80, 99)])
    choice = threshold_for_precision(conf, correct, target=0.95)
    assert choice is not None
    assert choice.threshold == 0.99
    assert choice.n_accepted == 100
    assert choice.precision == pytest.approx(0.99)
    assert 0.95 <= choice.lower_bound < 0.99
    # At target 0.8 the pooled items ≥ 0.8 (89.5% right, n=200) qualify; adding the 0.6s (79.7%) does not.
    lower = threshold_for_precision(conf, correct, target=0.8)
    assert lower is not None
    assert lower.threshold == 0.8
    assert lower.n_accepted == 200


def test_threshold_accounts_for_sample_size() -> None:
    # 5 of 5 right is 100% precision, but the 95% lower bound is far below 0.95: not enough evidence.
    assert threshold_for_precision([0.99] * 5, [True] * 5, target=0.95) is None
    assert threshold_for_precision([0.99] * 200, [True] * 200, target=0.95) is not None


def test_clopper_pearson_is_more_conservative_than_wilson() -> None:
    conf = [0.99] * 80
    correct = [True] * 80
    wilson = threshold_for_precision(conf, correct, target=0.965, bound="wilson")
    exact = threshold_for_precision(conf, correct, target=0.965, bound="beta")
    assert wilson is not None
    assert exact is None


def test_unattainable_target_gives_none() -> None:
    conf, correct = overconfident(1000)
    assert threshold_for_precision(conf, correct, target=0.999) is None


def test_out_of_fold_calibration_is_not_fitted_on_the_item_itself() -> None:
    conf, correct = overconfident(600)
    oof = out_of_fold_calibrated(conf, correct)
    in_sample = fit_calibrator(conf, correct).predict(conf)
    assert oof.shape == conf.shape
    assert not np.allclose(oof, in_sample)
    ece = expected_calibration_error(oof, correct)
    assert ece is not None
    assert ece < 0.08


def test_project_calibration_fits_labels_with_enough_data_and_round_trips() -> None:
    rng = np.random.default_rng(3)
    outcomes = []
    # "spam": overconfident; "ham": well calibrated; "rare": too few to fit its own.
    for label, n, power in (("spam", 1500, 3.0), ("ham", 1500, 1.0), ("rare", 10, 1.0)):
        conf = rng.uniform(0.5, 1.0, n)
        right = rng.uniform(size=n) < conf**power
        outcomes += [ReviewedOutcome(float(c), bool(r), label) for c, r in zip(conf, right, strict=True)]
    project = fit_project_calibration(outcomes, target_precision=0.9, min_samples=50)
    assert set(project.per_label) == {"ham", "spam"}
    assert project.calibrator_for("rare") is project.overall
    assert project.calibrate(0.9, "spam") < project.calibrate(0.9, "ham")
    assert project.ece_before is not None
    assert project.ece_after is not None
    assert project.ece_after < project.ece_before
    assert project.threshold is not None
    spam_t, ham_t = project.threshold_for("spam"), project.threshold_for("ham")
    assert spam_t is not None
    assert ham_t is not None
    assert project.threshold_for("rare") == project.threshold
    restored = ProjectCalibration.from_dict(json.loads(json.dumps(project.to_dict())))
    assert restored.to_dict() == project.to_dict()
    assert restored.calibrate(0.9, "spam") == pytest.approx(project.calibrate(0.9, "spam"))


def test_project_calibration_with_few_outcomes_is_identity() -> None:
    project = fit_project_calibration([ReviewedOutcome(0.9, True, "a")] * 5, target_precision=0.9)
    assert not project.overall.fitted
    assert project.per_label == {}
    assert project.calibrate(0.42, "a") == pytest.approx(0.42)
    assert project.threshold is None


def test_a_bounded_calibration_trusts_a_step_only_as_far_as_its_outcomes_go() -> None:
    rng = np.random.default_rng(3)
    # Many outcomes at high confidence (right 99%), a few at 0.7 that all happen to be right.
    high = rng.uniform(0.9, 1.0, 400)
    high_right = rng.random(400) < 0.99
    low = rng.uniform(0.3, 0.6, 200)
    low_right = rng.random(200) < 0.5
    lucky = np.full(6, 0.7)
    conf = np.r_[high, low, lucky]
    right = np.r_[high_right, low_right, np.ones(6, dtype=bool)]
    plain = fit_calibrator(conf, right)
    bounded = fit_calibrator(conf, right, bound_level=0.95)
    assert bounded.fitted
    assert plain(0.7) >= 0.9  # six lucky outcomes read as near certainty
    assert bounded(0.7) < 0.9  # their lower bound does not
    assert bounded(0.95) == pytest.approx(0.975, abs=0.02)  # 400 outcomes: the bound is close to the rate
    grid = np.linspace(0.0, 1.0, 101)
    assert np.all(np.diff(bounded.predict(grid)) >= 0)  # still monotone
    assert np.all(bounded.predict(grid) <= plain.predict(grid) + 1e-9)
    restored = Calibrator.from_dict(bounded.to_dict())
    assert restored(0.7) == pytest.approx(bounded(0.7))
