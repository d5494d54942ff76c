"""The Service lifecycle on a real in-process bus and SQLite store: ready while running, a graceful stop that
drains the batch in hand, commits it and publishes its outbox, and a start that publishes what is left over."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Mapping
from pathlib import Path
from typing import Any, cast

import pytest
from fastapi import FastAPI

from labelgate_core.app import lifespan_for
from labelgate_core.bus.memory import MemoryBus
from labelgate_core.consumer import Handler, HandlerContext
from labelgate_core.events import Event, ItemSubmitted, LabelScored, Proposal
from labelgate_core.service import Service
from labelgate_core.store.port import Index
from labelgate_core.store.sqlite import SqliteStore
from labelgate_core.topics import ITEM_SUBMITTED, LABEL_SCORED, decode, encode, headers_for

from .helpers import FAST_RETRY, eventually, lag, publish, read_topic, submitted

pytestmark = pytest.mark.integration

GROUP = "scoring.apply"


class ScoringService(Service):
    """A small service: records each submitted item and emits a score for it."""

    name = "scoring"

    def __init__(self, *, bus: MemoryBus, store: SqliteStore, gate: asyncio.Event | None = None,
                 broken_background: bool = False) -> None:
        super().__init__(bus=bus, store=store, retry=FAST_RETRY)
        self.gate = gate
        self.in_handler = asyncio.Event()
        self.broken_background = broken_background

    def subscriptions(self) -> Mapping[str, Mapping[str, Handler]]:
        return {GROUP: {ITEM_SUBMITTED: self.on_submitted}}

    async def setup(self) -> None:
        await self.store.ensure_indexes("items", [Index(("item_id",), unique=True)])

    def background(self) -> list[Coroutine[Any, Any, None]]:
        return [self._fail_soon()] if self.broken_background else []

    async def _fail_soon(self) -> None:
        raise RuntimeError("the cache refresher died")

    async def on_submitted(self, event: Event, ctx: HandlerContext) -> None:
        assert isinstance(event, ItemSubmitted)
        self.in_handler.set()
        if self.gate is not None:
            await self.gate.wait()
        await ctx.tx.insert("items", {"_id": event.event_id, "item_id": event.item_id})
        await ctx.emit(LabelScored(
            **event.caused(), producer=self.name, task=event.task, routing=event.routing,
            guideline_version=event.guideline_version, submitted_at=event.occurred_at,
            proposal=Proposal(model_id="m", model_version=1, labels=("spam",), confidence=0.9),
        ))


async def test_a_service_is_ready_while_it_runs_and_not_after_it_stopped(bus: MemoryBus, tmp_path: Path) -> None:
    service = ScoringService(bus=bus, store=SqliteStore(tmp_path / "scoring.db"))
    assert not await service.ready()

    await service.start()
    try:
        assert await service.ready()
        await publish(bus, submitted("item-1"))
        await eventually(lambda: _count(service, 1))
        assert await service.ready()
    finally:
        await service.stop()

    assert not await service.ready()
    await service.stop()  # a second stop is harmless


async def _count(service: ScoringService, expected: int) -> bool:
    return await service.store.count("items", {}) == expected


async def test_a_graceful_stop_drains_the_batch_in_hand_commits_it_and_publishes_its_outbox(
    bus: MemoryBus, tmp_path: Path
) -> None:
    gate = asyncio.Event()
    service = ScoringService(bus=bus, store=SqliteStore(tmp_path / "scoring.db"), gate=gate)
    sent = [submitted(f"item-{i}") for i in range(3)]
    await publish(bus, *sent)
    await service.start()
    await service.in_handler.wait()  # the batch is in hand, its first event half-applied

    stopping = asyncio.create_task(service.stop())
    await asyncio.sleep(0.05)
    assert not stopping.done(), "stop waits for the batch in hand"
    gate.set()
    await stopping

    assert lag(bus, GROUP, [ITEM_SUBMITTED]) == 0, "the drained batch was committed"
    scored = [decode(r.topic, r.value) for r in await read_topic(bus, LABEL_SCORED, 3)]
    assert sorted(e.causation_id or "" for e in scored) == sorted(e.event_id for e in sent)
    store = SqliteStore(tmp_path / "scoring.db")
    await store.start()
    try:
        assert await store.count("items", {}) == 3
        assert await store.outbox_pending() == []
    finally:
        await store.stop()


async def test_start_publishes_what_a_previous_run_committed_but_did_not_publish(
    bus: MemoryBus, tmp_path: Path
) -> None:
    cause = submitted("item-9")
    leftover = LabelScored(
        **cause.caused(), producer="scoring", task=cause.task, routing=cause.routing, guideline_version=1,
        submitted_at=cause.occurred_at, proposal=Proposal(model_id="m", model_version=1, labels=("ham",)),
    )
    previous = SqliteStore(tmp_path / "scoring.db")
    await previous.start()
    async with previous.transaction() as tx:
        await tx.add_outbox(leftover.topic, leftover.key, encode(leftover), headers_for(leftover))
    await previous.stop()  # the process died before its relay ran

    service = ScoringService(bus=bus, store=SqliteStore(tmp_path / "scoring.db"))
    await service.start()
    try:
        (record,) = await read_topic(bus, LABEL_SCORED, 1)
        assert decode(record.topic, record.value) == leftover
    finally:
        await service.stop()


async def test_a_service_whose_task_died_is_not_ready(bus: MemoryBus, tmp_path: Path) -> None:
    service = ScoringService(bus=bus, store=SqliteStore(tmp_path / "scoring.db"), broken_background=True)
    await service.start()
    try:
        await eventually(lambda: _not_ready(service), what="the service to report not ready")
    finally:
        await service.stop()


async def _not_ready(service: Service) -> bool:
    return not await service.ready()


async def test_a_stopped_service_starts_again_where_it_left_off(bus: MemoryBus, tmp_path: Path) -> None:
    service = ScoringService(bus=bus, store=SqliteStore(tmp_path / "scoring.db"))
    await publish(bus, submitted("item-1"))
    await service.start()
    await eventually(lambda: _count(service, 1))
    await service.stop()

    await publish(bus, submitted("item-2"))
    await service.start()
    try:
        assert await service.ready()
        await eventually(lambda: _count(service, 2))
        assert {d["item_id"] for d in await service.store.find("items", {})} == {"item-1", "item-2"}
    finally:
        await service.stop()
    assert len(await read_topic(bus, LABEL_SCORED, 2)) == 2


class _HangingBus(MemoryBus):
    """A bus whose broker is gone: stopping it would wait forever for what it has in flight."""

    async def stop(self) -> None:
        await asyncio.Event().wait()


class _HangingStore(SqliteStore):
    """A store whose server is gone: closing it never returns."""

    async def stop(self) -> None:
        await asyncio.Event().wait()


async def test_a_shutdown_ends_within_the_grace_period_when_neither_bus_nor_store_answers(tmp_path: Path) -> None:
    """What SIGTERM runs in every service process: the services stop, then the bus, all within the grace period,
    however the store and the bus behave."""
    bus = _HangingBus()
    services = [
        ScoringService(bus=bus, store=_HangingStore(tmp_path / f"scoring-{i}.db")) for i in range(2)
    ]
    lifespan = lifespan_for(bus, services, grace_s=2.0)
    loop = asyncio.get_running_loop()
    try:
        async with lifespan(FastAPI()):
            assert all([await service.ready() for service in services])
            began = loop.time()
        assert loop.time() - began < 2.0 + 0.5
    finally:
        # What the test left open: the stores' connection threads would keep the interpreter from exiting.
        for service in services:
            await SqliteStore.stop(cast(SqliteStore, service.store))
        await MemoryBus.stop(bus)
