"""The shape of the review API's stored documents: how they are built, and how they read back as public views.

Times are stored as ISO-8601 strings (UTC); lease arithmetic uses epoch seconds (``available_at``)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from labelgate_core.events import DecisionMade, Proposal, RoutingPolicy, RoutingReason, TaskSpec
from labelgate_core.store.port import Doc

from .images import image_public
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
        "spans": [span.model_dump(mode="json") for span in proposal.spans],
        "boxes": [box.model_dump(mode="json") for box in proposal.boxes],
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
        image=image_public(doc["project_id"], doc["_id"], doc.get("image")),
        metadata=doc.get("metadata") or {},
        idempotency_key=doc["idempotency_key"],
        state=doc["state"],
        guideline_version=doc["guideline_version"],
        submitted_at=doc["submitted_at"],
        decision=DecisionPublic.model_validate(decision) if decision else None,
        reviews=[review_public(review) for review in reviews],
        final=FinalPublic.model_validate(final) if final else None,
        earlier_finals=[FinalPublic.model_validate(earlier) for earlier in doc.get("final_history") or ()],
        gold=doc.get("gold") is not None,
        gold_leaked=bool(doc.get("gold_leaked")),
        required_skill=doc.get("required_skill"),
    )


def reviewer_reasons(reasons: Sequence[str]) -> list[str]:
    """Why a task is in the queue, as its reviewer sees it: a gold item must look like any other task, so
    ``gold`` shows as what it is to the reviewer, an audit (of their answers)."""
    shown = [reason for reason in reasons if reason != RoutingReason.gold]
    if len(shown) < len(reasons) and RoutingReason.audit not in shown:
        shown.append(RoutingReason.audit.value)
    return shown


def leased_task(task: Doc, item: Doc, project: Doc) -> LeasedTask:
    return LeasedTask(
        task_id=task["_id"],
        project_id=task["project_id"],
        item_id=task["item_id"],
        text=item["text"],
        image=image_public(task["project_id"], task["item_id"], item.get("image")),
        metadata=item.get("metadata") or {},
        task=TaskSpecPublic.model_validate(project["task"]),
        guideline_version=task.get("guideline_version") or item["guideline_version"],
        proposal=proposal_public(task.get("proposal")),
        reasons=reviewer_reasons(task.get("reasons") or ()),
        required_skill=task.get("skill") or None,
        lease_token=task["lease_token"],
        lease_expires_at=from_epoch(task["available_at"]),
    )


def export_line(doc: Doc) -> ExportLine:
    image = image_public(doc["project_id"], doc["item_id"], doc.get("image"))
    return ExportLine.model_validate({**doc, "image": image})


def final_fields(labels: Sequence[str], source: str, finalized_at: datetime, **extra: Any) -> Doc:
    return {"labels": list(labels), "source": source, "finalized_at": iso(finalized_at), **extra}
