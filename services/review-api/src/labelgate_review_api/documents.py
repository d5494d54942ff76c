"""The shape of the review API's stored documents: how they are built, and how they read back as public views.

Times are stored as ISO-8601 strings (UTC); lease arithmetic uses epoch seconds (``available_at``)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from labelgate_core.events import DecisionMade, Proposal, RoutingPolicy, TaskSpec
from labelgate_core.store.port import Doc

from .schemas import (
    DecisionPublic,
    ExportLine,
    FinalPublic,
    ItemPublic,
    LeasedTask,
    ProjectPublic,
    ProposalPublic,
    ReviewPublic,
    TaskSpecPublic,
)

PRODUCER = "review-api"
"""The ``producer`` of every event this service emits, and its name as a service."""

_TASK_NAMESPACE = uuid.UUID("5f0c8a52-3d4e-4b8f-9a61-2c7e1d0b9f43")


def task_id_for(project_id: str, item_id: str) -> str:
    """The review task of an item: derived from the item, so a repeated decision finds the task it queued."""
    return str(uuid.uuid5(_TASK_NAMESPACE, f"{project_id}/{item_id}/review"))


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def from_epoch(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


# -- building documents --------------------------------------------------------------------------------------


def proposal_doc(proposal: Proposal) -> Doc:
    return {
        "model_id": proposal.model_id,
        "model_version": proposal.model_version,
        "labels": list(proposal.labels),
        "confidence": proposal.confidence,
        "scores": dict(proposal.scores),
    }


def decision_doc(event: DecisionMade) -> Doc:
    return {
        "outcome": event.outcome.value,
        "reasons": [reason.value for reason in event.reasons],
        "proposal": proposal_doc(event.proposal),
        "decided_at": iso(event.occurred_at),
        "event_id": event.event_id,
        "calibrated_confidence": event.calibrated_confidence,
        "calibration_version": event.calibration_version,
        "threshold": event.threshold,
    }


def task_doc(event: DecisionMade, *, now: datetime, priority: float, value: float) -> Doc:
    """An open review task for the item ``event`` decided on. Lower priority is served first (see
    ``priority.review_priority``); ``value`` is the expected value of the review it was derived from."""
    return {
        "_id": task_id_for(event.project_id, event.item_id),
        "project_id": event.project_id,
        "item_id": event.item_id,
        "done": False,
        "priority": priority,
        "review_value": value,
        "queued_at": iso(now),
        "queued_ts": now.timestamp(),
        "available_at": 0.0,
        "lease_token": None,
        "reviewer_id": None,
        "lease_count": 0,
        "proposal": proposal_doc(event.proposal),
        "reasons": [reason.value for reason in event.reasons],
        "decision_event_id": event.event_id,
        "trace_id": event.trace_id,
        "review_id": None,
        "closed_reason": None,
    }


def task_spec(project: Doc) -> TaskSpec:
    return TaskSpec.model_validate(project["task"])


def routing_policy(project: Doc) -> RoutingPolicy:
    return RoutingPolicy.model_validate(project["routing"])


# -- reading them back ---------------------------------------------------------------------------------------


def project_public(doc: Doc) -> ProjectPublic:
    return ProjectPublic.model_validate({**doc, "id": doc["_id"]})


def proposal_public(doc: Doc | None) -> ProposalPublic | None:
    return ProposalPublic.model_validate(doc) if doc else None


def review_public(doc: Doc) -> ReviewPublic:
    return ReviewPublic.model_validate({**doc, "review_id": doc["_id"]})


def item_public(doc: Doc, reviews: Sequence[Doc]) -> ItemPublic:
    decision = doc.get("decision")
    final = doc.get("final")
    return ItemPublic(
        item_id=doc["_id"],
        project_id=doc["project_id"],
        text=doc["text"],
        metadata=doc.get("metadata") or {},
        idempotency_key=doc["idempotency_key"],
        state=doc["state"],
        guideline_version=doc["guideline_version"],
        submitted_at=doc["submitted_at"],
        decision=DecisionPublic.model_validate(decision) if decision else None,
        reviews=[review_public(review) for review in reviews],
        final=FinalPublic.model_validate(final) if final else None,
    )


def leased_task(task: Doc, item: Doc, project: Doc) -> LeasedTask:
    return LeasedTask(
        task_id=task["_id"],
        project_id=task["project_id"],
        item_id=task["item_id"],
        text=item["text"],
        metadata=item.get("metadata") or {},
        task=TaskSpecPublic.model_validate(project["task"]),
        guideline_version=item["guideline_version"],
        proposal=proposal_public(task.get("proposal")),
        reasons=task.get("reasons") or [],
        lease_token=task["lease_token"],
        lease_expires_at=from_epoch(task["available_at"]),
    )


def export_line(doc: Doc) -> ExportLine:
    return ExportLine.model_validate(doc)


def final_fields(labels: Sequence[str], source: str, finalized_at: datetime, **extra: Any) -> Doc:
    return {"labels": list(labels), "source": source, "finalized_at": iso(finalized_at), **extra}
