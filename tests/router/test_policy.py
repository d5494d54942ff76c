"""The routing policy decides as a project owner would expect."""

from __future__ import annotations

import pytest

from labelgate_core.events import DecisionOutcome, LabelDef, Proposal, RoutingPolicy, RoutingReason, TaskSpec
from labelgate_quality.calibration import Calibrator, Method, ProjectCalibration
from labelgate_router.policy import audit_draw, decide

pytestmark = pytest.mark.unit

TASK = TaskSpec(labels=(LabelDef(name="spam"), LabelDef(name="ham")))
POLICY = RoutingPolicy(threshold=0.9, audit_rate=0.1)


def proposal(confidence: float | None, labels: tuple[str, ...] = ("spam",)) -> Proposal:
    return Proposal(model_id="m", model_version=1, labels=labels, confidence=confidence)


def test_confident_label_is_auto_accepted() -> None:
    decision = decide(proposal(0.95), TASK, POLICY, draw=0.5)
    assert decision.outcome is DecisionOutcome.auto_accepted
    assert decision.reasons == (RoutingReason.confident,)


def test_threshold_is_inclusive() -> None:
    assert decide(proposal(0.9), TASK, POLICY, draw=0.5).auto_accepted


def test_low_confidence_goes_to_review() -> None:
    decision = decide(proposal(0.89), TASK, POLICY, draw=0.5)
    assert decision.outcome is DecisionOutcome.needs_review
    assert decision.reasons == (RoutingReason.low_confidence,)


def test_cold_start_proposal_without_confidence_always_goes_to_review() -> None:
    decision = decide(proposal(None, labels=()), TASK, RoutingPolicy(threshold=0.0, audit_rate=0.0), draw=0.99)
    assert decision.reasons == (RoutingReason.no_confidence,)


def test_audit_share_of_confident_labels_goes_to_review() -> None:
    decision = decide(proposal(0.99), TASK, POLICY, draw=0.05)
    assert decision.outcome is DecisionOutcome.needs_review
    assert decision.reasons == (RoutingReason.audit,)


def test_subjective_task_always_goes_to_humans() -> None:
    subjective = TaskSpec(labels=TASK.labels, subjective=True)
    assert decide(proposal(1.0), subjective, POLICY, draw=0.99).reasons == (RoutingReason.subjective,)


def test_audit_draw_is_stable_and_uniform_enough() -> None:
    assert audit_draw("s", "p", "item-1") == audit_draw("s", "p", "item-1")
    draws = [audit_draw("s", "p", f"item-{i}") for i in range(20_000)]
    share = sum(d < 0.05 for d in draws) / len(draws)
    assert 0.04 < share < 0.06
    assert audit_draw("other-seed", "p", "item-1") != audit_draw("s", "p", "item-1")


# -- calibrated routing and target precision ---------------------------------------------------------------

OVERCONFIDENT = Calibrator(method=Method.isotonic, n_samples=100, x=(0.0, 0.95, 1.0), y=(0.0, 0.6, 0.99))


def test_the_threshold_applies_to_the_calibrated_confidence() -> None:
    calibration = ProjectCalibration(overall=OVERCONFIDENT)
    decision = decide(proposal(0.95), TASK, POLICY, draw=0.5, calibration=calibration)
    assert decision.reasons == (RoutingReason.low_confidence,)
    assert decision.calibrated_confidence == pytest.approx(0.6)
    assert decision.threshold == 0.9
    assert decide(proposal(1.0), TASK, POLICY, draw=0.5, calibration=calibration).auto_accepted


def test_without_a_calibration_the_raw_confidence_counts_as_calibrated() -> None:
    decision = decide(proposal(0.93), TASK, POLICY, draw=0.5)
    assert decision.auto_accepted
    assert decision.calibrated_confidence == 0.93


def test_target_precision_uses_the_threshold_derived_for_it() -> None:
    target = RoutingPolicy(threshold=0.99, audit_rate=0.0, target_precision=0.95)
    calibration = ProjectCalibration(overall=Calibrator(), target_precision=0.95, threshold=0.8)
    accepted = decide(proposal(0.85), TASK, target, draw=0.5, calibration=calibration)
    assert accepted.auto_accepted
    assert accepted.threshold == 0.8
    assert decide(proposal(0.75), TASK, target, draw=0.5, calibration=calibration).reasons == (
        RoutingReason.low_confidence,
    )


@pytest.mark.parametrize(
    "calibration",
    [
        None,
        ProjectCalibration(overall=Calibrator(), target_precision=0.95, threshold=None),
        ProjectCalibration(overall=Calibrator(), target_precision=0.8, threshold=0.5),
    ],
    ids=["no-calibration", "unattainable", "fitted-for-another-target"],
)
def test_nothing_is_auto_accepted_while_the_target_is_unattainable(calibration: ProjectCalibration | None) -> None:
    target = RoutingPolicy(threshold=0.0, audit_rate=0.0, target_precision=0.95)
    decision = decide(proposal(1.0), TASK, target, draw=0.5, calibration=calibration)
    assert decision.outcome is DecisionOutcome.needs_review
    assert decision.reasons == (RoutingReason.low_confidence,)
    assert decision.threshold is None


def test_a_label_with_its_own_threshold_uses_it() -> None:
    target = RoutingPolicy(audit_rate=0.0, target_precision=0.95)
    calibration = ProjectCalibration(
        overall=Calibrator(), target_precision=0.95, threshold=0.7, label_thresholds={"spam": None, "ham": 0.9}
    )
    assert not decide(proposal(0.99, ("spam",)), TASK, target, draw=0.5, calibration=calibration).auto_accepted
    assert not decide(proposal(0.85, ("ham",)), TASK, target, draw=0.5, calibration=calibration).auto_accepted
    assert decide(proposal(0.95, ("ham",)), TASK, target, draw=0.5, calibration=calibration).auto_accepted
