"""The event consumer every service runs: poll, apply each event exactly once, commit, dead-letter.

Each event's effect, its inbox record and the events it causes (outbox) are written in one store
transaction; the bus offset is committed only after that transaction. A batch of records is first tried in
one transaction (fast path); if any handler fails, the batch is rolled back and each record is retried on its
own with bounded, jittered backoff, so one bad message never blocks or poisons its neighbours.

An outage is not a bad message. When the store is unavailable (its transaction cannot begin, or a handler
failed while the store's health check fails too) or the bus is (poll, commit or a dead-letter publish
failed), the runner keeps the batch in hand, commits nothing, backs off and tries the same records again
once the dependency answers: an outage delays events, it never dead-letters them. The same goes for a store
that answers but keeps refusing a record's transaction as retriable (write conflicts that outlast the store's
own replays, typically with the open transaction of a process killed mid-batch, which MongoDB keeps for
``transactionLifetimeLimitSeconds``, 60 s by default): the record is retried for ``conflict_patience_s``
without counting attempts. Attempts, and the dead letter, are for failures of the handler on the event."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal, TypeVar, cast

from prometheus_client import Counter, Gauge, Histogram
from pydantic import ValidationError

from .bus.port import Bus, CommitFailedError, Consumer, OutgoingMessage, Record, TopicPartition
from .errors import PermanentError, RetriableError
from .events import Event
from .store.port import Doc, Filter, Sort, Transaction
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
OUTAGES = Counter(
    "labelgate_consumer_outage_pauses_total",
    "Times a consumer group backed off because its store or bus was unavailable (nothing was committed)",
    ["group", "dependency"],
)

Dependency = Literal["store", "bus"]
T = TypeVar("T")
S = TypeVar("S")
_FINAL_COMMIT_TIMEOUT_S = 5.0
_LOG_EVERY = 10
"""During a long outage, one warning every this many failed tries (the first one is always logged)."""


@dataclass
class _Scope:
    """What the handlers of one transaction (a batch, or one record retried alone) share."""

    after_commit: list[Callable[[], None]] = field(default_factory=list)
    shared: dict[str, Any] = field(default_factory=dict)
    flushes: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    async def flush(self) -> None:
        """Run the writes deferred to the end of the transaction, once every handler has run."""
        for flush in self.flushes:
            await flush()


class HandlerContext:
    """What a handler gets besides its event: the transaction, a way to emit events, after-commit hooks, and
    state shared with the handlers of the other events in the same transaction."""

    def __init__(self, tx: Transaction, scope: _Scope) -> None:
        self.tx = tx
        self._scope = scope

    async def emit(self, event: Event) -> None:
        await self.tx.add_outbox(event.topic, event.key, encode(event), headers_for(event))

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once the transaction is durable (in-memory caches, metrics, wake-ups)."""
        self._scope.after_commit.append(callback)

    def shared(self, key: str, create: Callable[[], S], flush: Callable[[S], Awaitable[None]] | None = None) -> S:
        """State under ``key`` shared by the handlers of every event this transaction applies, made by ``create``
        on first use; ``flush(state)``, if given, then runs in the transaction after the last handler, before the
        commit (without one the state is a cache of what the transaction read).
        Handlers accumulate there what many events write to the same documents (counters), so that the
        transaction writes each document once instead of once per event. A batch that fails is applied again
        record by record, each in a transaction of its own with fresh state: nothing is flushed twice."""
        if key not in self._scope.shared:
            state = self._scope.shared[key] = create()
            if flush is not None:
                self._scope.flushes.append(partial(flush, state))
        return cast(S, self._scope.shared[key])


Handler = Callable[[Event, HandlerContext], Awaitable[None]]


@dataclass
class RetryPolicy:
    max_attempts: int = 3
    backoff_initial_s: float = 0.05
    backoff_max_s: float = 2.0
    outage_backoff_initial_s: float = 0.25
    """First pause after the store or the bus failed; it doubles (with jitter) up to ``outage_backoff_max_s``."""
    outage_backoff_max_s: float = 5.0
    conflict_patience_s: float = 120.0
    """How long a record whose transaction the store keeps refusing as retriable is retried without counting
    attempts: longer than the 60 s for which MongoDB keeps the open transaction of a killed process."""


class _Outage(Exception):
    """The store or the bus is unavailable (or the store keeps refusing a transaction): the batch in hand is
    kept, uncommitted, and tried again later."""

    def __init__(self, dependency: Dependency, cause: BaseException, *, conflict: bool = False) -> None:
        super().__init__(f"{dependency} unavailable: {type(cause).__name__}: {cause}")
        self.dependency: Dependency = dependency
        self.cause = cause
        self.conflict = conflict


@dataclass
class _Batch:
    """One poll's records and how far they got: a record is settled once its effect is committed or it has
    been dead-lettered, so that a batch retried after an outage neither applies nor dead-letters it twice."""

    records: Sequence[Record]
    events: dict[int, Event] = field(default_factory=dict)
    settled: set[int] = field(default_factory=set)
    conflicted_since: dict[int, float] = field(default_factory=dict)
    """Per record, since when the store has been refusing its transaction as retriable."""

    def unsettled(self) -> list[int]:
        return [i for i in range(len(self.records)) if i not in self.settled]

    def settle(self, i: int) -> None:
        self.settled.add(i)
        self.conflicted_since.pop(i, None)


class _WatchedTransaction:
    """The transaction as handlers see it: the same operations, and a note of every failure of the store's own,
    so that a handler's failure can be told apart from a store that refused the operation."""

    def __init__(self, tx: Transaction) -> None:
        self._tx = tx
        self.failures: list[BaseException] = []

    async def _watch(self, operation: Awaitable[T]) -> T:
        try:
            return await operation
        except Exception as exc:
            self.failures.append(exc)
            raise

    async def find_one(self, collection: str, filter: Filter) -> Doc | None:
        return await self._watch(self._tx.find_one(collection, filter))

    async def find(
        self, collection: str, filter: Filter, *, sort: Sort = (), limit: int | None = None, skip: int = 0
    ) -> list[Doc]:
        return await self._watch(self._tx.find(collection, filter, sort=sort, limit=limit, skip=skip))

    async def count(self, collection: str, filter: Filter) -> int:
        return await self._watch(self._tx.count(collection, filter))

    async def insert(self, collection: str, doc: Doc) -> None:
        await self._watch(self._tx.insert(collection, doc))

    async def insert_many(self, collection: str, docs: Sequence[Doc]) -> None:
        await self._watch(self._tx.insert_many(collection, docs))

    async def update_one(
        self,
        collection: str,
        filter: Filter,
        *,
        set: Mapping[str, Any] | None = None,
        inc: Mapping[str, float] | None = None,
        upsert: bool = False,
    ) -> bool:
        return await self._watch(self._tx.update_one(collection, filter, set=set, inc=inc, upsert=upsert))

    async def find_one_and_update(
        self,
        collection: str,
        filter: Filter,
        *,
        sort: Sort = (),
        set: Mapping[str, Any] | None = None,
        inc: Mapping[str, float] | None = None,
    ) -> Doc | None:
        return await self._watch(self._tx.find_one_and_update(collection, filter, sort=sort, set=set, inc=inc))

    async def delete_many(self, collection: str, filter: Filter) -> int:
        return await self._watch(self._tx.delete_many(collection, filter))

    async def claim_event(self, consumer: str, event_id: str) -> bool:
        return await self._watch(self._tx.claim_event(consumer, event_id))

    async def add_outbox(
        self, topic: str, key: str | None, value: bytes, headers: Sequence[tuple[str, bytes]] = ()
    ) -> None:
        await self._watch(self._tx.add_outbox(topic, key, value, headers))

    def refused(self, error: BaseException, *, committing: bool) -> bool:
        """Whether ``error`` is the store refusing the transaction as retriable (at commit, or in one of its
        operations, whatever the handler wrapped it in) rather than the handler failing on its event."""
        if isinstance(error, PermanentError):
            return False
        if committing:
            return isinstance(error, RetriableError)
        return any(
            isinstance(link, RetriableError) and any(link is failure for failure in self.failures)
            for link in _chain(error)
        )


def _chain(error: BaseException) -> list[BaseException]:
    links: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and len(links) < 20 and all(current is not seen for seen in links):
        links.append(current)
        current = current.__cause__ or current.__context__
    return links


@dataclass
class EventConsumer:
    """Runs one consumer group over ``handlers`` (topic → handler) until ``stopping`` is set.

    ``store_ready`` (the store's health check) tells a handler that failed because the store is down from one
    that failed on its event; a transaction the store refuses as retriable is told apart by watching the
    store's operations. Only failures of the handler on its event count towards ``retry.max_attempts`` and the
    dead letter."""

    bus: Bus
    store_transaction: Callable[[], AbstractAsyncContextManager[Transaction]]
    group_id: str
    handlers: Mapping[str, Handler]
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    max_records: int = 200
    poll_timeout_s: float = 0.2
    _consumer: Consumer | None = None
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    store_ready: Callable[[], Awaitable[bool]] | None = None

    async def run(self, stopping: asyncio.Event) -> None:
        consumer = self._consumer = self.bus.consumer(self.group_id, list(self.handlers))
        # Offsets of settled records not committed yet (a commit that failed is retried with the next one).
        pending: dict[TopicPartition, int] = {}
        try:
            if not await self._start(consumer, stopping):
                return
            await self._loop(consumer, stopping, pending)
        finally:
            await self._finish(consumer, pending)

    async def _loop(self, consumer: Consumer, stopping: asyncio.Event, pending: dict[TopicPartition, int]) -> None:
        last_lag = 0.0
        failures = 0  # consecutive failed polls or commits
        while not stopping.is_set():
            try:
                records = await consumer.poll(max_records=self.max_records, timeout_s=self.poll_timeout_s)
            except Exception as exc:
                failures += 1
                self._outage("bus", "polling", exc, failures)
                await self._pause(stopping, failures)
                continue
            if time.monotonic() - last_lag > 2.0:
                await self._export_lag(consumer)
                last_lag = time.monotonic()
            if records:
                self.idle.clear()
                started = time.perf_counter()
                if not await self._settle(_Batch(records), stopping):
                    return  # stopping in an outage: the unsettled records are delivered again after a restart
                HANDLE_SECONDS.labels(self.group_id).observe(time.perf_counter() - started)
                for record in records:
                    pending[record.tp] = record.offset + 1
            if not pending:
                failures = 0
                self.idle.set()
                continue
            if await self._commit(consumer, pending, failures + 1):
                if failures:
                    log.info("bus answers again; offsets committed", extra={"group": self.group_id})
                failures = 0
                if not records:
                    self.idle.set()
            else:
                failures += 1
                await self._pause(stopping, failures)

    async def _start(self, consumer: Consumer, stopping: asyncio.Event) -> bool:
        """Join the group, retrying while the bus is unavailable; False if told to stop first."""
        failures = 0
        while not stopping.is_set():
            try:
                await consumer.start()
                return True
            except Exception as exc:
                failures += 1
                self._outage("bus", "joining the group", exc, failures)
                with contextlib.suppress(Exception):
                    await consumer.stop()
                await self._pause(stopping, failures)
        return False

    async def _commit(self, consumer: Consumer, pending: dict[TopicPartition, int], tries: int = 1) -> bool:
        """Commit ``pending``; True when nothing is left to retry (committed, or refused after a rebalance)."""
        try:
            await consumer.commit(dict(pending))
        except CommitFailedError:
            # The partitions moved to another member, which starts from the last committed offsets: those
            # records are redelivered and the inbox recognises them.
            log.warning("commit refused after a rebalance; records will be redelivered", extra={"group": self.group_id})
        except Exception as exc:
            self._outage("bus", "committing", exc, tries)
            return False
        pending.clear()
        return True

    async def _finish(self, consumer: Consumer, pending: dict[TopicPartition, int]) -> None:
        if pending:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._commit(consumer, pending), _FINAL_COMMIT_TIMEOUT_S)
        try:
            await consumer.stop()
        except Exception as exc:
            log.warning("consumer did not leave its group cleanly", extra={"group": self.group_id, "error": repr(exc)})

    async def _export_lag(self, consumer: Consumer) -> None:
        try:
            lags = await consumer.lag()
        except Exception as exc:  # a gauge is not worth stopping for; the next poll tells whether the bus is up
            log.debug("consumer lag not read", extra={"group": self.group_id, "error": repr(exc)})
            return
        per_topic: dict[str, int] = {}
        for tp, lag in lags.items():
            per_topic[tp.topic] = per_topic.get(tp.topic, 0) + lag
        for topic, lag in per_topic.items():
            LAG.labels(self.group_id, topic).set(lag)

    # -- outages -----------------------------------------------------------------------------------------------

    async def _settle(self, batch: _Batch, stopping: asyncio.Event) -> bool:
        """Apply or dead-letter every record of ``batch``, waiting out outages; False if told to stop first."""
        failures = 0
        while True:
            try:
                await self._process_batch(batch)
            except _Outage as outage:
                failures += 1
                during = "processing a batch" + (" (it keeps refusing a transaction)" if outage.conflict else "")
                self._outage(outage.dependency, during, outage.cause, failures)
                if not await self._wait_out(outage.dependency, stopping, failures, probe=not outage.conflict):
                    return False
                continue
            if failures:
                log.info("outage over; batch applied", extra={"group": self.group_id, "tries": failures + 1})
            return True

    async def _wait_out(self, dependency: Dependency, stopping: asyncio.Event, failures: int, *, probe: bool) -> bool:
        """Back off; for a store that is down, until its health check passes. False if told to stop meanwhile."""
        await self._pause(stopping, failures)
        if dependency == "store" and probe:
            while not stopping.is_set() and await self._store_down():
                failures += 1
                OUTAGES.labels(self.group_id, dependency).inc()
                await self._pause(stopping, failures)
        return not stopping.is_set()

    async def _store_down(self) -> bool:
        if self.store_ready is None:
            return False
        try:
            return not await self.store_ready()
        except Exception:
            return True

    async def _pause(self, stopping: asyncio.Event, failures: int) -> None:
        ceiling = min(self.retry.outage_backoff_max_s, self.retry.outage_backoff_initial_s * 2 ** (failures - 1))
        delay = random.uniform(ceiling / 2, ceiling)  # noqa: S311 -- jitter spreads retries; it guards no secret
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), delay)

    def _outage(self, dependency: Dependency, during: str, exc: BaseException, failures: int) -> None:
        OUTAGES.labels(self.group_id, dependency).inc()
        if failures == 1 or failures % _LOG_EVERY == 0:
            log.warning(
                "%s unavailable while %s; backing off, nothing committed",
                dependency,
                during,
                extra={"group": self.group_id, "tries": failures, "error": f"{type(exc).__name__}: {exc}"},
            )

    # -- applying events ---------------------------------------------------------------------------------------

    async def _process_batch(self, batch: _Batch) -> None:
        for i in batch.unsettled():
            if i in batch.events:
                continue
            record = batch.records[i]
            try:
                batch.events[i] = decode(record.topic, record.value)
            except (ValidationError, ValueError, KeyError) as exc:
                await self._dead_letter(record, exc, attempts=1)
                batch.settle(i)
        todo = batch.unsettled()
        if not todo:
            return
        scope = _Scope()
        failed: tuple[int, Exception] | None = None
        began = done = False
        watched: _WatchedTransaction | None = None
        try:
            async with self.store_transaction() as tx:
                began, watched = True, _WatchedTransaction(tx)
                for i in todo:
                    try:
                        await self._apply(watched, batch.events[i], scope)
                    except Exception as exc:
                        failed = (i, exc)
                        raise
                await scope.flush()
                done = True
        except Exception as exc:
            if not began or await self._store_down():
                raise _Outage("store", exc) from exc
            # Roll back the batch; each record alone decides retry or dead letter. The record whose handler
            # failed has had its first attempt: it counts (so that a handler runs at most max_attempts times),
            # unless what failed was the store refusing the transaction.
            counted: dict[int, Exception] = {}
            if failed is not None and not (watched is not None and watched.refused(failed[1], committing=done)):
                counted[failed[0]] = failed[1]
            for i in todo:
                await self._process_one(batch, i, first_failure=counted.get(i))
                batch.settle(i)
            return
        for i in todo:
            batch.settle(i)
        PROCESSED.labels(self.group_id, "ok").inc(len(todo))
        _run_hooks(scope.after_commit)

    async def _apply(self, tx: Transaction, event: Event, scope: _Scope) -> None:
        if not await tx.claim_event(self.group_id, event.event_id):
            scope.after_commit.append(lambda: PROCESSED.labels(self.group_id, "duplicate").inc())
            return
        await self.handlers[event.topic](event, HandlerContext(tx, scope))

    async def _process_one(self, batch: _Batch, i: int, *, first_failure: Exception | None = None) -> None:
        """Apply record ``i`` in its own transaction, retrying what is retriable with jittered exponential
        backoff; ``first_failure`` is the error of an attempt already made in the batch. Raises ``_Outage`` when
        the store is down, or keeps refusing the transaction (within ``conflict_patience_s``): neither is an
        attempt of the handler."""
        record, event = batch.records[i], batch.events[i]
        attempts = 0 if first_failure is None else 1
        error = first_failure
        while error is None or self._retriable(error, attempts):
            if attempts:
                await asyncio.sleep(self._backoff_s(attempts))
            scope = _Scope()
            began = done = False
            watched: _WatchedTransaction | None = None
            try:
                async with self.store_transaction() as tx:
                    began, watched = True, _WatchedTransaction(tx)
                    await self._apply(watched, event, scope)
                    await scope.flush()
                    done = True
            except Exception as exc:
                if not began or await self._store_down():
                    raise _Outage("store", exc) from exc
                if watched is not None and watched.refused(exc, committing=done) and self._patient(batch, i):
                    raise _Outage("store", exc, conflict=True) from exc
                attempts += 1
                error = exc
                continue
            _run_hooks(scope.after_commit)
            PROCESSED.labels(self.group_id, "ok").inc()
            return
        log.warning(
            "event dead-lettered",
            extra={"group": self.group_id, "topic": record.topic, "event_id": event.event_id,
                   "attempts": attempts, "error": repr(error)},
        )
        await self._dead_letter(record, error, attempts=attempts)

    def _patient(self, batch: _Batch, i: int) -> bool:
        """Whether record ``i``'s transaction has been refused by the store for less than the patience."""
        since = batch.conflicted_since.setdefault(i, time.monotonic())
        return time.monotonic() - since < self.retry.conflict_patience_s

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
        try:
            await self.bus.publish([OutgoingMessage(dlq_topic(record.topic), record.key, record.value, headers)])
        except Exception as publish_error:
            raise _Outage("bus", publish_error) from publish_error
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
