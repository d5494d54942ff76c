"""The shape every Labelgate service shares: a store it owns, consumer groups, an outbox relay, background
tasks, a readiness check and a graceful stop (drain the batch in hand, commit, publish the outbox) that ends
within its grace period even when the bus or the store no longer answers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
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
                retry=self.retry, store_ready=self.store.ready,
            )
            for group, handlers in self.subscriptions().items()
        ]
        coros: list[Coroutine[Any, Any, None]] = [self.relay.run(self._stopping)]
        coros += [c.run(self._stopping) for c in self.consumers]
        coros += self.background()
        self._tasks = [asyncio.create_task(c, name=f"{self.name}:{i}") for i, c in enumerate(coros)]
        for task in self._tasks:
            task.add_done_callback(self._task_ended)
        self._started = True
        log.info("service started", extra={"service": self.name, "groups": list(self.subscriptions())})

    def _task_ended(self, task: asyncio.Task[None]) -> None:
        """Say at once when a task dies while the service runs (``ready()`` turns false from then on)."""
        if task.cancelled() or self._stopping.is_set():
            return
        error = task.exception()
        log.error("task ended while the service runs", extra={"service": self.name, "task": task.get_name(),
                                                               "error": repr(error) if error else None})

    async def stop(self, grace_s: float = 25.0) -> None:
        """Drain and stop within ``grace_s``: consumers finish the batch in hand and commit it, the relay
        publishes what is committed. Whatever is still running at the deadline is cancelled; what it had not
        committed is delivered again after the restart, and the outbox keeps what was not published."""
        if not self._started:
            return
        self._started = False
        deadline = time.monotonic() + grace_s
        self._stopping.set()
        # The tasks get the grace period but a moment kept for the last outbox publish and closing the store.
        done, pending = await asyncio.wait(self._tasks, timeout=grace_s - min(2.0, grace_s / 5))
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                log.error("task failed", extra={"service": self.name, "task": task.get_name(),
                                                "error": repr(task.exception())})
        try:
            # A bus that no longer answers must not hold the stop past its grace: the outbox keeps the rest.
            await asyncio.wait_for(self.relay.publish_pending(), max(deadline - time.monotonic(), 0.1))
        except Exception as exc:
            log.warning("outbox not fully published at stop; it is published after the restart",
                        extra={"service": self.name, "error": repr(exc)})
        try:
            await asyncio.wait_for(self.store.stop(), max(deadline - time.monotonic(), 0.5))
        except Exception as exc:
            log.warning("store did not close cleanly", extra={"service": self.name, "error": repr(exc)})
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
