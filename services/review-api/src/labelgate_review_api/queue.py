"""The review queue: exclusive, expiring leases on review tasks, and the review that closes a task.

A task is leasable when it is open and its ``available_at`` (epoch seconds) has passed: open tasks start at
0, a lease moves it to the lease's end, a release moves it back to 0. So an abandoned lease frees itself when
it expires, with no sweeper, and taking a lease is one atomic find-and-update."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from typing import Any

from labelgate_core.events import (
    FinalSource,
    LabelFinalized,
    ReviewAction,
    ReviewSubmitted,
    RoutingReason,
    TaskSpec,
    TaskType,
    new_id,
)
from labelgate_core.store.port import Doc, Store
from labelgate_core.store.retry import retry_conflicts

from .auth import Principal, project_for
from .documents import PRODUCER, final_fields, from_epoch, iso, leased_task, task_spec
from .errors import InvalidLabelsError, LeaseLostError, TaskClosedError, TaskNotFoundError
from .repository import ReviewWriter
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

_SHOWN_LABELS = 50


def check_labels(spec: TaskSpec, labels: Sequence[str]) -> tuple[str, ...]:
    """The reviewer's labels, without repeats, if the task's schema allows them; ``InvalidLabelsError`` if not.

    Single-label classification takes exactly one label; the other task types take any subset of the schema
    (the empty one included)."""
    allowed = spec.label_names
    unknown = [label for label in labels if label not in allowed]
    if unknown:
        shown = ", ".join(f"'{name}'" for name in allowed[:_SHOWN_LABELS])
        more = f" and {len(allowed) - _SHOWN_LABELS} more" if len(allowed) > _SHOWN_LABELS else ""
        raise InvalidLabelsError(
            f"label '{unknown[0]}' is not in the project's labels (allowed: {shown}{more})",
            details={"unknown": unknown, "allowed": list(allowed)},
        )
    unique = tuple(dict.fromkeys(labels))
    if spec.type == TaskType.classification and len(unique) != 1:
        raise InvalidLabelsError(
            f"a classification task takes exactly one label, got {len(unique)}",
            details={"allowed": list(allowed)},
        )
    return unique


def review_action(labels: Sequence[str], proposal: Doc | None) -> ReviewAction:
    """``confirm`` when the reviewer's labels are the AI's (as a set), ``correct`` otherwise."""
    if proposal is not None and set(labels) == set(proposal.get("labels") or ()):
        return ReviewAction.confirm
    return ReviewAction.correct


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
            task = await writer.lease_next_task(
                project_id,
                now=now,
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
            labels = check_labels(spec, body.labels)
            item = await writer.get_item(project_id, task["item_id"])
            if item is None:
                raise LookupError(f"task {task_id} refers to missing item {task['item_id']}")
            result = await self._record(writer, task, item, spec, labels, body, now)
        self._on_change(project_id)
        return result, True

    async def _record(
        self,
        writer: ReviewWriter,
        task: Doc,
        item: Doc,
        spec: TaskSpec,
        labels: tuple[str, ...],
        body: ReviewCreate,
        now: float,
    ) -> ReviewResult:
        project_id, item_id, task_id = task["project_id"], task["item_id"], task["_id"]
        moment = from_epoch(now)
        proposal: Doc | None = task.get("proposal")
        action = review_action(labels, proposal)
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
                "created_at": iso(moment),
                "duration_s": duration_s,
                "lease_token": body.lease_token,
            }
        )
        await writer.update_task(
            project_id,
            task_id,
            where={"done": False},
            set={"done": True, "review_id": review_id, "closed_reason": "reviewed", "closed_at": iso(moment)},
        )
        final = final_fields(labels, FinalSource.review.value, moment, review_id=review_id)
        await writer.update_item(project_id, item_id, {"state": "final", "final": final})
        await writer.insert_final(
            {
                "_id": item_id,
                "project_id": project_id,
                "item_id": item_id,
                "idempotency_key": item["idempotency_key"],
                "text": item["text"],
                "metadata": item.get("metadata") or {},
                "labels": list(labels),
                "source": FinalSource.review.value,
                "guideline_version": item["guideline_version"],
                "finalized_at": iso(moment),
                "review_id": review_id,
            }
        )
        trace: dict[str, Any] = {"trace_id": task["trace_id"]} if task.get("trace_id") else {}
        submitted = ReviewSubmitted(
            producer=PRODUCER,
            project_id=project_id,
            item_id=item_id,
            causation_id=task.get("decision_event_id"),
            occurred_at=moment,
            review_id=review_id,
            reviewer_id=body.reviewer_id,
            action=action,
            labels=labels,
            ai_labels=tuple(proposal.get("labels") or ()) if proposal else (),
            ai_confidence=proposal.get("confidence") if proposal else None,
            decision_reasons=tuple(RoutingReason(reason) for reason in task.get("reasons") or ()),
            text=item["text"],
            task=spec,
            guideline_version=item["guideline_version"],
            duration_s=duration_s,
            queued_at=task["queued_at"],
            **trace,
        )
        await writer.emit(submitted)
        await writer.emit(
            LabelFinalized(
                producer=PRODUCER,
                **submitted.caused(),
                occurred_at=moment,
                labels=labels,
                source=FinalSource.review,
                guideline_version=item["guideline_version"],
                submitted_at=item["submitted_at"],
            )
        )
        return ReviewResult(review_id=review_id, task_id=task_id, item_id=item_id, action=action, labels=list(labels))

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
        if set(review["labels"]) != set(body.labels):
            raise TaskClosedError(
                f"task '{task['_id']}' has already been reviewed under this lease with different labels"
                f" ({', '.join(review['labels']) or 'none'})",
                details={"labels": review["labels"]},
            )
        return ReviewResult(
            review_id=review["_id"],
            task_id=task["_id"],
            item_id=review["item_id"],
            action=review["action"],
            labels=review["labels"],
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
