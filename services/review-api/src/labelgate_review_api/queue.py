"""The review queue: exclusive, expiring leases on review tasks, and the review that closes a task.

A task is leasable when it is open and its ``available_at`` (epoch seconds) has passed: open tasks start at
0, a lease moves it to the lease's end, a release moves it back to 0. So an abandoned lease frees itself when
it expires, with no sweeper, and taking a lease is a conditional update (open and free) of the first task the
reviewer may take: one that needs no skill or one they declared, and, for a slot of an overlapped round (see
``rounds``), whose other slots they neither answered nor hold. A gold item's task looks like any other.

A review closes its slot; once every slot of the round is answered, the round settles (``rounds.settle_round``)
and the item's final label is written and announced with the round's reviews."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from labelgate_core.events import (
    FinalSource,
    LabelFinalized,
    ReviewAction,
    ReviewSubmitted,
    RoutingReason,
    TaskSpec,
    new_id,
)
from labelgate_core.store.port import Doc, Store
from labelgate_core.store.retry import retry_conflicts

from .annotations import (
    Answer,
    agrees,
    answer_fields,
    box_key,
    boxes_from_docs,
    check_answer,
    check_labels,
    span_key,
    spans_from_docs,
)
from .auth import Principal, project_for
from .documents import PRODUCER, final_fields, from_epoch, iso, leased_task, task_spec
from .errors import LeaseLostError, TaskClosedError, TaskNotFoundError
from .repository import ReviewWriter
from .rounds import settle_round
from .schemas import (
    HeartbeatCreate,
    LeaseCreate,
    LeasedTask,
    LeasePublic,
    ReleaseCreate,
    ReviewCreate,
    ReviewResult,
)
from .settings import ReviewApiSettings

__all__ = ["ReviewQueue", "check_labels", "review_action"]


def review_action(spec: TaskSpec, answer: Answer, proposal: Doc | None) -> ReviewAction:
    """``confirm`` when the reviewer's answer is the AI's (see ``annotations.agrees``), ``correct`` otherwise."""
    return ReviewAction.confirm if agrees(spec, answer, proposal) else ReviewAction.correct


def _repeats(review: Doc, body: ReviewCreate) -> bool:
    """Whether ``body`` gives the answer ``review`` recorded: the same labels, spans and boxes, as sets."""
    spans = {(s.start, s.end, s.label) for s in body.spans or ()}
    boxes = {(b.label, b.x, b.y, b.width, b.height) for b in body.boxes or ()}
    labels = body.labels if body.labels is not None else [label for label, *_ in boxes] + [s[2] for s in spans]
    return (
        set(review["labels"]) == set(labels)
        and {span_key(s) for s in spans_from_docs(review.get("spans"))} == spans
        and {box_key(b) for b in boxes_from_docs(review.get("boxes"))} == boxes
    )


def gold_score(item: Doc, labels: Sequence[str]) -> Doc:
    """What a review records about a gold item: that it is one, and whether the answer matched (as sets)."""
    gold = item.get("gold")
    if gold is None:
        return {"gold": False}
    return {"gold": True, "gold_correct": set(labels) == set(gold["labels"])}


def review_submitted(
    task: Doc, item: Doc, spec: TaskSpec, review: Doc, moment: datetime, guideline_version: int
) -> ReviewSubmitted:
    """The announcement of one stored review (``review``) of ``task``'s item."""
    proposal: Doc | None = task.get("proposal")
    trace: dict[str, Any] = {"trace_id": task["trace_id"]} if task.get("trace_id") else {}
    return ReviewSubmitted(
        producer=PRODUCER,
        project_id=task["project_id"],
        item_id=task["item_id"],
        causation_id=task.get("decision_event_id"),
        occurred_at=moment,
        review_id=review["_id"],
        reviewer_id=review["reviewer_id"],
        action=ReviewAction(review["action"]),
        labels=tuple(review["labels"]),
        ai_labels=tuple(proposal.get("labels") or ()) if proposal else (),
        ai_confidence=proposal.get("confidence") if proposal else None,
        spans=spans_from_docs(review.get("spans")),
        ai_spans=spans_from_docs(proposal.get("spans")) if proposal else (),
        boxes=boxes_from_docs(review.get("boxes")),
        ai_boxes=boxes_from_docs(proposal.get("boxes")) if proposal else (),
        decision_reasons=tuple(RoutingReason(reason) for reason in task.get("reasons") or ()),
        text=item["text"],
        task=spec,
        guideline_version=guideline_version,
        duration_s=review.get("duration_s"),
        queued_at=task["queued_at"],
        gold=bool(review.get("gold")),
        **trace,
    )


class ReviewQueue:
    def __init__(
        self,
        store: Store,
        settings: ReviewApiSettings,
        clock: Callable[[], float],
        on_change: Callable[[str], None],
    ) -> None:
        self._store = store
        self._settings = settings
        self._clock = clock
        self._on_change = on_change

    @retry_conflicts
    async def lease(self, principal: Principal, project_id: str, body: LeaseCreate) -> LeasedTask | None:
        """The next task for ``body.reviewer_id``, leased to them alone; None when nothing is waiting."""
        seconds = body.lease_seconds or self._settings.lease_seconds
        async with self._store.transaction() as tx:
            writer = ReviewWriter(tx)
            project = await project_for(principal, writer, project_id)
            now = self._clock()
            task = await self._take(
                writer,
                project_id,
                body,
                now,
                set={
                    "available_at": now + seconds,
                    "lease_token": secrets.token_urlsafe(24),
                    "reviewer_id": body.reviewer_id,
                    "leased_ts": now,
                },
            )
            if task is None:
                return None
            item = await writer.get_item(project_id, task["item_id"])
            if item is None:
                raise LookupError(f"task {task['_id']} refers to missing item {task['item_id']}")
            return leased_task(task, item, project)

    async def _take(
        self, writer: ReviewWriter, project_id: str, body: LeaseCreate, now: float, set: Doc
    ) -> Doc | None:
        """The first leasable task this reviewer may take, leased: it needs no skill or one the reviewer has, and
        if it is one slot of an overlapped round, the reviewer has neither answered nor holds another slot."""
        page = self._settings.lease_scan_page
        skip = 0
        while True:
            candidates = await writer.leasable_tasks(project_id, now=now, skills=body.skills, skip=skip, limit=page)
            for candidate in candidates:
                if int(candidate.get("answers_needed") or 1) > 1 and await self._took_part(
                    writer, candidate, body.reviewer_id, now
                ):
                    continue
                taken = await writer.take_task(project_id, candidate["_id"], now=now, set=set)
                if taken is not None:
                    if int(taken.get("answers_needed") or 1) > 1:
                        # Leases of two slots of one item write the item too, so that concurrent ones conflict
                        # and the second sees the first (one reviewer never holds two slots).
                        await writer.update_item(project_id, taken["item_id"], {"last_lease": set["lease_token"]})
                    return taken
            if len(candidates) < page:
                return None
            skip += page

    @staticmethod
    async def _took_part(writer: ReviewWriter, task: Doc, reviewer_id: str, now: float) -> bool:
        slots = await writer.tasks_of_group(task["project_id"], task["item_id"], task["group"])
        return any(
            slot["_id"] != task["_id"]
            and slot.get("reviewer_id") == reviewer_id
            and (slot["done"] or slot["available_at"] > now)
            for slot in slots
        )

    @retry_conflicts
    async def heartbeat(
        self, principal: Principal, project_id: str, task_id: str, body: HeartbeatCreate
    ) -> LeasePublic:
        """Extend a lease the caller still holds, to ``lease_seconds`` from now."""
        seconds = body.lease_seconds or self._settings.lease_seconds
        async with self._store.transaction() as tx:
            writer = ReviewWriter(tx)
            await project_for(principal, writer, project_id)
            now = self._clock()
            task = await writer.update_task(
                project_id,
                task_id,
                where={"done": False, "lease_token": body.lease_token, "available_at": {"$gt": now}},
                set={"available_at": now + seconds},
            )
            if task is None:
                raise await self._refusal(writer, project_id, task_id, body.lease_token, now)
            return LeasePublic(
                task_id=task_id, lease_token=body.lease_token, lease_expires_at=from_epoch(task["available_at"])
            )

    @retry_conflicts
    async def release(self, principal: Principal, project_id: str, task_id: str, body: ReleaseCreate) -> None:
        """Give the task back: the next lease can take it at once."""
        async with self._store.transaction() as tx:
            writer = ReviewWriter(tx)
            await project_for(principal, writer, project_id)
            task = await writer.update_task(
                project_id,
                task_id,
                where={"done": False, "lease_token": body.lease_token},
                set={"available_at": 0.0, "lease_token": None, "reviewer_id": None},
            )
            if task is None:
                raise await self._refusal(writer, project_id, task_id, body.lease_token, self._clock())

    @retry_conflicts
    async def review(
        self, principal: Principal, project_id: str, task_id: str, body: ReviewCreate
    ) -> tuple[ReviewResult, bool]:
        """Store the review, close the task and finalize the item, in one transaction with the events that
        announce it. Returns the review and whether this call created it: the same review sent again under
        the same lease (a retry) returns the first one and creates nothing."""
        async with self._store.transaction() as tx:
            writer = ReviewWriter(tx)
            project = await project_for(principal, writer, project_id)
            now = self._clock()
            task = await writer.get_task(project_id, task_id)
            if task is None:
                raise TaskNotFoundError(project_id, task_id)
            if task["done"]:
                return await self._replayed(writer, task, body), False
            if task["lease_token"] != body.lease_token or task["reviewer_id"] != body.reviewer_id:
                raise await self._refusal(writer, project_id, task_id, body.lease_token, now)
            if task["available_at"] <= now:
                raise await self._refusal(writer, project_id, task_id, body.lease_token, now)
            spec = task_spec(project)
            item = await writer.get_item(project_id, task["item_id"])
            if item is None:
                raise LookupError(f"task {task_id} refers to missing item {task['item_id']}")
            answer = check_answer(spec, body, item)
            result = await self._record(writer, project, task, item, spec, answer, body, now)
        self._on_change(project_id)
        return result, True

    async def _record(
        self,
        writer: ReviewWriter,
        project: Doc,
        task: Doc,
        item: Doc,
        spec: TaskSpec,
        answer: Answer,
        body: ReviewCreate,
        now: float,
    ) -> ReviewResult:
        project_id, item_id, task_id = task["project_id"], task["item_id"], task["_id"]
        labels = answer.labels
        moment = from_epoch(now)
        proposal: Doc | None = task.get("proposal")
        action = review_action(spec, answer, proposal)
        duration_s = body.duration_s
        if duration_s is None and task.get("leased_ts") is not None:
            duration_s = max(0.0, now - float(task["leased_ts"]))
        review_id = new_id()
        await writer.insert_review(
            {
                "_id": review_id,
                "project_id": project_id,
                "item_id": item_id,
                "task_id": task_id,
                "reviewer_id": body.reviewer_id,
                "action": action.value,
                "labels": list(labels),
                **answer_fields(answer),
                "created_at": iso(moment),
                "duration_s": duration_s,
                "lease_token": body.lease_token,
                "group": task.get("group") or task_id,
                "overlap": int(task.get("answers_needed") or 1) > 1,
                **gold_score(item, labels),
            }
        )
        await writer.note_reviewer(project_id, body.reviewer_id, at=iso(moment))
        await writer.update_task(
            project_id,
            task_id,
            where={"done": False},
            set={"done": True, "review_id": review_id, "closed_reason": "reviewed", "closed_at": iso(moment)},
        )
        result = ReviewResult(
            review_id=review_id, task_id=task_id, item_id=item_id, action=action, labels=list(labels),
            **answer_fields(answer),
        )
        settled = await settle_round(writer, project, task, self._settings, review_id)
        if settled is None:
            return result  # an overlapped round still waiting for answers
        version = int(task.get("guideline_version") or item["guideline_version"])
        gold = item.get("gold")
        if gold is not None:
            answer = Answer(labels=tuple(gold["labels"]))  # a gold item's final label is its known answer
        elif settled.consensus is not None:
            answer = Answer(labels=settled.consensus.labels)
        labels = answer.labels
        extra: Doc = {"guideline_version": version, "gold": gold is not None}
        if settled.consensus is not None:
            extra["consensus"] = {
                "method": settled.consensus.method.value,
                "support": settled.consensus.support,
                "tied": settled.consensus.tied,
                "answers": len(settled.reviews),
            }
        final = final_fields(
            labels, FinalSource.review.value, moment, review_id=review_id, **answer_fields(answer), **extra
        )
        await writer.update_item(project_id, item_id, {"state": "final", "final": final})
        await writer.insert_final(
            {
                "_id": item_id,
                "project_id": project_id,
                "item_id": item_id,
                "idempotency_key": item["idempotency_key"],
                "text": item["text"],
                "image": item.get("image"),
                "metadata": item.get("metadata") or {},
                "labels": list(labels),
                **answer_fields(answer),
                "source": FinalSource.review.value,
                "guideline_version": version,
                "finalized_at": iso(moment),
                "review_id": review_id,
                "gold": gold is not None,
            }
        )
        announced = [review_submitted(task, item, spec, review, moment, version) for review in settled.reviews]
        for submitted in announced:
            await writer.emit(submitted)
        await writer.emit(
            LabelFinalized(
                producer=PRODUCER,
                **announced[-1].caused(),
                occurred_at=moment,
                labels=labels,
                spans=answer.spans,
                boxes=answer.boxes,
                source=FinalSource.review,
                guideline_version=version,
                submitted_at=item["submitted_at"],
                gold=gold is not None,
            )
        )
        return result

    async def _replayed(self, writer: ReviewWriter, task: Doc, body: ReviewCreate) -> ReviewResult:
        """The stored review when ``body`` repeats it (same lease, same labels); a conflict otherwise."""
        review = await writer.review_for_task(task["project_id"], task["_id"])
        if review is None:
            raise TaskClosedError(
                f"task '{task['_id']}' is closed: its item was finalized without review",
                details={"reason": task.get("closed_reason")},
            )
        same_lease = review.get("lease_token") == body.lease_token and review["reviewer_id"] == body.reviewer_id
        if not same_lease:
            raise TaskClosedError(f"task '{task['_id']}' has already been reviewed")
        if not _repeats(review, body):
            raise TaskClosedError(
                f"task '{task['_id']}' has already been reviewed under this lease with a different answer"
                f" (labels: {', '.join(review['labels']) or 'none'})",
                details={"labels": review["labels"], "spans": review.get("spans") or [],
                         "boxes": review.get("boxes") or []},
            )
        return ReviewResult(
            review_id=review["_id"],
            task_id=task["_id"],
            item_id=review["item_id"],
            action=review["action"],
            labels=review["labels"],
            spans=review.get("spans") or [],
            boxes=review.get("boxes") or [],
        )

    @staticmethod
    async def _refusal(
        writer: ReviewWriter, project_id: str, task_id: str, lease_token: str, now: float
    ) -> Exception:
        """Why the caller may not act on the task, as the error to raise."""
        task = await writer.get_task(project_id, task_id)
        if task is None:
            return TaskNotFoundError(project_id, task_id)
        if task["done"]:
            return TaskClosedError(f"task '{task_id}' is closed: it has already been reviewed or finalized")
        if task["lease_token"] != lease_token:
            return LeaseLostError(
                f"the lease on task '{task_id}' is no longer yours: it was released, or it expired and"
                " another reviewer leased the task"
            )
        if task["available_at"] <= now:
            return LeaseLostError(
                f"the lease on task '{task_id}' expired at {iso(from_epoch(task['available_at']))}"
            )
        return LeaseLostError(f"the lease on task '{task_id}' is held by another reviewer")
