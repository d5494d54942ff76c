"""The outbox relay: publishes what handlers wrote to their store's outbox, in order, then forgets it.

A crash between publishing and forgetting publishes the entry again on restart, with the same event id,
which consumers' inboxes recognise: at-least-once on the wire, exactly-once in effect."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from prometheus_client import Counter

from .bus.port import Bus, OutgoingMessage
from .store.port import Store

log = logging.getLogger(__name__)

RELAYED = Counter(
    "labelgate_outbox_relayed_events_total", "Events published from a service's outbox", ["service"]
)


class OutboxRelay:
    def __init__(self, store: Store, bus: Bus, *, service: str, batch: int = 500, idle_s: float = 2.0) -> None:
        """``idle_s``: how often an idle relay looks at the outbox anyway. This process's own commits wake it at
        once (the store's outbox signal); the look finds what no signal announces: entries that another replica
        of the service committed and did not publish before it died."""
        self._store = store
        self._bus = bus
        self._service = service
        self._batch = batch
        self._idle_s = idle_s

    async def publish_pending(self) -> int:
        """Publish everything pending now; returns how many entries went out."""
        total = 0
        while True:
            entries = await self._store.outbox_pending(self._batch)
            if not entries:
                return total
            await self._bus.publish([OutgoingMessage(e.topic, e.key, e.value, e.headers) for e in entries])
            await self._store.outbox_done([e.seq for e in entries])
            RELAYED.labels(self._service).inc(len(entries))
            total += len(entries)

    async def run(self, stopping: asyncio.Event) -> None:
        signal = self._store.outbox_signal
        while not stopping.is_set():
            # Cleared before reading the outbox, so that a commit landing during the publish wakes us again.
            signal.clear()
            try:
                await self.publish_pending()
            except Exception:
                log.exception("outbox relay failed; retrying", extra={"service": self._service})
                await asyncio.sleep(1.0)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(signal.wait(), self._idle_s)
