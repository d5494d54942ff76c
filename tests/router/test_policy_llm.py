"""Routing of language-model proposals: invalid output and ensemble disagreement always reach a human."""

from __future__ import annotations

import pytest

from labelgate_core.events import DecisionOutcome, LabelDef, Proposal, RoutingPolicy, RoutingReason, TaskSpec
from labelgate_router.policy import decide

pytestmark = pytest.mark.unit

TASK = TaskSpec(labels=(LabelDef(name="spam"), LabelDef(name="ham")))
LENIENT = RoutingPolicy(threshold=0.0, audit_rate=0.0)


def proposal(**fields: object) -> Proposal:
    base: dict[str, object] = {"model_id": "gpt-x", "model_version": 0, "labels": ("spam",), "confidence": 0.99}
    return Proposal.model_validate(base | fields)


def test_invalid_output_goes_to_review_even_when_confident() -> None:
    decision = decide(proposal(invalid=True, error="label outside the schema"), TASK, LENIENT, draw=0.99)
    assert decision.outcome is DecisionOutcome.needs_review
    assert decision.reasons == (RoutingReason.invalid_output,)


def test_invalid_output_without_confidence_is_reported_as_invalid() -> None:
    decision = decide(proposal(invalid=True, labels=(), confidence=None), TASK, LENIENT, draw=0.99)
    assert decision.reasons == (RoutingReason.invalid_output,)


def test_ensemble_disagreement_goes_to_review_even_when_confident() -> None:
    decision = decide(proposal(agreement=0.5), TASK, LENIENT, draw=0.99)
    assert decision.outcome is DecisionOutcome.needs_review
    assert decision.reasons == (RoutingReason.disagreement,)


def test_unanimous_ensemble_is_routed_on_its_confidence() -> None:
    assert decide(proposal(agreement=1.0), TASK, LENIENT, draw=0.99).auto_accepted
    low = decide(proposal(agreement=1.0, confidence=0.5), TASK, RoutingPolicy(threshold=0.9), draw=0.99)
    assert low.reasons == (RoutingReason.low_confidence,)


def test_subjective_tasks_stay_subjective_whatever_the_model_said() -> None:
    subjective = TaskSpec(labels=TASK.labels, subjective=True)
    assert decide(proposal(invalid=True), subjective, LENIENT, draw=0.99).reasons == (RoutingReason.subjective,)


def test_older_proposals_without_the_new_fields_route_as_before() -> None:
    legacy = Proposal.model_validate_json(
        '{"model_id": "m", "model_version": 1, "labels": ["ham"], "confidence": 0.95}'
    )
    assert decide(legacy, TASK, LENIENT, draw=0.99).auto_accepted
