"""The review API service: its event consumers (decisions and auto-finalized labels), and the operations its
REST endpoints call (projects, guidelines, item submission, reads, stats, export, the queue)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
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
    RoutingReason,
    new_id,
)
from labelgate_core.service import Service
from labelgate_core.store.port import Doc, DuplicateKeyError, Store
from labelgate_core.topics import DECISION_MADE, LABEL_FINALIZED

from .auth import Principal, project_for
from .documents import (
    PRODUCER,
    decision_doc,
    final_fields,
    iso,
    item_public,
    project_public,
    proposal_doc,
    routing_policy,
    task_spec,
)
from .errors import BatchTooLargeError, ImageNotFoundError, ItemNotFoundError, ProjectExistsError
from .exports import ExportFormat, TrainingExport, open_training_export
from .gold import check_gold, reviewers_public
from .images import PreparedImage, blob_bytes, blob_doc, blob_key, check_item_fits, image_doc, prepare_images
from .overlap import OVERLAP_TASK_TYPES, agreement_report
from .priority import review_priority
from .queue import ReviewQueue
from .repository import INDEXES, ReviewRepository, ReviewWriter
from .rounds import REREVIEW_PRIORITY, REREVIEW_REASONS, open_round, requeue_scope
from .schemas import (
    AgreementPublic,
    FinalBySource,
    GuidelinesResult,
    GuidelinesUpdate,
    ItemPage,
    ItemPublic,
    ItemsSubmit,
    ItemState,
    ProjectCreate,
    ProjectPublic,
    ProjectStats,
    ProjectUpdate,
    ReviewerPublic,
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
        await self._mark_unskilled_tasks()
        await self.refresh_queue_depth()

    async def _mark_unskilled_tasks(self) -> None:
        """Tasks queued before skills existed need none: give them the empty skill leasing looks for."""
        for project in await ReviewRepository(self.store).list_projects(None):
            async with self.store.transaction() as tx:
                writer = ReviewWriter(tx)
                for task in await writer.tasks_without_skill(project["_id"]):
                    await writer.update_task(project["_id"], task["_id"], where={}, set={"skill": ""})

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
        if event.outcome == DecisionOutcome.auto_accepted and item.get("gold") is None:
            # The auto-final label travels on another topic and may have arrived first: record the decision
            # either way, unless the item already shows the decision that made it final. An item queued
            # unscored and then auto-accepted once a model scored it shows the earlier needs-review decision
            # until this one replaces it.
            shown = (item.get("decision") or {}).get("outcome")
            auto_final = (item.get("final") or {}).get("source") == "auto"
            if item["state"] != ItemState.final or shown is None or (auto_final and shown != event.outcome.value):
                await writer.update_item(event.project_id, event.item_id, {"decision": decision_doc(event)})
            return
        await self._queue_for_review(writer, event, item, ctx)

    async def _queue_for_review(
        self, writer: ReviewWriter, event: DecisionMade, item: Doc, ctx: HandlerContext
    ) -> None:
        """Open a review round for the item the decision sends to review. An item already final gets one only
        when the decision questions its final label (a suspected label issue, a guideline change); an item
        with an open round never gets a second (a repeated decision, a re-scored item).

        A gold item whose proposal leaks a training item (``proposal.leakage``) is marked ``gold_leaked``: it is
        still reviewed, but no longer scores reviewers."""
        if item.get("gold") is not None and event.proposal.leakage is not None and not item.get("gold_leaked"):
            await writer.update_item(event.project_id, event.item_id, {"gold_leaked": True})
        questioned = REREVIEW_REASONS.intersection(event.reasons) and item.get("gold") is None
        if item.get("final") is not None and not questioned:
            log.info("review decision for an item already final ignored",
                     extra={"item_id": event.item_id, "event_id": event.event_id})
            return
        # Read once per transaction: a batch of decisions is mostly of one project.
        projects: dict[str, Doc | None] = ctx.shared("review-api.projects", dict)
        if event.project_id not in projects:
            projects[event.project_id] = await writer.get_project(event.project_id)
        project = projects[event.project_id]
        if project is None:
            raise PermanentError(f"decision {event.event_id} is for unknown project {event.project_id}")
        priority, value = review_priority(event, await writer.final_label_counts(event.project_id))
        group = await open_round(
            writer,
            project,
            item,
            now=self._now(),
            reasons=[reason.value for reason in event.reasons],
            proposal=proposal_doc(event.proposal),
            priority=priority,
            value=value,
            cause_event_id=event.event_id,
            trace_id=event.trace_id,
            item_fields={"decision": decision_doc(event)},
        )
        if group is None:
            return
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
        if item.get("final") is not None:
            return  # the first final label stands; a re-review replaces it, nothing else
        if item.get("gold") is not None:
            return  # a gold item's final label is its known answer, set when it is reviewed
        moment = event.occurred_at
        await writer.update_item(
            event.project_id,
            event.item_id,
            {
                "state": ItemState.final.value,
                "final": final_fields(event.labels, event.source.value, moment, **_annotations(event)),
            },
        )
        await writer.insert_final(
            {
                "_id": event.item_id,
                "project_id": event.project_id,
                "item_id": event.item_id,
                "idempotency_key": item["idempotency_key"],
                "text": item["text"],
                "image": item.get("image"),
                "metadata": item.get("metadata") or {},
                "labels": list(event.labels),
                **_annotations(event),
                "source": event.source.value,
                "guideline_version": event.guideline_version,
                "finalized_at": iso(moment),
                "review_id": None,
            }
        )
        closed = False
        for task in await writer.open_tasks_of_item(event.project_id, event.item_id):
            closed |= await writer.update_task(
                event.project_id,
                task["_id"],
                where={"done": False},
                set={"done": True, "closed_reason": f"finalized_{event.source.value}", "closed_at": iso(moment)},
            ) is not None
        if closed:
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
            "data_owner": body.data_owner,
            "license": body.license,
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

    async def update_guidelines(
        self, principal: Principal, project_id: str, body: GuidelinesUpdate
    ) -> GuidelinesResult:
        """A new guideline version (the previous one plus one), announced in the same transaction; with
        ``requeue``, the final items it names go back to review in that transaction too."""
        now = self._now()
        async with self.store.transaction() as tx:
            writer = ReviewWriter(tx)
            project = await project_for(principal, writer, project_id)
            scope = requeue_scope(task_spec(project), body.requeue)
            doc = await writer.update_project(
                project_id, set={"guidelines": body.text, "updated_at": iso(now)}, inc={"guideline_version": 1}
            )
            if doc is None:
                raise LookupError(project_id)
            await self._new_guideline_version(writer, doc, now)
            requeued = 0 if scope is None else await self._requeue(writer, doc, scope, now)
        if requeued:
            self._queue_changed(project_id)
        return GuidelinesResult.model_validate({**project_public(doc).model_dump(), "requeued": requeued})

    async def _requeue(self, writer: ReviewWriter, project: Doc, labels: frozenset[str], now: datetime) -> int:
        """Open a ``guideline_change`` review round for every final item of the project made under an older
        guideline version (only those whose final labels include one of ``labels``, unless it is empty); items
        already in the queue, and gold items, are left as they are. How many were queued."""
        version, after, queued = int(project["guideline_version"]), None, 0
        while True:
            finals = await writer.finals_before(project["_id"], version, after=after, limit=self.settings.requeue_page)
            chosen = [f["_id"] for f in finals if not labels or labels.intersection(f["labels"])]
            items = await writer.items_by_ids(project["_id"], chosen) if chosen else {}
            for item_id in chosen:
                item = items.get(item_id)
                if item is None or item.get("gold") is not None:
                    continue  # a gold item's final label is its known answer: a re-review cannot change it
                decision = item.get("decision") or {}
                group = await open_round(
                    writer,
                    project,
                    item,
                    now=now,
                    reasons=[RoutingReason.guideline_change.value],
                    proposal=decision.get("proposal"),
                    priority=REREVIEW_PRIORITY,
                    value=0.0,
                    cause_event_id=None,
                    trace_id=item.get("trace_id"),
                )
                queued += group is not None
            if len(finals) < self.settings.requeue_page:
                return queued
            after = finals[-1]["_id"]

    async def update_project(self, principal: Principal, project_id: str, body: ProjectUpdate) -> ProjectPublic:
        """Change the project's name, data owner or licence: only the fields given (null clears the last two)."""
        changes = {name: getattr(body, name) for name in body.model_fields_set}
        async with self.store.transaction() as tx:
            writer = ReviewWriter(tx)
            await project_for(principal, writer, project_id)
            doc = await writer.update_project(project_id, set={**changes, "updated_at": iso(self._now())})
            if doc is None:
                raise LookupError(project_id)
        return project_public(doc)

    async def update_routing(self, principal: Principal, project_id: str, body: RoutingUpdate) -> ProjectPublic:
        """Change the routing policy; items submitted from now on carry the new one."""
        changes = {
            f"routing.{name}": value for name, value in body.model_dump(mode="json", exclude_none=True).items()
        }
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
        images = await asyncio.to_thread(  # decoding megabytes of base64 would stall every other request
            prepare_images,
            body.items,
            max_bytes=self.settings.max_image_bytes,
            max_total=self.settings.max_batch_image_bytes,
        )
        keys = [item.idempotency_key or f"gen-{new_id()}" for item in body.items]
        given = list(dict.fromkeys(item.idempotency_key for item in body.items if item.idempotency_key))
        for attempt in range(1, _SUBMIT_ATTEMPTS + 1):
            try:
                return await self._insert_batch(principal, project_id, body, keys, given, images=images)
            except DuplicateKeyError:
                # A concurrent request inserted one of these keys first: look again, and resolve to its items.
                if attempt == _SUBMIT_ATTEMPTS:
                    raise
        raise AssertionError("unreachable")

    async def _insert_batch(
        self,
        principal: Principal,
        project_id: str,
        body: ItemsSubmit,
        keys: list[str],
        given: list[str],
        *,
        images: Sequence[PreparedImage | None],
    ) -> SubmitResult:
        now = self._now()
        submitted_at = iso(now)
        async with self.store.transaction() as tx:
            writer = ReviewWriter(tx)
            project = await project_for(principal, writer, project_id)
            spec, routing, version = task_spec(project), routing_policy(project), int(project["guideline_version"])
            for index, item in enumerate(body.items):
                check_item_fits(spec, item, f"items[{index}]")
            golds = [
                check_gold(spec, item.gold, f"items[{index}]") if item.gold is not None else None
                for index, item in enumerate(body.items)
            ]
            known = {
                key: doc["_id"]
                for key, doc in (
                    await writer.items_by_keys(project_id, given, chunk=self.settings.key_lookup_chunk)
                ).items()
            }
            results: list[SubmittedItem] = []
            docs: list[Doc] = []
            events: list[ItemSubmitted] = []
            for item, key, image, gold in zip(body.items, keys, images, golds, strict=True):
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
                    image=image.ref if image else None,
                    gold=gold is not None,
                )
                if image is not None and image.data is not None:
                    await writer.put_image(blob_doc(project_id, image.ref, image.data, now))
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
                        "image": image_doc(image.ref) if image else None,
                        "metadata": item.metadata,
                        "state": ItemState.submitted.value,
                        "guideline_version": version,
                        "routing": routing.model_dump(mode="json"),
                        "submitted_at": submitted_at,
                        "trace_id": event.trace_id,
                        "decision": None,
                        "final": None,
                        "gold": gold,
                        "required_skill": item.required_skill,
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

    async def get_image(self, principal: Principal, project_id: str, item_id: str) -> tuple[str, bytes | None]:
        """The item's image: (media type, bytes) of an upload, or (URL, None) for an image given by URL."""
        repo = ReviewRepository(self.store)
        await project_for(principal, repo, project_id)
        item = await repo.get_item(project_id, item_id)
        if item is None:
            raise ItemNotFoundError(project_id, item_id)
        image = item.get("image") or {}
        if image.get("url"):
            return str(image["url"]), None
        blob = await repo.get_image(project_id, blob_key(project_id, str(image.get("blob_id"))))
        if blob is None:
            raise ImageNotFoundError(project_id, item_id)
        return str(blob["media_type"]), blob_bytes(blob)

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

    async def reviewers(self, principal: Principal, project_id: str) -> list[ReviewerPublic]:
        """Every reviewer who answered in the project, with their accuracy on its gold items (leaked gold items
        left out)."""
        repo = ReviewRepository(self.store)
        await project_for(principal, repo, project_id)
        return reviewers_public(
            await repo.list_reviewers(project_id),
            await repo.gold_reviews(project_id),
            leaked=await repo.leaked_gold_item_ids(project_id),
        )

    async def agreement(self, principal: Principal, project_id: str) -> AgreementPublic:
        """Human-vs-human agreement on the project's overlapped items (the latest ``consensus_history``
        answers), overall, per label and per guideline version, with the labels whose guidelines read
        ambiguously; human-vs-AI agreement (the latest ``consensus_history`` answers against the AI's proposals)
        per reviewer and per guideline version."""
        repo = ReviewRepository(self.store)
        project = await project_for(principal, repo, project_id)
        reviews = await repo.overlap_reviews(project_id, limit=self.settings.consensus_history)
        answers: list[Doc] = []
        if task_spec(project).type in OVERLAP_TASK_TYPES:
            answers = await repo.recent_reviews(project_id, limit=self.settings.consensus_history)
        tasks = await repo.tasks_by_ids(project_id, [str(r["task_id"]) for r in [*reviews, *answers]])
        return agreement_report(
            reviews,
            threshold=self.settings.agreement_threshold,
            min_support=self.settings.agreement_min_support,
            answers=answers,
            tasks=tasks,
        )

    async def open_training_export(
        self, principal: Principal, project_id: str, export_format: ExportFormat
    ) -> TrainingExport:
        """The project's final labels in ``export_format`` (see ``exports``), checked for access and for the
        format now, and read lazily as the caller iterates."""
        project = await project_for(principal, ReviewRepository(self.store), project_id)
        return open_training_export(self.store, project, export_format, batch_size=self.settings.export_batch_size)

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


def _annotations(event: LabelFinalized) -> Doc:
    """The final spans and boxes a label.finalized carries, as the item and its final label store them."""
    return {
        "spans": [span.model_dump(mode="json") for span in event.spans],
        "boxes": [box.model_dump(mode="json") for box in event.boxes],
    }
