"""The review API service: its event consumers (decisions and auto-finalized labels), and the operations its
REST endpoints call (projects, guidelines, item submission, reads, stats, export, the queue)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Gauge

from labelgate_core.bus.port import Bus
from labelgate_core.consumer import Handler, HandlerContext, RetryPolicy
from labelgate_core.errors import PermanentError
from labelgate_core.events import (
    DecisionMade,
    DecisionOutcome,
    Event,
    GuidelineChanged,
    ItemSubmitted,
    LabelFinalized,
    new_id,
)
from labelgate_core.service import Service
from labelgate_core.store.port import Doc, DuplicateKeyError, Store
from labelgate_core.topics import DECISION_MADE, LABEL_FINALIZED

from .auth import Principal, project_for
from .documents import (
    PRODUCER,
    decision_doc,
    export_line,
    final_fields,
    iso,
    item_public,
    project_public,
    routing_policy,
    task_doc,
    task_id_for,
    task_spec,
)
from .errors import BatchTooLargeError, ItemNotFoundError, ProjectExistsError
from .priority import review_priority
from .queue import ReviewQueue
from .repository import INDEXES, ReviewRepository, ReviewWriter, stream_finals
from .schemas import (
    ExportLine,
    FinalBySource,
    GuidelinesUpdate,
    ItemPage,
    ItemPublic,
    ItemsSubmit,
    ItemState,
    ProjectCreate,
    ProjectPublic,
    ProjectStats,
    RoutingUpdate,
    SubmitResult,
    SubmittedItem,
)
from .settings import ReviewApiSettings

log = logging.getLogger(__name__)

QUEUE_DEPTH = Gauge(
    "labelgate_review_queue_depth", "Review tasks not yet reviewed (leased ones included), per project", ["project"]
)

CONSUMER_GROUP = "review-api.items"
_SUBMIT_ATTEMPTS = 3


class ReviewApiService(Service):
    name = PRODUCER

    def __init__(
        self,
        *,
        bus: Bus,
        store: Store,
        settings: ReviewApiSettings | None = None,
        retry: RetryPolicy | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        super().__init__(bus=bus, store=store, retry=retry)
        self.settings = settings or ReviewApiSettings()
        self.clock: Callable[[], float] = clock or time.time
        self.queue = ReviewQueue(store, self.settings, lambda: self.clock(), self._queue_changed)
        self._stale_depths: set[str] = set()
        self._depth_wakeup = asyncio.Event()

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    # -- the Service contract ------------------------------------------------------------------------------

    def subscriptions(self) -> Mapping[str, Mapping[str, Handler]]:
        return {CONSUMER_GROUP: {DECISION_MADE: self._on_decision_made, LABEL_FINALIZED: self._on_label_finalized}}

    async def setup(self) -> None:
        for collection, indexes in INDEXES.items():
            await self.store.ensure_indexes(collection, indexes)
        await self.refresh_queue_depth()

    def background(self) -> list[Coroutine[Any, Any, None]]:
        return [self._keep_queue_depth()]

    # -- consumers -----------------------------------------------------------------------------------------

    async def _on_decision_made(self, event: Event, ctx: HandlerContext) -> None:
        """Record the router's decision on the item; queue a review task when it needs one."""
        if not isinstance(event, DecisionMade):
            raise PermanentError(f"expected decision.made, got {event.event_type}")
        writer = ReviewWriter(ctx.tx)
        item = await writer.get_item(event.project_id, event.item_id)
        if item is None:
            raise PermanentError(f"decision {event.event_id} is for unknown item {event.project_id}/{event.item_id}")
        if event.outcome == DecisionOutcome.auto_accepted:
            # The auto-final label travels on another topic and may have arrived first: record the decision
            # either way, unless the item already shows the decision that made it final.
            if item["state"] != ItemState.final or item.get("decision") is None:
                await writer.update_item(event.project_id, event.item_id, {"decision": decision_doc(event)})
            return
        if item["state"] == ItemState.final:
            log.info("review decision for an item already final ignored",
                     extra={"item_id": event.item_id, "event_id": event.event_id})
            return
        task_id = task_id_for(event.project_id, event.item_id)
        if await writer.get_task(event.project_id, task_id) is not None:
            # A repeated decision (a replay, a re-scored item) never queues the item twice.
            return
        priority, value = review_priority(event, await writer.final_label_counts(event.project_id))
        await writer.insert_task(task_doc(event, now=self._now(), priority=priority, value=value))
        await writer.update_item(
            event.project_id, event.item_id, {"state": ItemState.queued.value, "decision": decision_doc(event)}
        )
        ctx.after_commit(lambda: self._queue_changed(event.project_id))

    async def _on_label_finalized(self, event: Event, ctx: HandlerContext) -> None:
        """An auto-accepted label became final: the item needs no human, and its task (if any) closes."""
        if not isinstance(event, LabelFinalized):
            raise PermanentError(f"expected label.finalized, got {event.event_type}")
        if event.producer == PRODUCER:
            return  # our own announcement of a review
        writer = ReviewWriter(ctx.tx)
        item = await writer.get_item(event.project_id, event.item_id)
        if item is None:
            raise PermanentError(f"final label {event.event_id} is for unknown item {event.project_id}/{event.item_id}")
        if item["state"] == ItemState.final:
            return  # the first final label stands
        moment = event.occurred_at
        await writer.update_item(
            event.project_id,
            event.item_id,
            {"state": ItemState.final.value, "final": final_fields(event.labels, event.source.value, moment)},
        )
        await writer.insert_final(
            {
                "_id": event.item_id,
                "project_id": event.project_id,
                "item_id": event.item_id,
                "idempotency_key": item["idempotency_key"],
                "text": item["text"],
                "metadata": item.get("metadata") or {},
                "labels": list(event.labels),
                "source": event.source.value,
                "guideline_version": event.guideline_version,
                "finalized_at": iso(moment),
                "review_id": None,
            }
        )
        closed = await writer.update_task(
            event.project_id,
            task_id_for(event.project_id, event.item_id),
            where={"done": False},
            set={"done": True, "closed_reason": f"finalized_{event.source.value}", "closed_at": iso(moment)},
        )
        if closed is not None:
            ctx.after_commit(lambda: self._queue_changed(event.project_id))

    # -- projects ------------------------------------------------------------------------------------------

    async def create_project(self, principal: Principal, body: ProjectCreate) -> ProjectPublic:
        """Create the project with guideline version 1 and announce that version."""
        del principal  # every caller may create projects until roles exist
        now = self._now()
        doc: Doc = {
            "_id": body.id,
            "name": body.name,
            "task": body.task.model_dump(mode="json"),
            "guidelines": body.guidelines,
            "guideline_version": 1,
            "routing": body.routing.model_dump(mode="json"),
            "created_at": iso(now),
            "updated_at": iso(now),
        }
        try:
            async with self.store.transaction() as tx:
                writer = ReviewWriter(tx)
                if await writer.get_project(body.id) is not None:
                    raise ProjectExistsError(body.id)
                await writer.insert_project(doc)
                await self._new_guideline_version(writer, doc, now)
        except DuplicateKeyError as exc:
            raise ProjectExistsError(body.id) from exc
        return project_public(doc)

    async def get_project(self, principal: Principal, project_id: str) -> ProjectPublic:
        return project_public(await project_for(principal, ReviewRepository(self.store), project_id))

    async def list_projects(self, principal: Principal) -> list[ProjectPublic]:
        docs = await ReviewRepository(self.store).list_projects(principal.projects)
        return [project_public(doc) for doc in docs]

    async def update_guidelines(self, principal: Principal, project_id: str, body: GuidelinesUpdate) -> ProjectPublic:
        """A new guideline version (the previous one plus one), announced in the same transaction."""
        now = self._now()
        async with self.store.transaction() as tx:
            writer = ReviewWriter(tx)
            await project_for(principal, writer, project_id)
            doc = await writer.update_project(
                project_id, set={"guidelines": body.text, "updated_at": iso(now)}, inc={"guideline_version": 1}
            )
            if doc is None:
                raise LookupError(project_id)
            await self._new_guideline_version(writer, doc, now)
        return project_public(doc)

    async def update_routing(self, principal: Principal, project_id: str, body: RoutingUpdate) -> ProjectPublic:
        """Change the routing policy; items submitted from now on carry the new one."""
        changes = {f"routing.{name}": value for name, value in body.model_dump(exclude_none=True).items()}
        if "target_precision" in body.model_fields_set and body.target_precision is None:
            changes["routing.target_precision"] = None
        async with self.store.transaction() as tx:
            writer = ReviewWriter(tx)
            await project_for(principal, writer, project_id)
            doc = await writer.update_project(project_id, set={**changes, "updated_at": iso(self._now())})
            if doc is None:
                raise LookupError(project_id)
        return project_public(doc)

    @staticmethod
    async def _new_guideline_version(writer: ReviewWriter, project: Doc, now: datetime) -> None:
        version = int(project["guideline_version"])
        await writer.insert_guideline_version(
            {
                "_id": f"{project['_id']}/{version}",
                "project_id": project["_id"],
                "version": version,
                "text": project["guidelines"],
                "created_at": iso(now),
            }
        )
        await writer.emit(
            GuidelineChanged(
                producer=PRODUCER,
                project_id=project["_id"],
                item_id=project["_id"],
                occurred_at=now,
                version=version,
                text=project["guidelines"],
                task=task_spec(project),
                routing=routing_policy(project),
            )
        )

    # -- items ---------------------------------------------------------------------------------------------

    async def submit_items(self, principal: Principal, project_id: str, body: ItemsSubmit) -> SubmitResult:
        """Accept a batch: all of it, with one item.submitted event per new item, or (on error) none of it.

        An idempotency key already used in the project, or repeated inside the batch, resolves to the item
        it first created (``created`` false) and creates nothing. Items without a key get a fresh one, so a
        retried request without keys creates them again."""
        size, limit = len(body.items), self.settings.max_batch
        if size > limit:
            raise BatchTooLargeError(size, limit)
        keys = [item.idempotency_key or f"gen-{new_id()}" for item in body.items]
        given = list(dict.fromkeys(item.idempotency_key for item in body.items if item.idempotency_key))
        for attempt in range(1, _SUBMIT_ATTEMPTS + 1):
            try:
                return await self._insert_batch(principal, project_id, body, keys, given)
            except DuplicateKeyError:
                # A concurrent request inserted one of these keys first: look again, and resolve to its items.
                if attempt == _SUBMIT_ATTEMPTS:
                    raise
        raise AssertionError("unreachable")

    async def _insert_batch(
        self, principal: Principal, project_id: str, body: ItemsSubmit, keys: list[str], given: list[str]
    ) -> SubmitResult:
        now = self._now()
        submitted_at = iso(now)
        async with self.store.transaction() as tx:
            writer = ReviewWriter(tx)
            project = await project_for(principal, writer, project_id)
            spec, routing, version = task_spec(project), routing_policy(project), int(project["guideline_version"])
            known = {
                key: doc["_id"]
                for key, doc in (
                    await writer.items_by_keys(project_id, given, chunk=self.settings.key_lookup_chunk)
                ).items()
            }
            results: list[SubmittedItem] = []
            docs: list[Doc] = []
            events: list[ItemSubmitted] = []
            for item, key in zip(body.items, keys, strict=True):
                existing = known.get(key)
                if existing is not None:
                    results.append(SubmittedItem(item_id=existing, idempotency_key=key, created=False))
                    continue
                event = ItemSubmitted(
                    producer=PRODUCER,
                    project_id=project_id,
                    item_id=new_id(),
                    occurred_at=now,
                    text=item.text,
                    metadata=item.metadata,
                    task=spec,
                    routing=routing,
                    guideline_version=version,
                )
                known[key] = event.item_id
                results.append(SubmittedItem(item_id=event.item_id, idempotency_key=key, created=True))
                events.append(event)
                docs.append(
                    {
                        "_id": event.item_id,
                        "project_id": project_id,
                        "idempotency_key": key,
                        "key_generated": item.idempotency_key is None,
                        "text": item.text,
                        "metadata": item.metadata,
                        "state": ItemState.submitted.value,
                        "guideline_version": version,
                        "routing": routing.model_dump(mode="json"),
                        "submitted_at": submitted_at,
                        "trace_id": event.trace_id,
                        "decision": None,
                        "final": None,
                    }
                )
            await writer.insert_items(docs)
            for event in events:
                await writer.emit(event)
        return SubmitResult(accepted=len(events), duplicates=len(results) - len(events), items=results)

    async def get_item(self, principal: Principal, project_id: str, item_id: str) -> ItemPublic:
        repo = ReviewRepository(self.store)
        await project_for(principal, repo, project_id)
        doc = await repo.get_item(project_id, item_id)
        if doc is None:
            raise ItemNotFoundError(project_id, item_id)
        reviews = await repo.reviews_for_items(project_id, [item_id], chunk=1)
        return item_public(doc, reviews.get(item_id, []))

    async def list_items(
        self, principal: Principal, project_id: str, *, state: ItemState | None, limit: int, after: str | None
    ) -> ItemPage:
        """A page of items in id (= submission) order, after the cursor ``after``."""
        repo = ReviewRepository(self.store)
        await project_for(principal, repo, project_id)
        docs = await repo.list_items(project_id, state=state.value if state else None, after=after, limit=limit + 1)
        page, more = docs[:limit], len(docs) > limit
        reviews = await repo.reviews_for_items(
            project_id, [doc["_id"] for doc in page], chunk=self.settings.key_lookup_chunk
        )
        return ItemPage(
            items=[item_public(doc, reviews.get(doc["_id"], [])) for doc in page],
            next_after=page[-1]["_id"] if more else None,
        )

    async def stats(self, principal: Principal, project_id: str) -> ProjectStats:
        repo = ReviewRepository(self.store)
        await project_for(principal, repo, project_id)
        return ProjectStats(
            items=await repo.count_items(project_id),
            submitted=await repo.count_items(project_id, ItemState.submitted.value),
            queued=await repo.count_items(project_id, ItemState.queued.value),
            in_review=await repo.count_leased_tasks(project_id, self.clock()),
            final=await repo.count_items(project_id, ItemState.final.value),
            final_by_source=FinalBySource(
                auto=await repo.count_finals(project_id, "auto"),
                review=await repo.count_finals(project_id, "review"),
            ),
            reviews=await repo.count_reviews(project_id),
            queue_depth=await repo.count_open_tasks(project_id),
        )

    async def open_export(self, principal: Principal, project_id: str) -> AsyncIterator[ExportLine]:
        """The project's final labels, checked for access now and read lazily as the caller iterates."""
        await project_for(principal, ReviewRepository(self.store), project_id)
        return self._export(project_id)

    async def _export(self, project_id: str) -> AsyncIterator[ExportLine]:
        async for doc in stream_finals(self.store, project_id, batch_size=self.settings.export_batch_size):
            yield export_line(doc)

    # -- the queue-depth gauge -----------------------------------------------------------------------------

    def _queue_changed(self, project_id: str) -> None:
        self._stale_depths.add(project_id)
        self._depth_wakeup.set()

    async def refresh_queue_depth(self, project_ids: set[str] | None = None) -> None:
        """Recount open tasks for ``project_ids`` (all projects when None) into the gauge."""
        repo = ReviewRepository(self.store)
        if project_ids is None:
            project_ids = {doc["_id"] for doc in await repo.list_projects(None)}
        for project_id in sorted(project_ids):
            QUEUE_DEPTH.labels(project_id).set(await repo.count_open_tasks(project_id))

    async def _keep_queue_depth(self) -> None:
        """Recount projects whose queue changed as soon as it changes, and every project now and then."""
        stopping = asyncio.create_task(self.stopping.wait())
        last_full = time.monotonic()
        try:
            while not self.stopping.is_set():
                wakeup = asyncio.create_task(self._depth_wakeup.wait())
                await asyncio.wait(
                    {wakeup, stopping},
                    timeout=self.settings.queue_depth_refresh_s,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                wakeup.cancel()
                if self.stopping.is_set():
                    return
                self._depth_wakeup.clear()
                stale, self._stale_depths = self._stale_depths, set()
                full = time.monotonic() - last_full >= self.settings.queue_depth_refresh_s
                try:
                    await self.refresh_queue_depth(None if full else stale)
                except Exception:
                    log.exception("queue depth refresh failed")
                    self._stale_depths |= stale
                if full:
                    last_full = time.monotonic()
        finally:
            stopping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stopping
