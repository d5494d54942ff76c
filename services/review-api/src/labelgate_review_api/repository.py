"""The review API's collections and every query on them. Each read names the project it is scoped to, so an
object of another project is simply not found."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from labelgate_core.events import Event
from labelgate_core.store.port import Doc, Index, Reader, Store, Transaction
from labelgate_core.topics import encode, headers_for

PROJECTS = "projects"
GUIDELINES = "guideline_versions"
ITEMS = "items"
TASKS = "tasks"
REVIEWS = "reviews"
FINALS = "finals"
LABEL_COUNTS = "label_counts"
"""Final labels per project and label (the class balance the queue order uses)."""
IMAGES = "images"
"""Uploaded images of boxes items, one per project and content (``{project_id}/{sha256}``)."""
REVIEWERS = "reviewers"
"""Answers per project and reviewer."""

_HISTORY_FIELDS = ("labels", "spans", "boxes", "source", "finalized_at", "guideline_version", "review_id", "gold")

INDEXES: Mapping[str, Sequence[Index]] = {
    PROJECTS: (),
    GUIDELINES: (Index(("project_id", "version"), unique=True),),
    ITEMS: (
        Index(("project_id", "idempotency_key"), unique=True),
        Index(("project_id", "_id")),
        Index(("project_id", "state", "_id")),
    ),
    # Leasing reads open tasks of one project by (priority, age); the task id itself is derived from the
    # item, so the primary key is what keeps a repeated decision from queueing an item twice.
    TASKS: (
        Index(("project_id", "done", "priority", "queued_ts")),
        Index(("project_id", "item_id")),
        Index(("project_id", "item_id", "group")),
    ),
    REVIEWS: (
        Index(("task_id",), unique=True),
        Index(("project_id", "item_id")),
        Index(("project_id", "gold")),
        Index(("project_id", "overlap", "created_at")),
    ),
    FINALS: (
        Index(("project_id", "_id")),
        Index(("project_id", "source")),
        Index(("project_id", "guideline_version", "_id")),
    ),
    LABEL_COUNTS: (Index(("project_id",)),),
    IMAGES: (Index(("project_id",)),),
    REVIEWERS: (Index(("project_id", "reviewer_id")),),
}


def _chunks(values: Sequence[str], size: int) -> list[Sequence[str]]:
    return [values[i : i + size] for i in range(0, len(values), size)]


class ReviewRepository:
    """Reads, through the store (outside a transaction) or through a transaction."""

    def __init__(self, db: Reader) -> None:
        self.db = db

    # -- projects

    async def get_project(self, project_id: str) -> Doc | None:
        return await self.db.find_one(PROJECTS, {"_id": project_id})

    async def get_guideline_version(self, project_id: str, version: int) -> Doc | None:
        return await self.db.find_one(GUIDELINES, {"project_id": project_id, "version": version})

    async def list_projects(self, project_ids: frozenset[str] | None) -> list[Doc]:
        """Every project, or only those in ``project_ids``."""
        if project_ids is None:
            return await self.db.find(PROJECTS, {}, sort=[("_id", 1)])
        return await self.db.find(PROJECTS, {"_id": {"$in": sorted(project_ids)}}, sort=[("_id", 1)])

    # -- items

    async def get_item(self, project_id: str, item_id: str) -> Doc | None:
        return await self.db.find_one(ITEMS, {"_id": item_id, "project_id": project_id})

    async def items_by_ids(self, project_id: str, item_ids: Sequence[str]) -> dict[str, Doc]:
        """The project's items among ``item_ids``, by id (one query)."""
        docs = await self.db.find(ITEMS, {"project_id": project_id, "_id": {"$in": list(item_ids)}})
        return {doc["_id"]: doc for doc in docs}

    async def items_by_keys(self, project_id: str, keys: Sequence[str], *, chunk: int) -> dict[str, Doc]:
        """Items of the project holding any of ``keys``, by key: one query per ``chunk`` keys."""
        found: dict[str, Doc] = {}
        for part in _chunks(keys, chunk):
            for doc in await self.db.find(ITEMS, {"project_id": project_id, "idempotency_key": {"$in": list(part)}}):
                found[doc["idempotency_key"]] = doc
        return found

    async def list_items(
        self, project_id: str, *, state: str | None, after: str | None, limit: int
    ) -> list[Doc]:
        filter: dict[str, Any] = {"project_id": project_id}
        if state is not None:
            filter["state"] = state
        if after is not None:
            filter["_id"] = {"$gt": after}
        return await self.db.find(ITEMS, filter, sort=[("_id", 1)], limit=limit)

    async def count_items(self, project_id: str, state: str | None = None) -> int:
        filter: dict[str, Any] = {"project_id": project_id}
        if state is not None:
            filter["state"] = state
        return await self.db.count(ITEMS, filter)

    # -- reviews and finals

    async def reviews_for_items(self, project_id: str, item_ids: Sequence[str], *, chunk: int) -> dict[str, list[Doc]]:
        by_item: dict[str, list[Doc]] = {}
        for part in _chunks(item_ids, chunk):
            docs = await self.db.find(
                REVIEWS, {"project_id": project_id, "item_id": {"$in": list(part)}}, sort=[("created_at", 1)]
            )
            for doc in docs:
                by_item.setdefault(doc["item_id"], []).append(doc)
        return by_item

    async def review_for_task(self, project_id: str, task_id: str) -> Doc | None:
        return await self.db.find_one(REVIEWS, {"task_id": task_id, "project_id": project_id})

    async def count_reviews(self, project_id: str) -> int:
        return await self.db.count(REVIEWS, {"project_id": project_id})

    async def get_image(self, project_id: str, key: str) -> Doc | None:
        return await self.db.find_one(IMAGES, {"_id": key, "project_id": project_id})

    async def count_finals(self, project_id: str, source: str) -> int:
        return await self.db.count(FINALS, {"project_id": project_id, "source": source})

    async def get_final(self, project_id: str, item_id: str) -> Doc | None:
        return await self.db.find_one(FINALS, {"_id": item_id, "project_id": project_id})

    async def final_label_counts(self, project_id: str) -> dict[str, int]:
        """How many final labels the project has of each label."""
        docs = await self.db.find(LABEL_COUNTS, {"project_id": project_id})
        return {doc["label"]: int(doc["count"]) for doc in docs}

    # -- tasks

    async def get_task(self, project_id: str, task_id: str) -> Doc | None:
        return await self.db.find_one(TASKS, {"_id": task_id, "project_id": project_id})

    async def count_open_tasks(self, project_id: str) -> int:
        return await self.db.count(TASKS, {"project_id": project_id, "done": False})

    async def count_leased_tasks(self, project_id: str, now: float) -> int:
        return await self.db.count(TASKS, {"project_id": project_id, "done": False, "available_at": {"$gt": now}})

    async def leasable_tasks(
        self, project_id: str, *, now: float, skills: Sequence[str], skip: int, limit: int
    ) -> list[Doc]:
        """Open tasks nobody holds that need no skill or one of ``skills``, in lease order: lowest priority value
        first, then oldest. An expired lease (``available_at`` in the past) counts as nobody holding it."""
        return await self.db.find(
            TASKS,
            {
                "project_id": project_id,
                "done": False,
                "available_at": {"$lte": now},
                "skill": {"$in": ["", *skills]},
            },
            sort=[("priority", 1), ("queued_ts", 1), ("_id", 1)],
            skip=skip,
            limit=limit,
        )

    async def tasks_of_group(self, project_id: str, item_id: str, group: str) -> list[Doc]:
        """The answer slots of one review round of an item (one slot unless the round is overlapped)."""
        return await self.db.find(TASKS, {"project_id": project_id, "item_id": item_id, "group": group})

    async def open_tasks_of_item(self, project_id: str, item_id: str) -> list[Doc]:
        # Read by (project, item) alone: with ``done`` in the filter a query planner may prefer the lease index
        # (project, done, ...) and walk every open task of the project; an item has only a few tasks.
        tasks = await self.db.find(TASKS, {"project_id": project_id, "item_id": item_id})
        return [doc for doc in tasks if doc.get("done") is False]

    async def reviews_of_group(self, project_id: str, item_id: str, group: str) -> list[Doc]:
        return await self.db.find(
            REVIEWS, {"project_id": project_id, "item_id": item_id, "group": group}, sort=[("created_at", 1)]
        )

    async def gold_reviews(self, project_id: str) -> list[Doc]:
        return await self.db.find(REVIEWS, {"project_id": project_id, "gold": True})

    async def leaked_gold_item_ids(self, project_id: str) -> set[str]:
        """The project's gold items whose proposal was found to leak a training item (``gold_leaked``)."""
        docs = await self.db.find(ITEMS, {"project_id": project_id, "gold_leaked": True})
        return {doc["_id"] for doc in docs}

    async def recent_reviews(self, project_id: str, *, limit: int) -> list[Doc]:
        """The project's latest ``limit`` answers, newest first."""
        return await self.db.find(REVIEWS, {"project_id": project_id}, sort=[("created_at", -1)], limit=limit)

    async def tasks_by_ids(self, project_id: str, task_ids: Sequence[str], *, chunk: int = 500) -> dict[str, Doc]:
        out: dict[str, Doc] = {}
        for part in _chunks(sorted(set(task_ids)), chunk):
            for doc in await self.db.find(TASKS, {"project_id": project_id, "_id": {"$in": list(part)}}):
                out[doc["_id"]] = doc
        return out

    async def overlap_reviews(self, project_id: str, *, limit: int) -> list[Doc]:
        """The project's latest ``limit`` answers to overlapped tasks, newest first."""
        return await self.db.find(
            REVIEWS, {"project_id": project_id, "overlap": True}, sort=[("created_at", -1)], limit=limit
        )

    async def finals_before(self, project_id: str, version: int, *, after: str | None, limit: int) -> list[Doc]:
        """A page of the project's finals made under a guideline version older than ``version``, by item id."""
        filter: dict[str, Any] = {"project_id": project_id, "guideline_version": {"$lt": version}}
        if after is not None:
            filter["_id"] = {"$gt": after}
        return await self.db.find(FINALS, filter, sort=[("_id", 1)], limit=limit)

    async def tasks_without_skill(self, project_id: str) -> list[Doc]:
        """The project's open tasks queued before skills existed."""
        return await self.db.find(TASKS, {"project_id": project_id, "done": False, "skill": {"$exists": False}})

    async def list_reviewers(self, project_id: str) -> list[Doc]:
        return await self.db.find(REVIEWERS, {"project_id": project_id}, sort=[("reviewer_id", 1)])


class ReviewWriter(ReviewRepository):
    """Reads and writes inside one transaction, events included (they go to the outbox of that transaction)."""

    def __init__(self, tx: Transaction) -> None:
        super().__init__(tx)
        self.tx = tx

    async def emit(self, event: Event) -> None:
        await self.tx.add_outbox(event.topic, event.key, encode(event), headers_for(event))

    async def insert_project(self, doc: Doc) -> None:
        await self.tx.insert(PROJECTS, doc)

    async def update_project(
        self, project_id: str, *, set: Mapping[str, Any], inc: Mapping[str, float] | None = None
    ) -> Doc | None:
        return await self.tx.find_one_and_update(PROJECTS, {"_id": project_id}, set=set, inc=inc)

    async def insert_guideline_version(self, doc: Doc) -> None:
        await self.tx.insert(GUIDELINES, doc)

    async def insert_items(self, docs: Sequence[Doc]) -> None:
        await self.tx.insert_many(ITEMS, docs)

    async def update_item(self, project_id: str, item_id: str, set: Mapping[str, Any]) -> bool:
        return await self.tx.update_one(ITEMS, {"_id": item_id, "project_id": project_id}, set=set)

    async def put_image(self, doc: Doc) -> None:
        """Store an uploaded image; the same bytes uploaded again (same id) leave one copy."""
        await self.tx.update_one(IMAGES, {"_id": doc["_id"]}, set={k: v for k, v in doc.items() if k != "_id"},
                                 upsert=True)

    async def insert_task(self, doc: Doc) -> None:
        await self.tx.insert(TASKS, doc)

    async def take_task(self, project_id: str, task_id: str, *, now: float, set: Mapping[str, Any]) -> Doc | None:
        """Lease the task if it is still open and nobody holds it; the task as leased, or None."""
        return await self.tx.find_one_and_update(
            TASKS,
            {"_id": task_id, "project_id": project_id, "done": False, "available_at": {"$lte": now}},
            set=set,
            inc={"lease_count": 1},
        )

    async def note_reviewer(self, project_id: str, reviewer_id: str, *, at: str) -> None:
        await self.tx.update_one(
            REVIEWERS,
            {"_id": f"{project_id}/{reviewer_id}"},
            set={"project_id": project_id, "reviewer_id": reviewer_id, "last_review_at": at},
            inc={"reviews": 1},
            upsert=True,
        )

    async def update_task(
        self, project_id: str, task_id: str, *, where: Mapping[str, Any], set: Mapping[str, Any]
    ) -> Doc | None:
        """Update the task if it also matches ``where``; the task as updated, or None."""
        return await self.tx.find_one_and_update(
            TASKS, {"_id": task_id, "project_id": project_id, **where}, set=set
        )

    async def insert_review(self, doc: Doc) -> None:
        await self.tx.insert(REVIEWS, doc)

    async def insert_final(self, doc: Doc) -> None:
        """Store the item's final label and count it in the project's class balance. A re-reviewed item's new
        final replaces its old one, which moves to the item's ``final_history``."""
        project_id = doc["project_id"]
        old = await self.tx.find_one(FINALS, {"_id": doc["_id"], "project_id": project_id})
        if old is None:
            await self.tx.insert(FINALS, doc)
        else:
            await self.tx.update_one(
                FINALS, {"_id": doc["_id"], "project_id": project_id}, set={k: v for k, v in doc.items() if k != "_id"}
            )
            await self._count_labels(project_id, old["labels"], -1)
            item = await self.get_item(project_id, doc["_id"])
            if item is not None:
                earlier = {name: old[name] for name in _HISTORY_FIELDS if name in old}
                history = [*(item.get("final_history") or []), earlier]
                await self.update_item(project_id, doc["_id"], {"final_history": history})
        await self._count_labels(project_id, doc["labels"], 1)

    async def _count_labels(self, project_id: str, labels: Sequence[str], by: int) -> None:
        for label in dict.fromkeys(labels):
            await self.tx.update_one(
                LABEL_COUNTS,
                {"_id": f"{project_id}/{label}"},
                set={"project_id": project_id, "label": label},
                inc={"count": by},
                upsert=True,
            )


def stream_finals(store: Store, project_id: str, *, batch_size: int) -> AsyncIterator[Doc]:
    """The project's final labels in item order, read in batches so an export never holds them all."""
    return store.stream(FINALS, {"project_id": project_id}, sort=[("_id", 1)], batch_size=batch_size)
