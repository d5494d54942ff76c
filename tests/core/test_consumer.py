"""The event consumer on a real in-process bus and a real SQLite store: each event's effect exactly once,
failures retried or dead-lettered, offsets committed only after the effect, emitted events relayed in order."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from labelgate_core.bus.memory import MemoryBus
from labelgate_core.bus.port import TopicPartition
from labelgate_core.consumer import EventConsumer, Handler, HandlerContext, RetryPolicy
from labelgate_core.errors import PermanentError, RetriableError
from labelgate_core.events import Event, ItemSubmitted, LabelScored, Proposal
from labelgate_core.outbox import OutboxRelay
from labelgate_core.store.port import Transaction
from labelgate_core.store.sqlite import SqliteStore
from labelgate_core.topics import ITEM_SUBMITTED, LABEL_SCORED, decode, dlq_topic

from .helpers import FAST_RETRY, PARTITIONS, eventually, header, lag, publish, publish_raw, read_topic, submitted

pytestmark = pytest.mark.integration

DLQ = dlq_topic(ITEM_SUBMITTED)


class Crash(BaseException):
    """The process dies here: nothing after this line runs (no except Exception catches it)."""


@dataclass
class Counting:
    """A handler whose effect is not idempotent by itself (a counter), so a double apply shows."""

    fail: Callable[[ItemSubmitted, int], None] = lambda event, call: None
    calls: dict[str, int] = field(default_factory=dict)
    committed: list[str] = field(default_factory=list)

    async def __call__(self, event: Event, ctx: HandlerContext) -> None:
        assert isinstance(event, ItemSubmitted)
        call = self.calls[event.text] = self.calls.get(event.text, 0) + 1
        await ctx.tx.update_one("applied", {"_id": event.text}, inc={"n": 1}, upsert=True)
        self.fail(event, call)
        ctx.after_commit(lambda: self.committed.append(event.text))


async def applied(store: SqliteStore) -> dict[str, int]:
    return {doc["_id"]: doc["n"] for doc in await store.find("applied", {})}


@dataclass
class Running:
    bus: MemoryBus
    consumer: EventConsumer
    stopping: asyncio.Event
    task: asyncio.Task[None]

    async def drained(self) -> None:
        """Wait until the group committed everything published so far (or the consumer died)."""

        async def done() -> bool:
            return self.task.done() or lag(self.bus, self.consumer.group_id, [ITEM_SUBMITTED]) == 0

        await eventually(done, what="the consumer to commit everything")
        if self.task.done() and self.task.exception() is not None:
            raise AssertionError("the consumer died") from self.task.exception()

    async def stop(self) -> None:
        self.stopping.set()
        with contextlib.suppress(BaseException):
            await self.task


Run = Callable[..., Awaitable[Running]]


@pytest.fixture
async def run(bus: MemoryBus, store: SqliteStore) -> AsyncIterator[Run]:
    """Starts an EventConsumer (a group of its own) over ``handlers``; stops it at the end of the test."""
    started: list[Running] = []

    async def start(
        handlers: Mapping[str, Handler],
        *,
        retry: RetryPolicy = FAST_RETRY,
        max_records: int = 200,
        on_bus: MemoryBus | None = None,
        on_store: SqliteStore | None = None,
        group: str | None = None,
    ) -> Running:
        target = on_bus or bus
        consumer = EventConsumer(
            bus=target, store_transaction=(on_store or store).transaction,
            group_id=group or f"tests.consumer.{uuid.uuid4().hex[:8]}", handlers=handlers, retry=retry,
            max_records=max_records, poll_timeout_s=0.05,
        )
        stopping = asyncio.Event()
        running = Running(target, consumer, stopping, asyncio.create_task(consumer.run(stopping)))
        started.append(running)
        return running

    yield start
    for running in started:
        await running.stop()


def dead_lettered(group: str) -> float:
    value = REGISTRY.get_sample_value("labelgate_consumer_events_total", {"group": group, "result": "dead_lettered"})
    return value or 0.0


async def test_an_event_delivered_twice_is_applied_once(bus: MemoryBus, store: SqliteStore, run: Run) -> None:
    first, second = submitted("item-1", "first"), submitted("item-2", "second")
    await publish(bus, first, first, second)  # the same event twice in one batch
    handler = Counting()
    running = await run({ITEM_SUBMITTED: handler})
    await running.drained()

    await publish(bus, first)  # and once more, in a later batch
    await running.drained()

    assert await applied(store) == {"first": 1, "second": 1}
    assert handler.calls == {"first": 1, "second": 1}, "a duplicate never reaches the handler"


async def test_state_shared_in_a_transaction_is_flushed_once_when_the_batch_is_applied_again_record_by_record(
    bus: MemoryBus, store: SqliteStore, run: Run
) -> None:
    """Handlers sum into transaction-scoped state, written once by its flush. One handler fails the first time:
    the batch rolls back (its flush never ran) and each record is applied alone with fresh state, so every event
    counts exactly once."""
    calls: dict[str, int] = {}

    async def write(tx: Transaction, counts: dict[str, int]) -> None:
        await tx.update_one("applied", {"_id": "total"}, inc={"n": sum(counts.values())}, upsert=True)

    async def handler(event: Event, ctx: HandlerContext) -> None:
        assert isinstance(event, ItemSubmitted)
        counts = ctx.shared("test.counts", dict, partial(write, ctx.tx))
        counts[event.text] = counts.get(event.text, 0) + 1
        calls[event.text] = calls.get(event.text, 0) + 1
        if event.text == "flaky" and calls[event.text] == 1:
            raise RuntimeError("first attempt fails")

    await publish(bus, *(submitted(f"item-{i}", text) for i, text in enumerate(["a", "b", "flaky", "c"])))
    running = await run({ITEM_SUBMITTED: handler})
    await running.drained()

    assert calls["flaky"] == 2, "the batch was applied again record by record"
    assert await applied(store) == {"total": 4}


async def test_a_permanent_error_goes_to_the_dead_letter_topic_at_once(
    bus: MemoryBus, store: SqliteStore, run: Run
) -> None:
    def refuse(event: ItemSubmitted, call: int) -> None:
        if event.text == "bad":
            raise PermanentError("labels refer to an unknown class")

    handler = Counting(fail=refuse)
    bad = submitted("item-2", "bad")
    await publish(bus, submitted("item-1", "good-1"), bad, submitted("item-3", "good-2"))
    running = await run({ITEM_SUBMITTED: handler})
    await running.drained()

    (original,) = [r for r in await read_topic(bus, ITEM_SUBMITTED, 3) if r.key == "item-2"]
    (dead,) = await read_topic(bus, DLQ, 1)
    assert (dead.key, dead.value) == (original.key, original.value)
    assert header(dead, "dlq.original_topic") == ITEM_SUBMITTED
    assert header(dead, "dlq.partition") == str(original.partition)
    assert header(dead, "dlq.offset") == str(original.offset)
    assert header(dead, "dlq.error") == "PermanentError: labels refer to an unknown class"
    assert header(dead, "dlq.attempts") == "1"
    assert header(dead, "event_id") == bad.event_id, "the original headers travel along"
    assert handler.calls["bad"] == 1, "a permanent error is not retried"
    assert await applied(store) == {"good-1": 1, "good-2": 1}
    assert dead_lettered(running.consumer.group_id) == 1


async def test_a_handler_that_always_fails_is_dead_lettered_after_max_attempts(
    bus: MemoryBus, store: SqliteStore, run: Run
) -> None:
    def broken(event: ItemSubmitted, call: int) -> None:
        if event.text == "bad":
            raise RuntimeError("the model server keeps timing out")

    handler = Counting(fail=broken)
    retry = RetryPolicy(max_attempts=4, backoff_initial_s=0.001, backoff_max_s=0.002)
    await publish(bus, submitted("item-1", "good-1"), submitted("item-2", "bad"), submitted("item-3", "good-2"))
    running = await run({ITEM_SUBMITTED: handler}, retry=retry)
    await running.drained()

    (dead,) = await read_topic(bus, DLQ, 1)
    assert header(dead, "dlq.attempts") == "4"
    assert header(dead, "dlq.error") == "RuntimeError: the model server keeps timing out"
    assert handler.calls["bad"] == 4, "the handler ran exactly max_attempts times"
    assert await applied(store) == {"good-1": 1, "good-2": 1}


async def test_a_transient_failure_is_retried_then_applied_once(bus: MemoryBus, store: SqliteStore, run: Run) -> None:
    def flaky(event: ItemSubmitted, call: int) -> None:
        if call == 1:
            raise RetriableError("rate limited")

    handler = Counting(fail=flaky)
    await publish(bus, submitted("item-1", "only"))
    running = await run({ITEM_SUBMITTED: handler})
    await running.drained()

    assert handler.calls == {"only": 2}
    assert await applied(store) == {"only": 1}, "the failed attempt's effect was rolled back"
    assert handler.committed == ["only"], "after-commit hooks run for the attempt that committed only"
    assert sum(bus.end_offset(TopicPartition(DLQ, p)) for p in range(PARTITIONS)) == 0, "nothing dead-lettered"


async def test_a_value_that_is_not_a_valid_event_is_dead_lettered(
    bus: MemoryBus, store: SqliteStore, run: Run
) -> None:
    await publish_raw(bus, ITEM_SUBMITTED, "item-1", b"{not json")
    await publish(bus, submitted("item-1", "good"))
    await publish_raw(bus, ITEM_SUBMITTED, "item-1", b'{"event_type": "item.submitted", "item_id": "item-1"}')
    handler = Counting()
    running = await run({ITEM_SUBMITTED: handler})
    await running.drained()

    dead = await read_topic(bus, DLQ, 2)
    assert [d.value for d in dead] == [b"{not json", b'{"event_type": "item.submitted", "item_id": "item-1"}']
    assert all(header(d, "dlq.attempts") == "1" for d in dead)
    assert all("ValidationError" in header(d, "dlq.error") for d in dead)
    assert await applied(store) == {"good": 1}


async def test_healthy_records_beside_a_poison_record_are_applied_in_order(
    bus: MemoryBus, store: SqliteStore, run: Run
) -> None:
    def poison(event: ItemSubmitted, call: int) -> None:
        if event.text == "e4":
            raise PermanentError("poison")

    handler = Counting(fail=poison)
    await publish(bus, *(submitted("one-item", f"e{i}") for i in range(10)))  # one key: one partition, one batch
    running = await run({ITEM_SUBMITTED: handler})
    await running.drained()

    expected = [f"e{i}" for i in range(10) if i != 4]
    assert handler.committed == expected
    assert await applied(store) == dict.fromkeys(expected, 1)
    assert len(await read_topic(bus, DLQ, 1)) == 1


async def test_a_crash_loses_nothing_and_applies_nothing_twice(tmp_path: Path, run: Run) -> None:
    """Offsets are committed only after the effect: kill the process in a handler, then between the store's
    commit and the bus's, restart each time from the files, and every event is applied exactly once."""
    journal, db = tmp_path / "crash-bus.db", tmp_path / "crash-store.db"
    texts = [f"e{i:02d}" for i in range(12)]
    crash_at: set[str] = set()

    def crash_in_handler(event: ItemSubmitted, call: int) -> None:
        if event.text in crash_at:
            crash_at.discard(event.text)
            raise Crash

    handler = Counting(fail=crash_in_handler)

    buses: list[MemoryBus] = []

    async def lifetime(on_commit_crash: str | None = None) -> tuple[Running, MemoryBus, SqliteStore]:
        """A new process: the bus and the store opened from their files."""
        bus, store = MemoryBus(partitions=PARTITIONS, journal=journal), SqliteStore(db)
        buses.append(bus)
        await store.start()

        async def wrapped(event: Event, ctx: HandlerContext) -> None:
            await handler(event, ctx)
            if isinstance(event, ItemSubmitted) and event.text == on_commit_crash:
                ctx.after_commit(_crash)

        running = await run({ITEM_SUBMITTED: wrapped}, max_records=3, on_bus=bus, on_store=store,
                            group="tests.crash")
        return running, bus, store

    producer = MemoryBus(partitions=PARTITIONS, journal=journal)
    await publish(producer, *(submitted("one-item", t) for t in texts))
    await producer.stop()

    # 1. Killed inside the handler of e06: its batch (e06-e08) is rolled back and not committed.
    crash_at.add("e06")
    running, bus, store = await lifetime()
    with pytest.raises(Crash):
        await running.task
    assert sorted(await applied(store)) == texts[:6]
    await store.stop()

    # 2. Killed after the store committed e09-e11 but before the bus committed their offsets.
    running, bus, store = await lifetime(on_commit_crash="e11")
    with pytest.raises(Crash):
        await running.task
    assert await applied(store) == dict.fromkeys(texts, 1)
    assert lag(bus, "tests.crash", [ITEM_SUBMITTED]) == 3
    await store.stop()

    # 3. The last batch comes again; the inbox recognises it.
    running, bus, store = await lifetime()
    await running.drained()
    assert await applied(store) == dict.fromkeys(texts, 1)
    assert handler.calls == {t: (2 if t == "e06" else 1) for t in texts}
    await running.stop()
    await store.stop()
    for bus in buses:  # the killed processes' files stay open until the test ends
        await bus.stop()


def _crash() -> None:
    raise Crash


async def test_the_relay_publishes_what_handlers_emitted_in_order(
    bus: MemoryBus, store: SqliteStore, run: Run
) -> None:
    attempts: dict[str, int] = {}

    async def score(event: Event, ctx: HandlerContext) -> None:
        assert isinstance(event, ItemSubmitted)
        await ctx.emit(LabelScored(
            **event.caused(), producer="tests", task=event.task, routing=event.routing,
            guideline_version=event.guideline_version, submitted_at=event.occurred_at,
            proposal=Proposal(model_id="m", model_version=1, labels=(event.text,), confidence=0.5),
        ))
        attempts[event.text] = attempts.get(event.text, 0) + 1
        if event.text == "t3" and attempts["t3"] == 1:
            raise RetriableError("emitted, then failed: the emitted event must not go out")

    sent = [submitted("one-item", f"t{i}") for i in range(8)] + [submitted("other-item", "u0")]
    await publish(bus, *sent)
    stopping = asyncio.Event()
    relay = asyncio.create_task(OutboxRelay(store, bus, service="tests", idle_s=0.05).run(stopping))
    try:
        running = await run({ITEM_SUBMITTED: score})
        await running.drained()
        records = await read_topic(bus, LABEL_SCORED, len(sent))
    finally:
        stopping.set()
        await relay

    scored = [decode(r.topic, r.value) for r in records]
    assert all(isinstance(e, LabelScored) for e in scored)
    per_item: dict[str, list[str]] = {}
    for event in scored:
        assert isinstance(event, LabelScored)
        per_item.setdefault(event.item_id, []).extend(event.proposal.labels)
    assert per_item == {"one-item": [f"t{i}" for i in range(8)], "other-item": ["u0"]}
    causes = {e.event_id: e for e in sent}
    assert all(e.causation_id in causes and causes[e.causation_id].trace_id == e.trace_id for e in scored)
    assert len({e.event_id for e in scored}) == len(sent)
    assert await store.outbox_pending() == []
