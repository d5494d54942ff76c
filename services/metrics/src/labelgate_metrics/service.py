"""The metrics service: consumes every topic and keeps the business aggregates, each event counted once.

Each event's changes are written to the service's own store in the transaction that records the event in
the inbox, so a redelivered event changes nothing and a restart keeps every total. Once the transaction
commits, the same changes move the in-memory snapshot that ``/metrics`` and the read API serve."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from functools import partial
from typing import Any

from labelgate_core.bus.port import Bus
from labelgate_core.consumer import Handler, HandlerContext, RetryPolicy
from labelgate_core.events import Event, ModelUpdated
from labelgate_core.service import Service
from labelgate_core.store.port import Index, Store, Transaction
from labelgate_core.topics import TOPICS

from .aggregates import (
    METRICS_BY_NAME,
    Aggregates,
    Change,
    ItemState,
    ReviewRecord,
    bucket_for,
    changes_for,
    queue_change,
    tracks_item,
)
from .collector import MetricsCollector, default_collector
from .schemas import ModelVersionPublic, ProjectMetricsPublic
from .settings import MetricsSettings

log = logging.getLogger(__name__)

GROUP = "metrics.aggregate"
SERIES = "series"
"""One document per exposed series: a counter's or gauge's value, or a histogram's buckets, count and sum."""
ITEMS = "items"
"""One document per item that was routed, reviewed or finalized: its queue state and its latest review."""
MODELS = "model_versions"
"""One document per model version a labeler trained: its training size and holdout accuracy (learning curves)."""


class ProjectNotFoundError(LookupError):
    status_code = 404

    def __init__(self, project_id: str) -> None:
        super().__init__(f"no event of project {project_id!r} has reached the metrics service")
        self.project_id = project_id


def _item_id(event: Event) -> str:
    return json.dumps([event.project_id, event.item_id], ensure_ascii=False)


class MetricsService(Service):
    name = "metrics"

    def __init__(
        self,
        *,
        bus: Bus,
        store: Store,
        settings: MetricsSettings | None = None,
        retry: RetryPolicy | None = None,
        collector: MetricsCollector | None = None,
    ) -> None:
        super().__init__(bus=bus, store=store, retry=retry)
        self.settings = settings or MetricsSettings()
        self.aggregates = Aggregates(refresh_s=self.settings.agreement_refresh_s)
        self._collector = collector

    def subscriptions(self) -> Mapping[str, Mapping[str, Handler]]:
        return {GROUP: dict.fromkeys(TOPICS, self._handle)}

    async def setup(self) -> None:
        await self.store.ensure_indexes(ITEMS, [Index(("project",))])
        await self.store.ensure_indexes(MODELS, [Index(("project", "model_version"))])
        series = [doc async for doc in self.store.stream(SERIES, {})]
        items = [doc async for doc in self.store.stream(ITEMS, {"review": {"$exists": True}})]
        self.aggregates.load(series, items)
        collector = self._collector or default_collector()
        collector.attach(self.aggregates)
        self._collector = collector
        log.info("metrics loaded", extra={"series": len(series), "reviewed_items": len(items)})

    async def stop(self, grace_s: float = 25.0) -> None:
        await super().stop(grace_s)
        if self._collector is not None:
            self._collector.detach(self.aggregates)

    def report(self, project_id: str) -> ProjectMetricsPublic:
        """One project's aggregates; raises ``ProjectNotFoundError`` for a project no event has named."""
        if project_id not in self.aggregates.projects():
            raise ProjectNotFoundError(project_id)
        return self.aggregates.report(project_id)

    async def model_versions(self, project_id: str) -> list[ModelVersionPublic]:
        """Every model version trained for the project, oldest first; raises ``ProjectNotFoundError`` like
        ``report``."""
        if project_id not in self.aggregates.projects():
            raise ProjectNotFoundError(project_id)
        docs = await self.store.find(MODELS, {"project": project_id}, sort=[("model_version", 1), ("_id", 1)])
        return [ModelVersionPublic.model_validate(doc) for doc in docs]

    # -- the handler ---------------------------------------------------------------------------------------

    async def _handle(self, event: Event, ctx: HandlerContext) -> None:
        changes = changes_for(event)
        review_update: tuple[str, str, ReviewRecord] | None = None
        if tracks_item(event):
            item_filter = {"_id": _item_id(event)}
            before = ItemState.from_doc(await ctx.tx.find_one(ITEMS, item_filter))
            after = before.advance(event)
            if after != before:
                await ctx.tx.update_one(
                    ITEMS, item_filter,
                    set={"project": event.project_id, "item_id": event.item_id, **after.to_doc()}, upsert=True,
                )
                changes.append(queue_change(event.project_id, before, after))
                if after.review is not None and after.review != before.review:
                    review_update = (event.project_id, event.item_id, after.review)
        if isinstance(event, ModelUpdated):
            # Keyed by the version: a redelivered event rewrites the same document.
            await ctx.tx.update_one(
                MODELS,
                {"_id": json.dumps([event.project_id, event.model_id, event.model_version], ensure_ascii=False)},
                set={
                    "project": event.project_id,
                    "model_id": event.model_id,
                    "model_version": event.model_version,
                    "trained_on": event.trained_on,
                    "holdout_accuracy": event.holdout_accuracy,
                    "train_seconds": event.train_seconds,
                    "trained_at": event.occurred_at.isoformat(),
                },
                upsert=True,
            )
        increments = ctx.shared("metrics.series", SeriesIncrements, partial(SeriesIncrements.write, tx=ctx.tx))
        applied = []
        for change in changes:
            if change.maximum is None:
                increments.add(change)
                applied.append(change)
            elif await _raise_to(ctx.tx, change):
                applied.append(change)

        def apply() -> None:
            self.aggregates.apply(applied)
            if review_update is not None:
                self.aggregates.put_review(*review_update)

        ctx.after_commit(apply)


class SeriesIncrements:
    """The increments a transaction's events make to counter and histogram series, summed per series document,
    so that a batch writes each series once however many of its events touch it."""

    def __init__(self) -> None:
        self._by_id: dict[str, tuple[dict[str, Any], dict[str, float]]] = {}

    def add(self, change: Change) -> None:
        key = change.key
        _, inc = self._by_id.setdefault(
            key.id, ({"metric": key.metric, "project": key.project, "labels": list(key.labels)}, {})
        )
        if change.observe is not None:
            slot = bucket_for(METRICS_BY_NAME[key.metric].buckets, change.observe)
            for field, value in (("count", 1.0), ("sum", change.observe), (f"buckets.{slot}", 1.0)):
                inc[field] = inc.get(field, 0.0) + value
        else:
            inc["value"] = inc.get("value", 0.0) + change.add

    async def write(self, tx: Transaction) -> None:
        for series_id, (identity, inc) in self._by_id.items():
            await tx.update_one(SERIES, {"_id": series_id}, set=identity, inc=inc, upsert=True)


async def _raise_to(tx: Transaction, change: Change) -> bool:
    """Raise a series to ``change.maximum``; False when that changes nothing (an older version)."""
    key = change.key
    where = {"_id": key.id}
    current = await tx.find_one(SERIES, where)
    if current is not None and float(current.get("value", 0.0)) >= (change.maximum or 0.0):
        return False
    identity = {"metric": key.metric, "project": key.project, "labels": list(key.labels)}
    await tx.update_one(SERIES, where, set={**identity, "value": change.maximum}, upsert=True)
    return True
