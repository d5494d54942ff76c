"""The routing policy: pure functions from a scored proposal to a decision and its reasons."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from labelgate_core.events import DecisionOutcome, Proposal, RoutingPolicy, RoutingReason, TaskSpec
from labelgate_quality.calibration import ProjectCalibration


@dataclass(frozen=True)
class Decision:
    outcome: DecisionOutcome
    reasons: tuple[RoutingReason, ...]
    calibrated_confidence: float | None = None
    threshold: float | None = None
    """The threshold the calibrated confidence was held against; None when none applied."""

    @property
    def auto_accepted(self) -> bool:
        return self.outcome is DecisionOutcome.auto_accepted


def audit_draw(seed: str, project_id: str, item_id: str) -> float:
    """A uniform number in [0, 1) fixed by the item: replays and restarts audit the same items."""
    digest = hashlib.sha256(f"{seed}\x00{project_id}\x00{item_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def applicable_threshold(
    routing: RoutingPolicy, calibration: ProjectCalibration | None, label: str | None
) -> float | None:
    """The calibrated-confidence threshold for ``label``: the project's fixed one, or, with a target precision,
    the one derived from reviewed outcomes for that very target; None while no threshold attains it."""
    if routing.target_precision is None:
        return routing.threshold
    if calibration is None or calibration.target_precision != routing.target_precision:
        return None  # fitted for another target (or not yet): nothing is known to reach this one
    return calibration.threshold_for(label)


def decide(
    proposal: Proposal,
    task: TaskSpec,
    routing: RoutingPolicy,
    draw: float,
    calibration: ProjectCalibration | None = None,
    *,
    gold: bool = False,
    unreliable: frozenset[str] = frozenset(),
) -> Decision:
    """Gold items (checks of the reviewers, whose answer only the review API knows) are never auto-accepted.
    Subjective tasks, invalid model output, ensemble disagreement and unscored proposals always go to a
    human; a scored proposal is auto-accepted when its calibrated confidence reaches the threshold (the
    project's, or the one derived for its target precision), except for a random audit share of those, which a
    human checks. With ``routing.exclude_unreliable_labels``, a scored proposal of a label in ``unreliable``
    (labels the AI is consistently wrong on) goes to a human too. Without a ``calibration`` the raw confidence
    is taken as calibrated."""
    review = DecisionOutcome.needs_review
    if gold:
        return Decision(review, (RoutingReason.gold,))
    if task.subjective:
        return Decision(review, (RoutingReason.subjective,))
    if proposal.invalid:
        # Checked before confidence: an answer outside the schema may still carry a (meaningless) score.
        return Decision(review, (RoutingReason.invalid_output,))
    if proposal.agreement is not None and proposal.agreement < 1.0:
        return Decision(review, (RoutingReason.disagreement,))
    if proposal.confidence is None:
        return Decision(review, (RoutingReason.no_confidence,))
    label = proposal.labels[0] if proposal.labels else None
    calibrated = calibration.calibrate(proposal.confidence, label) if calibration else proposal.confidence
    threshold = applicable_threshold(routing, calibration, label)
    if routing.exclude_unreliable_labels and any(name in unreliable for name in proposal.labels):
        # The AI is consistently wrong on this label (from reviewed outcomes): no confidence makes up for it.
        return Decision(review, (RoutingReason.unreliable_label,), calibrated, threshold)
    if threshold is None or calibrated < threshold:
        return Decision(review, (RoutingReason.low_confidence,), calibrated, threshold)
    if draw < routing.audit_rate:
        return Decision(review, (RoutingReason.audit,), calibrated, threshold)
    return Decision(DecisionOutcome.auto_accepted, (RoutingReason.confident,), calibrated, threshold)
