"""Review rounds: each time an item goes to reviewers it gets a round of answer slots (review tasks), one slot,
or ``overlap_k`` for an overlapped round; the round settles into the item's final label once every slot is
answered.

An item has at most one open round, which is what keeps a repeated decision, a redelivered event or a retried
request from queueing it twice. A round may open for an item that is already final (a guideline change, a
suspected label issue): its answer then replaces the final, and the old one is kept in the item's history."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from labelgate_core.events import RoutingReason, TaskSpec
from labelgate_core.store.port import Doc

from .documents import iso, task_id_for, task_spec
from .errors import InvalidLabelsError
from .overlap import (
    AnswerKey,
    Consensus,
    answer_key,
    answers_needed,
    consensus,
    history_annotations,
    overlap_draw,
)
from .repository import ReviewWriter
from .schemas import ConsensusMethod, ItemState
from .settings import ReviewApiSettings

_ROUND_NAMESPACE = uuid.UUID("0b6f3c9e-8f7a-4d21-b5d3-6a2e9c4f1d70")

REREVIEW_REASONS = frozenset({RoutingReason.label_issue, RoutingReason.guideline_change})
"""Reasons for which a decision may send an item that is already final back to review."""

REREVIEW_PRIORITY = 0.5
"""Queue priority of re-reviews after a guideline change: after every fresh task (those lie in [-2, 0]), so a
bulk re-queue never starves new items."""


def requeue_scope(spec: TaskSpec, requeue: str | Sequence[str]) -> frozenset[str] | None:
    """Which finals a guideline change re-queues: None for none, the empty set for all, else those whose final
    labels include one of the returned labels (checked against the project's labels: a 422 names an unknown)."""
    if requeue == "none":
        return None
    if requeue == "all":
        return frozenset()
    allowed = spec.label_names
    unknown = [label for label in requeue if label not in allowed]
    if unknown:
        raise InvalidLabelsError(
            f"requeue: label '{unknown[0]}' is not in the project's labels (allowed: {', '.join(allowed[:50])})",
            details={"unknown": unknown, "allowed": list(allowed)},
        )
    return frozenset(requeue)


def slot_id(project_id: str, item_id: str, round_no: int, slot: int) -> str:
    """The task id of one answer slot: derived, so the same round never inserts a slot twice. The first slot of
    an item's first round keeps the id items have always had (``task_id_for``)."""
    if round_no == 0 and slot == 0:
        return task_id_for(project_id, item_id)
    return str(uuid.uuid5(_ROUND_NAMESPACE, f"{project_id}/{item_id}/review/{round_no}/{slot}"))


async def has_open_round(writer: ReviewWriter, item: Doc) -> bool:
    project_id, item_id = item["project_id"], item["_id"]
    if not item.get("review_rounds") and item.get("state") == ItemState.submitted.value:
        return False  # never queued: tasks are only ever inserted with the item's round count or state
    if await writer.open_tasks_of_item(project_id, item_id):
        return True
    # Items queued before rounds existed have no round count: their one task id tells.
    first = task_id_for(project_id, item_id)
    return not item.get("review_rounds") and await writer.get_task(project_id, first) is not None


async def open_round(
    writer: ReviewWriter,
    project: Doc,
    item: Doc,
    *,
    now: datetime,
    reasons: Sequence[str],
    proposal: Doc | None,
    priority: float,
    value: float,
    cause_event_id: str | None,
    trace_id: str | None,
    item_fields: Doc | None = None,
) -> str | None:
    """Queue a review round for ``item`` and mark it queued (with ``item_fields`` set in the same write); the
    round's id (its first task's id), or None when the item already has an open round."""
    if await has_open_round(writer, item):
        return None
    project_id, item_id = item["project_id"], item["_id"]
    round_no = int(item.get("review_rounds") or 0)
    k = answers_needed(task_spec(project).type, project["routing"], overlap_draw(project_id, item_id, round_no))
    group = slot_id(project_id, item_id, round_no, 0)
    gold = item.get("gold") is not None
    if gold and "gold" not in reasons:
        reasons = [*reasons, "gold"]
    base: Doc = {
        "project_id": project_id,
        "item_id": item_id,
        "done": False,
        "priority": priority,
        "review_value": value,
        "queued_at": iso(now),
        "queued_ts": now.timestamp(),
        "available_at": 0.0,
        "lease_token": None,
        "reviewer_id": None,
        "lease_count": 0,
        "proposal": proposal,
        "reasons": list(reasons),
        "decision_event_id": cause_event_id,
        "trace_id": trace_id,
        "review_id": None,
        "closed_reason": None,
        "group": group,
        "round": round_no,
        "answers_needed": k,
        "skill": item.get("required_skill") or "",
        "gold": gold,
        "guideline_version": int(project["guideline_version"]),
    }
    for slot in range(k):
        await writer.insert_task({**base, "_id": slot_id(project_id, item_id, round_no, slot), "slot": slot})
    await writer.update_item(
        project_id, item_id, {**(item_fields or {}), "state": ItemState.queued.value, "review_rounds": round_no + 1}
    )
    return group


@dataclass(frozen=True)
class Settled:
    """A round whose every slot is answered."""

    reviews: list[Doc]
    """Its answers, in the order to announce them: those that agree with the consensus last, so that a reader
    keeping one label per item (the labeler's examples, the router's outcomes) keeps the consensus."""
    consensus: Consensus | None
    """None for a round of one answer."""


async def settle_round(
    writer: ReviewWriter, project: Doc, task: Doc, settings: ReviewApiSettings, answer_id: str
) -> Settled | None:
    """The round of ``task`` (just answered, by the review ``answer_id``) once every slot is answered; None
    while answers are missing, or when its answers tie and one more reviewer was asked (an extra slot, up to
    ``overlap_max_extra``; past that the tie stands, broken by the stable majority-vote rule and flagged)."""
    project_id, item_id = task["project_id"], task["item_id"]
    group = task.get("group") or task["_id"]
    if int(task.get("answers_needed") or 1) > 1:
        # Two answers to one round committing side by side must not both see the other slot still open (a
        # store with snapshot isolation would let neither settle): both write the item, each a value of its own
        # (a store that replays a conflicting transaction sees the change), so one of them runs again after the
        # other.
        await writer.update_item(project_id, item_id, {"last_answer_id": answer_id})
    if "group" in task:
        tasks = await writer.tasks_of_group(project_id, item_id, group)
    else:  # a task queued before rounds existed: a round of its own
        tasks = [doc for doc in [await writer.get_task(project_id, task["_id"])] if doc is not None]
    if any(not t["done"] for t in tasks):
        return None
    reviews = await writer.reviews_of_group(project_id, item_id, group)
    if len(tasks) == 1:
        return Settled(reviews=reviews, consensus=None)
    method = ConsensusMethod(project["routing"].get("consensus") or ConsensusMethod.majority)
    history = []
    if method is ConsensusMethod.dawid_skene:
        earlier = await writer.overlap_reviews(project_id, limit=settings.consensus_history)
        history = history_annotations([r for r in earlier if r.get("group") != group])
    answers: list[tuple[str, AnswerKey]] = [(r["reviewer_id"], answer_key(r["labels"])) for r in reviews]
    result = consensus(answers, method=method, history=history, min_history=settings.dawid_skene_min_answers)
    needed = int(task.get("answers_needed") or len(tasks))
    if result.tied and len(tasks) < needed + settings.overlap_max_extra:
        first = min(tasks, key=lambda t: int(t.get("slot") or 0))
        slot = len(tasks)
        await writer.insert_task(
            {
                **first,
                "_id": slot_id(project_id, item_id, int(first.get("round") or 0), slot),
                "slot": slot,
                "done": False,
                "available_at": 0.0,
                "lease_token": None,
                "reviewer_id": None,
                "leased_ts": None,
                "lease_count": 0,
                "review_id": None,
                "closed_reason": None,
                "closed_at": None,
            }
        )
        return None
    ordered = sorted(reviews, key=lambda r: answer_key(r["labels"]) == result.labels)
    return Settled(reviews=ordered, consensus=result)
