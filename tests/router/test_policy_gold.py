"""Gold items are never auto-accepted, however confident the model."""

from __future__ import annotations

import pytest

from labelgate_core.events import DecisionOutcome, LabelDef, Proposal, RoutingPolicy, RoutingReason, TaskSpec
from labelgate_router.policy import decide

pytestmark = pytest.mark.unit

TASK = TaskSpec(labels=(LabelDef(name="spam"), LabelDef(name="ham")))


@pytest.mark.parametrize("confidence", [None, 0.2, 0.999])
def test_a_gold_item_always_goes_to_review_with_reason_gold(confidence: float | None) -> None:
    proposal = Proposal(model_id="m", model_version=1, labels=("spam",), confidence=confidence)

    decision = decide(proposal, TASK, RoutingPolicy(threshold=0.5, audit_rate=0.0), draw=0.99, gold=True)

    assert decision.outcome is DecisionOutcome.needs_review
    assert decision.reasons == (RoutingReason.gold,)


def test_an_ordinary_confident_item_is_still_auto_accepted() -> None:
    proposal = Proposal(model_id="m", model_version=1, labels=("spam",), confidence=0.999)

    assert decide(proposal, TASK, RoutingPolicy(threshold=0.5, audit_rate=0.0), draw=0.99).auto_accepted
