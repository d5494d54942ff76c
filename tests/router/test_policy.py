"""The routing policy decides as a project owner would expect."""

from __future__ import annotations

import pytest

from labelgate_core.events import DecisionOutcome, LabelDef, Proposal, RoutingPolicy, RoutingReason, TaskSpec
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
