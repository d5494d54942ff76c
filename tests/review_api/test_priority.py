"""The review value that orders the queue: cold start first, then uncertain, disputed and rare proposals."""

from __future__ import annotations

import pytest

from labelgate_core.events import DecisionMade, DecisionOutcome, Proposal, RoutingReason, utcnow
from labelgate_review_api.priority import review_priority

pytestmark = pytest.mark.unit


def decided(
    confidence: float | None,
    *,
    calibrated: float | None = None,
    label: str = "sports",
    agreement: float | None = None,
    reasons: tuple[RoutingReason, ...] = (RoutingReason.low_confidence,),
) -> DecisionMade:
    return DecisionMade(
        producer="router",
        project_id="news",
        item_id="i",
        outcome=DecisionOutcome.needs_review,
        reasons=reasons,
        proposal=Proposal(model_id="m", model_version=1, labels=(label,), confidence=confidence, agreement=agreement),
        guideline_version=1,
        submitted_at=utcnow(),
        calibrated_confidence=calibrated,
    )


def priority(event: DecisionMade, counts: dict[str, int] | None = None) -> float:
    return review_priority(event, counts or {})[0]


def test_cold_start_comes_before_the_least_confident_scored_proposal() -> None:
    cold = decided(None, reasons=(RoutingReason.no_confidence,))
    disputed = decided(0.0, agreement=0.0)
    assert priority(cold) < priority(disputed) < priority(decided(0.5))


def test_the_calibrated_confidence_counts_when_the_router_had_one() -> None:
    # Raw 0.95 that calibration says is right 40% of the time is more worth a look than a calibrated 0.9.
    assert priority(decided(0.95, calibrated=0.4)) < priority(decided(0.6, calibrated=0.9))
    assert priority(decided(0.6)) < priority(decided(0.95))


def test_ensemble_disagreement_raises_the_value() -> None:
    assert priority(decided(0.8, agreement=0.5)) < priority(decided(0.8, agreement=1.0))


def test_a_rare_class_is_reviewed_before_a_common_one() -> None:
    counts = {"sports": 40, "tech": 2}
    assert priority(decided(0.7, label="tech"), counts) < priority(decided(0.7, label="sports"), counts)
    assert priority(decided(0.7, label="politics"), counts) < priority(decided(0.7, label="tech"), counts)
