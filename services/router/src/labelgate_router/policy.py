"""The routing policy: pure functions from a scored proposal to a decision and its reasons."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from labelgate_core.events import DecisionOutcome, Proposal, RoutingPolicy, RoutingReason, TaskSpec


@dataclass(frozen=True)
class Decision:
    outcome: DecisionOutcome
    reasons: tuple[RoutingReason, ...]

    @property
    def auto_accepted(self) -> bool:
        return self.outcome is DecisionOutcome.auto_accepted


def audit_draw(seed: str, project_id: str, item_id: str) -> float:
    """A uniform number in [0, 1) fixed by the item: replays and restarts audit the same items."""
    digest = hashlib.sha256(f"{seed}\x00{project_id}\x00{item_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def decide(proposal: Proposal, task: TaskSpec, routing: RoutingPolicy, draw: float) -> Decision:
    """Subjective tasks, invalid model output, ensemble disagreement and unscored proposals always go to a
    human; a scored proposal is auto-accepted when its confidence reaches the threshold, except for a random
    audit share of those, which a human checks."""
    review = DecisionOutcome.needs_review
    if task.subjective:
        return Decision(review, (RoutingReason.subjective,))
    if proposal.invalid:
        # Checked before confidence: an answer outside the schema may still carry a (meaningless) score.
        return Decision(review, (RoutingReason.invalid_output,))
    if proposal.agreement is not None and proposal.agreement < 1.0:
        return Decision(review, (RoutingReason.disagreement,))
    if proposal.confidence is None:
        return Decision(review, (RoutingReason.no_confidence,))
    if proposal.confidence < routing.threshold:
        return Decision(review, (RoutingReason.low_confidence,))
    if draw < routing.audit_rate:
        return Decision(review, (RoutingReason.audit,))
    return Decision(DecisionOutcome.auto_accepted, (RoutingReason.confident,))
