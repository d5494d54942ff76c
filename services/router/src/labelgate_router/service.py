"""The router service: label.scored in, decision.made (and label.finalized for auto-accepts) out."""

from __future__ import annotations

from collections.abc import Mapping

from labelgate_core.consumer import Handler, HandlerContext, on
from labelgate_core.events import (
    DecisionMade,
    FinalSource,
    LabelFinalized,
    LabelScored,
    ReviewSubmitted,
)
from labelgate_core.service import Service
from labelgate_core.store.port import Index

from .policy import audit_draw, decide
from .settings import RouterSettings

PRODUCER = "router"


class RouterService(Service):
    name = "router"

    def __init__(self, *, settings: RouterSettings | None = None, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.settings = settings or RouterSettings()

    def subscriptions(self) -> Mapping[str, Mapping[str, Handler]]:
        return {
            "router.decide": dict([on(LabelScored, self.on_label_scored)]),
            "router.feedback": dict([on(ReviewSubmitted, self.on_review_submitted)]),
        }

    async def setup(self) -> None:
        await self.store.ensure_indexes(
            "decisions", [Index(("project_id", "item_id")), Index(("scored_event_id",), unique=True)]
        )
        await self.store.ensure_indexes("outcomes", [Index(("project_id", "reasons_key"))])

    async def on_label_scored(self, event: LabelScored, ctx: HandlerContext) -> None:
        draw = audit_draw(self.settings.audit_seed, event.project_id, event.item_id)
        decision = decide(event.proposal, event.task, event.routing, draw)
        made = DecisionMade(
            **event.caused(),
            producer=PRODUCER,
            outcome=decision.outcome,
            reasons=decision.reasons,
            proposal=event.proposal,
            guideline_version=event.guideline_version,
            submitted_at=event.submitted_at,
        )
        await ctx.tx.insert(
            "decisions",
            {
                "_id": made.event_id,
                "scored_event_id": event.event_id,
                "project_id": event.project_id,
                "item_id": event.item_id,
                "outcome": decision.outcome.value,
                "reasons": [r.value for r in decision.reasons],
                "confidence": event.proposal.confidence,
                "labels": list(event.proposal.labels),
                "model_version": event.proposal.model_version,
                "guideline_version": event.guideline_version,
                "decided_at": made.occurred_at.timestamp(),
            },
        )
        await ctx.emit(made)
        if decision.auto_accepted:
            await ctx.emit(
                LabelFinalized(
                    **made.caused(),
                    producer=PRODUCER,
                    labels=event.proposal.labels,
                    source=FinalSource.auto,
                    guideline_version=event.guideline_version,
                    model_id=event.proposal.model_id,
                    model_version=event.proposal.model_version,
                    confidence=event.proposal.confidence,
                    submitted_at=event.submitted_at,
                )
            )

    async def on_review_submitted(self, event: ReviewSubmitted, ctx: HandlerContext) -> None:
        """Keep each reviewed outcome (AI said, human said, at what confidence): the data calibration learns
        from. A re-review of an item replaces its outcome."""
        await ctx.tx.update_one(
            "outcomes",
            {"_id": f"{event.project_id}:{event.item_id}"},
            set={
                "project_id": event.project_id,
                "item_id": event.item_id,
                "ai_labels": list(event.ai_labels),
                "labels": list(event.labels),
                "confidence": event.ai_confidence,
                "correct": sorted(event.ai_labels) == sorted(event.labels),
                "reasons_key": ",".join(sorted(r.value for r in event.decision_reasons)),
                "guideline_version": event.guideline_version,
            },
            upsert=True,
        )
