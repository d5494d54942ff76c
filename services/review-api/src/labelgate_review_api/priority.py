"""The review queue's order: the expected value of reviewing an item (active learning), cold start first.

Leasing serves the lowest ``priority`` first, so the priority is the negated value. Proposals without a
confidence (the labeler has no model yet) come before every scored one: their reviews are what the first model
is trained on. The value is computed when the task is queued, from the class counts of that moment."""

from __future__ import annotations

from collections.abc import Mapping

from labelgate_core.events import DecisionMade, RoutingReason
from labelgate_quality.value import Candidate, review_value


def review_candidate(event: DecisionMade) -> Candidate:
    """The decided proposal as the value model sees it: calibrated confidence when the router had one, else the
    raw confidence; ensemble disagreement from the members' agreement."""
    proposal = event.proposal
    confidence = event.calibrated_confidence if event.calibrated_confidence is not None else proposal.confidence
    agreement = proposal.agreement
    return Candidate(
        item_id=event.item_id,
        text="",
        label=proposal.labels[0] if proposal.labels else None,
        confidence=confidence,
        disagreement=1.0 - agreement if agreement is not None else 0.0,
    )


def is_cold_start(event: DecisionMade) -> bool:
    return event.proposal.confidence is None or RoutingReason.no_confidence in event.reasons


def review_priority(event: DecisionMade, final_label_counts: Mapping[str, int]) -> tuple[float, float]:
    """``(priority, value)`` of the review task for ``event``: priority in [-2, -1] for cold start, in [-1, 0]
    otherwise; a higher value gets a lower priority."""
    value = review_value(review_candidate(event), final_label_counts)
    return (-1.0 - value if is_cold_start(event) else -value), value
