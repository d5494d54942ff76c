"""Events as the other services publish them, with explicit times so that latencies are known exactly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from labelgate_core.events import (
    DecisionMade,
    DecisionOutcome,
    Event,
    FinalSource,
    GuidelineChanged,
    ItemSubmitted,
    LabelDef,
    LabelFinalized,
    LabelScored,
    ModelUpdated,
    Proposal,
    ReviewAction,
    ReviewSubmitted,
    RoutingPolicy,
    RoutingReason,
    TaskSpec,
    TaskType,
)

T0 = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)
TOPICS_TASK = TaskSpec(labels=(LabelDef(name="billing"), LabelDef(name="bug"), LabelDef(name="other")))
TAGS_TASK = TaskSpec(
    type=TaskType.multi_label,
    labels=(LabelDef(name="urgent"), LabelDef(name="refund"), LabelDef(name="legal"), LabelDef(name="vip")),
)
ROUTING = RoutingPolicy(threshold=0.9, audit_rate=0.1)
MODEL = "local-tfidf"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def submitted(project: str, item: str, *, task: TaskSpec = TOPICS_TASK, start: float = 0.0) -> ItemSubmitted:
    return ItemSubmitted(
        producer="review-api", project_id=project, item_id=item, occurred_at=at(start),
        text=f"text of {item}", task=task, routing=ROUTING, guideline_version=1,
    )


def scored(item: ItemSubmitted, labels: tuple[str, ...], *, after: float, cost: float = 0.002) -> LabelScored:
    confidence = 0.8 if labels else None
    return LabelScored(
        producer="labeler", **item.caused(), occurred_at=item.occurred_at + timedelta(seconds=after),
        proposal=Proposal(model_id=MODEL, model_version=1, labels=labels, confidence=confidence, cost_usd=cost),
        task=item.task, routing=item.routing, guideline_version=1, submitted_at=item.occurred_at,
    )


def decided(
    label: LabelScored, outcome: DecisionOutcome, reasons: tuple[RoutingReason, ...], *, after: float
) -> DecisionMade:
    return DecisionMade(
        producer="router", **label.caused(), occurred_at=label.submitted_at + timedelta(seconds=after),
        outcome=outcome, reasons=reasons, proposal=label.proposal, guideline_version=1,
        submitted_at=label.submitted_at,
    )


def reviewed(
    decision: DecisionMade, human: tuple[str, ...], *, after: float, task: TaskSpec = TOPICS_TASK,
    queued_delay: float = 0.05,
) -> ReviewSubmitted:
    """A review ``after`` seconds after the item entered the queue (``queued_delay`` after the decision)."""
    ai = decision.proposal.labels
    queued_at = decision.occurred_at + timedelta(seconds=queued_delay)
    return ReviewSubmitted(
        producer="review-api", **decision.caused(), occurred_at=queued_at + timedelta(seconds=after),
        review_id=f"review-of-{decision.item_id}-{after}", reviewer_id="rev-1",
        action=ReviewAction.confirm if set(ai) == set(human) else ReviewAction.correct,
        labels=human, ai_labels=ai, ai_confidence=decision.proposal.confidence,
        decision_reasons=decision.reasons, text="…", task=task, guideline_version=1, duration_s=12.0,
        queued_at=queued_at,
    )


def finalized(
    cause: DecisionMade | ReviewSubmitted, labels: tuple[str, ...], source: FinalSource, submitted_at: datetime
) -> LabelFinalized:
    return LabelFinalized(
        producer="router" if source is FinalSource.auto else "review-api", **cause.caused(),
        occurred_at=cause.occurred_at + timedelta(milliseconds=1), labels=labels, source=source,
        guideline_version=1, submitted_at=submitted_at,
    )


def model_updated(project: str, version: int, *, start: float = 0.0) -> ModelUpdated:
    return ModelUpdated(
        producer="labeler", project_id=project, item_id=project, occurred_at=at(start), model_id=MODEL,
        model_version=version, trained_on=50 * version, holdout_accuracy=0.8, train_seconds=1.5,
    )


def guideline_changed(project: str, version: int, *, start: float = 0.0) -> GuidelineChanged:
    return GuidelineChanged(
        producer="review-api", project_id=project, item_id=project, occurred_at=at(start), version=version,
        text=f"guidelines v{version}", task=TOPICS_TASK, routing=ROUTING,
    )


def auto_accepted(project: str, item: str, ai: str, *, decision_s: float, start: float = 0.0) -> list[Event]:
    """An item the router accepted on its own: submitted → scored → decided → finalized."""
    sub = submitted(project, item, start=start)
    label = scored(sub, (ai,), after=decision_s / 2)
    decision = decided(label, DecisionOutcome.auto_accepted, (RoutingReason.confident,), after=decision_s)
    return [sub, label, decision, finalized(decision, (ai,), FinalSource.auto, sub.occurred_at)]


def sent_to_review(
    project: str, item: str, ai: tuple[str, ...], reasons: tuple[RoutingReason, ...], *, decision_s: float,
    start: float = 0.0, task: TaskSpec = TOPICS_TASK,
) -> list[Event]:
    """An item the router sent to the review queue, not yet reviewed: submitted → scored → decided."""
    sub = submitted(project, item, task=task, start=start)
    label = scored(sub, ai, after=decision_s / 2)
    return [sub, label, decided(label, DecisionOutcome.needs_review, reasons, after=decision_s)]


def human_reviewed(
    project: str, item: str, ai: tuple[str, ...], human: tuple[str, ...], reasons: tuple[RoutingReason, ...], *,
    decision_s: float, review_s: float, start: float = 0.0, task: TaskSpec = TOPICS_TASK,
) -> list[Event]:
    """An item that went to review and got its final label from a human."""
    events = sent_to_review(project, item, ai, reasons, decision_s=decision_s, start=start, task=task)
    decision = events[-1]
    assert isinstance(decision, DecisionMade)
    review = reviewed(decision, human, after=review_s, task=task)
    return [*events, review, finalized(review, human, FinalSource.review, events[0].occurred_at)]


# -- a realistic project, as the four services would publish it ------------------------------------------

P = "acme-support"
LC, AUDIT = RoutingReason.low_confidence, RoutingReason.audit
def acme_events() -> list[Event]:
    """Eight items of a classification project, the way the four services would publish them."""
    return [
        *auto_accepted(P, "a1", "billing", decision_s=0.3),
        *auto_accepted(P, "a2", "bug", decision_s=0.7),
        *human_reviewed(P, "r1", ("bug",), ("bug",), (LC,), decision_s=2, review_s=120),
        *human_reviewed(P, "r2", ("billing",), ("other",), (LC, RoutingReason.disagreement), decision_s=4,
                        review_s=600),
        *human_reviewed(P, "r3", ("other",), ("other",), (AUDIT,), decision_s=0.4, review_s=40),
        *human_reviewed(P, "r4", ("bug",), ("billing",), (AUDIT,), decision_s=0.2, review_s=7200),
        *sent_to_review(P, "q1", (), (RoutingReason.no_confidence,), decision_s=1),
        *sent_to_review(P, "q2", ("billing",), (LC,), decision_s=3),
        model_updated(P, 2), model_updated(P, 3), guideline_changed(P, 2),
    ]


def tags_events() -> list[Event]:
    """A second, multi-label project: one reviewed item."""
    return human_reviewed("tags", "t1", ("urgent", "refund"), ("refund",), (LC,), decision_s=1, review_s=30,
                          task=TAGS_TASK)
