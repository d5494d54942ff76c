"""The event consumer every service runs: poll, apply each event exactly once, commit, dead-letter.

Each event's effect, its inbox record and the events it causes (outbox) are written in one store
transaction; the bus offset is committed only after that transaction. A batch of records is first tried in
one transaction (fast path); if any handler fails, the batch is rolled back and each record is retried on its
own with bounded, jittered backoff, so one bad message never blocks or poisons its neighbours."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import TypeVar

from prometheus_client import Counter, Gauge, Histogram
from pydantic import ValidationError

from .bus.port import Bus, CommitFailedError, Consumer, OutgoingMessage, Record, TopicPartition
from .errors import PermanentError
from .events import Event
from .store.port import Transaction
from .topics import decode, dlq_topic, encode, headers_for

log = logging.getLogger(__name__)

PROCESSED = Counter(
    "labelgate_consumer_events_total", "Events handled by a consumer group, by result", ["group", "result"]
)
HANDLE_SECONDS = Histogram(
    "labelgate_consumer_handle_seconds",
    "Time to apply one poll's batch of events, store commit included",
    ["group"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
LAG = Gauge("labelgate_consumer_lag_messages", "Messages not yet committed by a consumer group", ["group", "topic"])


class HandlerContext:
    """What a handler gets besides its event: the transaction, a way to emit events, and after-commit hooks."""

    def __init__(self, tx: Transaction, after_commit: list[Callable[[], None]]) -> None:
        self.tx = tx
        self._after_commit = after_commit

    async def emit(self, event: Event) -> None:
        await self.tx.add_outbox(event.topic, event.key, encode(event), headers_for(event))

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once the transaction is durable (in-memory caches, metrics, wake-ups)."""
        self._after_commit.append(callback)


Handler = Callable[[Event, HandlerContext], Awaitable[None]]


@dataclass
class RetryPolicy:
    max_attempts: int = 3
    backoff_initial_s: float = 0.05
    backoff_max_s: float = 2.0
    outage_backoff_initial_s: float = 0.25
    outage_backoff_max_s: float = 5.0


@dataclass
class EventConsumer:
    """Runs one consumer group over ``handlers`` (topic → handler) until ``stopping`` is set."""

    bus: Bus
    store_transaction: Callable[[], AbstractAsyncContextManager[Transaction]]
    group_id: str
    handlers: Mapping[str, Handler]
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    max_records: int = 200
    poll_timeout_s: float = 0.2
    _consumer: Consumer | None = None
    store_ready: object = None
    idle: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self, stopping: asyncio.Event) -> None:
        consumer = self._consumer = self.bus.consumer(self.group_id, list(self.handlers))
        await consumer.start()
        last_lag = 0.0
        try:
            while not stopping.is_set():
                records = await consumer.poll(max_records=self.max_records, timeout_s=self.poll_timeout_s)
                if time.monotonic() - last_lag > 2.0:
                    await self._export_lag(consumer)
                    last_lag = time.monotonic()
                if not records:
                    self.idle.set()
                    continue
                self.idle.clear()
                started = time.perf_counter()
                await self._process_batch(records)
                HANDLE_SECONDS.labels(self.group_id).observe(time.perf_counter() - started)
                offsets: dict[TopicPartition, int] = {}
                for record in records:
                    offsets[record.tp] = record.offset + 1
                try:
                    await consumer.commit(offsets)
                except CommitFailedError:
                    log.warning("commit refused after a rebalance; records will be redelivered",
                                extra={"group": self.group_id})
        finally:
            await consumer.stop()

    async def _export_lag(self, consumer: Consumer) -> None:
        per_topic: dict[str, int] = {}
        for tp, lag in (await consumer.lag()).items():
            per_topic[tp.topic] = per_topic.get(tp.topic, 0) + lag
        for topic, lag in per_topic.items():
            LAG.labels(self.group_id, topic).set(lag)

    async def _process_batch(self, records: Sequence[Record]) -> None:
        decoded: list[tuple[Record, Event]] = []
        for record in records:
            try:
                decoded.append((record, decode(record.topic, record.value)))
            except (ValidationError, ValueError, KeyError) as exc:
                await self._dead_letter(record, exc, attempts=1)
        if not decoded:
            return
        hooks: list[Callable[[], None]] = []
        failed: tuple[int, Exception] | None = None
        try:
            async with self.store_transaction() as tx:
                for i, (_, event) in enumerate(decoded):
                    try:
                        await self._apply(tx, event, hooks)
                    except Exception as exc:
                        failed = (i, exc)
                        raise
        except Exception:
            # Roll back the batch; each record alone decides retry or dead letter. The record whose handler
            # failed has had its first attempt: it counts, so that a handler runs at most max_attempts times.
            for i, (record, event) in enumerate(decoded):
                first_failure = failed[1] if failed is not None and failed[0] == i else None
                await self._process_one(record, event, first_failure=first_failure)
            return
        PROCESSED.labels(self.group_id, "ok").inc(len(decoded))
        _run_hooks(hooks)

    async def _apply(self, tx: Transaction, event: Event, hooks: list[Callable[[], None]]) -> None:
        if not await tx.claim_event(self.group_id, event.event_id):
            hooks.append(lambda: PROCESSED.labels(self.group_id, "duplicate").inc())
            return
        await self.handlers[event.topic](event, HandlerContext(tx, hooks))

    async def _process_one(self, record: Record, event: Event, *, first_failure: Exception | None = None) -> None:
        """Apply one event in its own transaction, retrying what is retriable with jittered exponential backoff;
        ``first_failure`` is the error of an attempt already made in the batch."""
        attempts = 0 if first_failure is None else 1
        error = first_failure
        while error is None or self._retriable(error, attempts):
            if attempts:
                await asyncio.sleep(self._backoff_s(attempts))
            attempts += 1
            hooks: list[Callable[[], None]] = []
            try:
                async with self.store_transaction() as tx:
                    await self._apply(tx, event, hooks)
            except Exception as exc:
                error = exc
                continue
            _run_hooks(hooks)
            PROCESSED.labels(self.group_id, "ok").inc()
            return
        log.warning(
            "event dead-lettered",
            extra={"group": self.group_id, "topic": record.topic, "event_id": event.event_id,
                   "attempts": attempts, "error": repr(error)},
        )
        await self._dead_letter(record, error, attempts=attempts)

    def _retriable(self, error: Exception, attempts: int) -> bool:
        return not isinstance(error, PermanentError) and attempts < self.retry.max_attempts

    def _backoff_s(self, attempts: int) -> float:
        ceiling = min(self.retry.backoff_max_s, self.retry.backoff_initial_s * 2 ** (attempts - 1))
        return random.uniform(0, ceiling)  # noqa: S311 -- jitter spreads retries; it guards no secret

    async def _dead_letter(self, record: Record, exc: BaseException, *, attempts: int) -> None:
        headers = (
            *record.headers,
            ("dlq.original_topic", record.topic.encode()),
            ("dlq.partition", str(record.partition).encode()),
            ("dlq.offset", str(record.offset).encode()),
            ("dlq.error", f"{type(exc).__name__}: {exc}"[:2000].encode()),
            ("dlq.attempts", str(attempts).encode()),
            ("dlq.group", self.group_id.encode()),
        )
        await self.bus.publish([OutgoingMessage(dlq_topic(record.topic), record.key, record.value, headers)])
        PROCESSED.labels(self.group_id, "dead_lettered").inc()


def _run_hooks(hooks: list[Callable[[], None]]) -> None:
    for hook in hooks:
        try:
            hook()
        except Exception:
            log.exception("after-commit hook failed")


E = TypeVar("E", bound=Event)


def on(event_type: type[E], handler: Callable[[E, HandlerContext], Awaitable[None]]) -> tuple[str, Handler]:
    """Subscribe ``handler`` to ``event_type``'s topic, typed: the handler receives that event class.

    ``subscriptions()`` then reads ``{"router.decide": dict([on(LabelScored, self.on_label_scored)])}``."""

    async def typed(event: Event, ctx: HandlerContext) -> None:
        if not isinstance(event, event_type):
            raise PermanentError(f"expected {event_type.__name__} on {event_type.topic}, got {type(event).__name__}")
        await handler(event, ctx)

    return event_type.topic, typed
