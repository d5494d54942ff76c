"""The shape every Labelgate service shares: a store it owns, consumer groups, an outbox relay, background
tasks, a readiness check and a graceful stop (drain the batch in hand, commit, publish the outbox)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine, Mapping
from typing import Any

from .bus.port import Bus
from .consumer import EventConsumer, Handler, RetryPolicy
from .outbox import OutboxRelay
from .store.port import Store

log = logging.getLogger(__name__)


class Service:
    name: str = "service"

    def __init__(self, *, bus: Bus, store: Store, retry: RetryPolicy | None = None) -> None:
        self.bus = bus
        self.store = store
        self.retry = retry or RetryPolicy()
        self.relay = OutboxRelay(store, bus, service=self.name)
        self.consumers: list[EventConsumer] = []
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._started = False

    # -- what a service defines ----------------------------------------------------------------------------

    def subscriptions(self) -> Mapping[str, Mapping[str, Handler]]:
        """Consumer group id → {topic: handler}."""
        return {}

    async def setup(self) -> None:
        """Indexes, caches, models: whatever must be in place before the first event."""

    def background(self) -> list[Coroutine[Any, Any, None]]:
        """Long-running tasks besides the consumers and the relay; each must return once ``stopping`` is set."""
        return []

    # -- lifecycle -----------------------------------------------------------------------------------------

    @property
    def stopping(self) -> asyncio.Event:
        return self._stopping

    async def start(self) -> None:
        self._stopping.clear()  # a stopped service can be started again
        await self.store.start()
        await self.setup()
        await self.relay.publish_pending()  # whatever a previous run committed but did not publish
        topics = [t for handlers in self.subscriptions().values() for t in handlers]
        await self.bus.ensure_topics(topics)
        self.consumers = [
            EventConsumer(
                bus=self.bus, store_transaction=self.store.transaction, group_id=group, handlers=handlers,
                retry=self.retry,
            )
            for group, handlers in self.subscriptions().items()
        ]
        coros: list[Coroutine[Any, Any, None]] = [self.relay.run(self._stopping)]
        coros += [c.run(self._stopping) for c in self.consumers]
        coros += self.background()
        self._tasks = [asyncio.create_task(c, name=f"{self.name}:{i}") for i, c in enumerate(coros)]
        self._started = True
        log.info("service started", extra={"service": self.name, "groups": list(self.subscriptions())})

    async def stop(self, grace_s: float = 25.0) -> None:
        if not self._started:
            return
        self._started = False
        self._stopping.set()
        done, pending = await asyncio.wait(self._tasks, timeout=grace_s)
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                log.error("task failed", extra={"service": self.name, "task": task.get_name(),
                                                "error": repr(task.exception())})
        with contextlib.suppress(Exception):
            await self.relay.publish_pending()
        await self.store.stop()
        log.info("service stopped", extra={"service": self.name, "forced": len(pending)})

    async def ready(self) -> bool:
        if not self._started or any(t.done() for t in self._tasks):
            return False
        try:
            return await self.store.ready() and await self.bus.ready()
        except Exception:
            return False

    async def idle(self) -> bool:
        """True when every consumer's last poll came back empty and the outbox is empty (tests, replay)."""
        pending = await self.store.outbox_pending(1)
        return not pending and all(c.idle.is_set() for c in self.consumers)
