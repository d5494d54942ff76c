"""The consumer through outages of its store and its bus: it backs off and carries on, commits nothing it has
not applied, and dead-letters only events whose handler failed, never the events an outage held up.

The bus outages run against an in-process bus that fails on command and against a real Kafka broker frozen
with SIGSTOP; the store outages against SQLite stopped under the consumer and against a real SecantusDB
server (MongoDB protocol) stopped and started again on the same port and data folder."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, cast

import pytest
from prometheus_client import REGISTRY

from labelgate_core.bus.kafka import CommitTimeoutError, KafkaBus
from labelgate_core.bus.memory import MemoryBus
from labelgate_core.bus.port import Bus, Consumer, OutgoingMessage, Record, TopicPartition
from labelgate_core.consumer import EventConsumer, HandlerContext, RetryPolicy
from labelgate_core.errors import PermanentError, RetriableError
from labelgate_core.events import Event, ItemSubmitted
from labelgate_core.store.mongo import MongoStore
from labelgate_core.store.port import Store, Transaction
from labelgate_core.store.sqlite import SqliteStore
from labelgate_core.testing.servers.kafka import LocalKafkaBroker
from labelgate_core.testing.servers.mongo import LocalSecantusServer, free_port, server_mode
from labelgate_core.topics import ITEM_SUBMITTED, dlq_topic, encode, headers_for

from .helpers import eventually, header, lag, publish, read_topic, submitted

pytestmark = pytest.mark.integration

DLQ = dlq_topic(ITEM_SUBMITTED)
RETRY = RetryPolicy(
    max_attempts=3,
    backoff_initial_s=0.001,
    backoff_max_s=0.005,
    outage_backoff_initial_s=0.05,
    outage_backoff_max_s=0.2,
)


class BusDown(ConnectionError):
    """What the fault-injecting bus raises while it is 'down'."""


@dataclass
class FlakyBus:
    """The in-process bus, failing on command: the operations named in ``down`` raise ``BusDown``."""

    inner: MemoryBus
    down: set[str] = field(default_factory=set)
    failures: dict[str, int] = field(default_factory=dict)

    def check(self, operation: str) -> None:
        if operation in self.down:
            self.failures[operation] = self.failures.get(operation, 0) + 1
            raise BusDown(f"bus unavailable ({operation})")

    async def start(self) -> None:
        await self.inner.start()

    async def stop(self) -> None:
        await self.inner.stop()

    async def ensure_topics(self, topics: Sequence[str]) -> None:
        await self.inner.ensure_topics(topics)

    async def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        self.check("publish")
        await self.inner.publish(messages)

    def consumer(self, group_id: str, topics: Sequence[str]) -> Consumer:
        return FlakyConsumer(self, self.inner.consumer(group_id, topics))

    async def ready(self) -> bool:
        return not self.down


@dataclass
class FlakyConsumer:
    bus: FlakyBus
    inner: Consumer

    async def start(self) -> None:
        self.bus.check("start")
        await self.inner.start()

    async def stop(self) -> None:
        await self.inner.stop()

    async def poll(self, *, max_records: int = 500, timeout_s: float = 1.0) -> list[Record]:
        self.bus.check("poll")
        return await self.inner.poll(max_records=max_records, timeout_s=timeout_s)

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        self.bus.check("commit")
        await self.inner.commit(offsets)

    def assignment(self) -> set[TopicPartition]:
        return self.inner.assignment()

    async def lag(self) -> dict[TopicPartition, int]:
        self.bus.check("lag")
        return await self.inner.lag()


@dataclass
class Counting:
    """Counts each event's effect in the store (not idempotent by itself, so a double apply shows) and refuses
    the event whose text is ``poison`` for good. With a ``gate``, every call waits until the gate opens."""

    calls: dict[str, int] = field(default_factory=dict)
    gate: asyncio.Event | None = None
    entered: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, event: Event, ctx: HandlerContext) -> None:
        assert isinstance(event, ItemSubmitted)
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        self.calls[event.text] = self.calls.get(event.text, 0) + 1
        if event.text == "poison":
            raise PermanentError("this event can never be applied")
        await ctx.tx.update_one("applied", {"_id": event.text}, inc={"n": 1}, upsert=True)


async def applied(store: Store) -> dict[str, int]:
    return {doc["_id"]: doc["n"] for doc in await store.find("applied", {})}


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def outage_pauses(group: str, dependency: str) -> float:
    return metric("labelgate_consumer_outage_pauses_total", group=group, dependency=dependency)


@dataclass
class Running:
    consumer: EventConsumer
    stopping: asyncio.Event
    task: asyncio.Task[None]

    @property
    def group(self) -> str:
        return self.consumer.group_id

    def alive(self) -> None:
        if self.task.done():
            cause = None if self.task.cancelled() else self.task.exception()
            raise AssertionError("the consumer task ended") from cause

    async def stop(self) -> None:
        self.stopping.set()
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(self.task, 30)


class TransactionSource(Protocol):
    def transaction(self) -> contextlib.AbstractAsyncContextManager[Transaction]: ...

    async def ready(self) -> bool: ...


@contextlib.asynccontextmanager
async def consuming(
    bus: Bus, store: TransactionSource, handler: Counting, *, group_prefix: str = "tests.outage"
) -> AsyncIterator[Running]:
    consumer = EventConsumer(
        bus=bus,
        store_transaction=store.transaction,
        group_id=f"{group_prefix}.{uuid.uuid4().hex[:8]}",
        handlers={ITEM_SUBMITTED: handler},
        retry=RETRY,
        poll_timeout_s=0.05,
        store_ready=store.ready,
    )
    stopping = asyncio.Event()
    running = Running(consumer, stopping, asyncio.create_task(consumer.run(stopping)))
    try:
        yield running
    finally:
        await running.stop()


def texts(prefix: str, n: int) -> list[str]:
    return [f"{prefix}-{i}" for i in range(n)]


async def until(condition: Callable[[], bool], what: str, timeout_s: float = 20.0) -> None:
    async def check() -> bool:
        return condition()

    await eventually(check, timeout_s=timeout_s, what=what)


# -- the bus fails -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "failing",
    [
        pytest.param({"start"}, id="joining-the-group"),
        pytest.param({"poll", "lag"}, id="poll"),
        pytest.param({"commit"}, id="commit"),
        pytest.param({"publish"}, id="dead-letter-publish"),
    ],
)
async def test_a_bus_outage_pauses_the_consumer_and_loses_nothing(
    bus: MemoryBus, store: SqliteStore, failing: set[str]
) -> None:
    flaky = FlakyBus(bus, down=set(failing))
    names = texts("item", 30)
    events = [submitted(f"i-{n}", n) for n in names] + [submitted("i-poison", "poison")]
    await publish(bus, *events)
    async with consuming(flaky, store, Counting()) as running:
        await until(lambda: sum(flaky.failures.get(op, 0) for op in failing) >= 3, "the consumer to meet the outage")
        running.alive()
        assert lag(bus, running.group, [ITEM_SUBMITTED]) == len(events), "nothing is committed during the outage"
        dead_so_far = await read_topic(bus, DLQ, int(failing == {"commit"}))
        assert {r.key for r in dead_so_far} <= {"i-poison"}, "an outage dead-letters nothing"

        flaky.down.clear()
        await until(lambda: caught_up(bus, running), "the consumer to catch up after the outage")
        running.alive()

    assert await applied(store) == dict.fromkeys(names, 1), "every event applied exactly once"
    assert outage_pauses(running.group, "bus") >= 1
    dead = await read_topic(bus, DLQ, 1)
    assert dead[0].key == "i-poison", "only the event whose handler failed is dead-lettered, and only once"


def caught_up(bus: MemoryBus, running: Running) -> bool:
    return running.task.done() or lag(bus, running.group, [ITEM_SUBMITTED]) == 0


# -- the store fails ---------------------------------------------------------------------------------------------


async def test_a_stopped_sqlite_store_holds_events_back_instead_of_dead_lettering_them(
    bus: MemoryBus, tmp_path: Path
) -> None:
    store = SqliteStore(tmp_path / "outage.db")
    await store.start()
    before, during = texts("before", 5), texts("during", 10)
    try:
        async with consuming(bus, store, Counting()) as running:
            await publish(bus, *[submitted(f"a-{n}", n) for n in before])
            await until(lambda: caught_up(bus, running), "the first events to be applied")

            await store.stop()  # no transaction can begin now
            await publish(bus, *[submitted(f"b-{n}", n) for n in during], submitted("b-poison", "poison"))
            await until(lambda: outage_pauses(running.group, "store") >= 3, "the consumer to back off")
            running.alive()
            assert lag(bus, running.group, [ITEM_SUBMITTED]) == len(during) + 1, "nothing committed while down"

            await store.start()
            await until(lambda: caught_up(bus, running), "the consumer to catch up once the store is back")
            running.alive()
        assert await applied(store) == dict.fromkeys(before + during, 1)
        assert [r.key for r in await read_topic(bus, DLQ, 1)] == ["b-poison"], "only the failing handler's event"
    finally:
        await store.stop()


@dataclass
class ConflictingStore:
    """A SQLite store whose transactions the 'store' refuses as retriable (as MongoDB refuses a write conflict)
    when they write the ``applied`` collection, while ``conflicting`` is set."""

    inner: SqliteStore
    conflicting: bool = True
    refusals: int = 0

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        async with self.inner.transaction() as tx:
            yield cast(Transaction, _Refusing(tx, self))

    async def ready(self) -> bool:
        return await self.inner.ready()


@dataclass
class _Refusing:
    tx: Transaction
    store: ConflictingStore

    def __getattr__(self, name: str) -> Any:
        return getattr(self.tx, name)

    async def update_one(self, collection: str, filter: Mapping[str, Any], **changes: Any) -> bool:
        if collection == "applied" and self.store.conflicting:
            self.store.refusals += 1
            raise RetriableError("WriteConflict: another transaction holds this document")
        return await self.tx.update_one(collection, filter, **changes)


async def test_a_transaction_the_store_keeps_refusing_is_retried_not_dead_lettered(
    bus: MemoryBus, store: SqliteStore
) -> None:
    """A killed process's open transaction holds its documents for a minute (MongoDB's transaction lifetime):
    the restarted consumer's writes to them conflict until then. That is the store's doing, not the event's:
    it is retried past ``max_attempts`` and applied once the conflict is gone."""
    conflicting = ConflictingStore(store)
    names = texts("held", 5)
    await publish(bus, *[submitted(f"h-{n}", n) for n in names])
    handler = Counting()
    async with consuming(bus, conflicting, handler) as running:
        await until(lambda: conflicting.refusals >= 3 * RETRY.max_attempts, "the store to refuse many times")
        running.alive()
        assert await read_topic(bus, DLQ, 0) == [], "nothing dead-lettered while the store refuses"
        conflicting.conflicting = False
        await until(lambda: caught_up(bus, running), "the consumer to apply everything once the conflict is gone")
    assert await applied(store) == dict.fromkeys(names, 1)
    assert outage_pauses(running.group, "store") >= 1


async def test_a_transaction_refused_for_longer_than_the_patience_is_dead_lettered(
    bus: MemoryBus, store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(RETRY, "conflict_patience_s", 0.3)
    conflicting = ConflictingStore(store)
    await publish(bus, submitted("stuck", "stuck"))
    async with consuming(bus, conflicting, Counting()) as running:
        await until(lambda: caught_up(bus, running), "the consumer to give up on the record")
        running.alive()
    dead = await read_topic(bus, DLQ, 1)
    assert header(dead[0], "dlq.attempts") == str(RETRY.max_attempts)
    assert "WriteConflict" in header(dead[0], "dlq.error")


@pytest.fixture
def secantus_on_disk(tmp_path: Path) -> Iterator[Callable[[], LocalSecantusServer]]:
    """Makes SecantusDB servers that share one port and one data folder, so that a stopped server can be
    started again with everything it had committed."""
    if server_mode() != "local" or os.environ.get("LABELGATE_TEST_MONGO_URL"):
        pytest.skip("needs a local SecantusDB process that the test may stop and start")
    port, data = free_port(), tmp_path / "mongo-data"
    servers: list[LocalSecantusServer] = []

    def make() -> LocalSecantusServer:
        server = LocalSecantusServer(port=port, extra_args=["--storage-path", str(data)])
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.mark.slow
async def test_a_mongo_server_stopped_under_the_consumer_delays_events_and_loses_none(
    bus: MemoryBus, secantus_on_disk: Callable[[], LocalSecantusServer]
) -> None:
    server = secantus_on_disk()
    await asyncio.to_thread(server.start)
    # Short driver timeouts: the consumer learns of the outage in about a second, not the default 30 s.
    store = MongoStore(server.url, "outage", serverSelectionTimeoutMS=300, connectTimeoutMS=300)
    await store.start()
    before, during = texts("before", 5), texts("during", 20)
    try:
        async with consuming(bus, store, Counting()) as running:
            await publish(bus, *[submitted(f"a-{n}", n) for n in before])
            await until(lambda: caught_up(bus, running), "the first events to be applied")

            await asyncio.to_thread(server.stop)
            await publish(bus, *[submitted(f"b-{n}", n) for n in during], submitted("b-poison", "poison"))
            await until(lambda: outage_pauses(running.group, "store") >= 2, "the consumer to back off", timeout_s=60)
            running.alive()
            assert lag(bus, running.group, [ITEM_SUBMITTED]) == len(during) + 1, "nothing committed while down"
            assert await read_topic(bus, DLQ, 0) == [], "an outage dead-letters nothing"

            server = secantus_on_disk()
            await asyncio.to_thread(server.start)
            await until(lambda: caught_up(bus, running), "the consumer to catch up once the server is back", 60)
            running.alive()
        assert await applied(store) == dict.fromkeys(before + during, 1)
        assert [r.key for r in await read_topic(bus, DLQ, 1)] == ["b-poison"], "only the failing handler's event"
    finally:
        await store.stop()


# -- a real Kafka broker stops answering -------------------------------------------------------------------------


@pytest.fixture
def freezable_kafka() -> Iterator[tuple[LocalKafkaBroker, int]]:
    """A Kafka broker of this test's own (it gets frozen with SIGSTOP, which other tests must not see), and
    its process id."""
    if os.environ.get("LABELGATE_TEST_KAFKA_BOOTSTRAP") or server_mode() != "local":
        pytest.skip("needs a local Kafka broker process that the test may freeze")
    broker = LocalKafkaBroker(heap="256m")
    broker.start()
    process = broker._process
    assert process is not None
    try:
        yield broker, process.pid
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGCONT)
        broker.stop()


@pytest.mark.slow
async def test_a_kafka_broker_that_stops_answering_pauses_the_consumer_and_loses_nothing(
    freezable_kafka: tuple[LocalKafkaBroker, int], store: SqliteStore
) -> None:
    broker, pid = freezable_kafka
    bus = KafkaBus(
        broker.bootstrap,
        client_id="outage",
        partitions=2,
        replication_factor=1,
        min_insync_replicas=1,
        request_timeout_ms=1_500,
        session_timeout_ms=6_000,
        heartbeat_interval_ms=1_000,
    )
    await bus.start()
    gate = asyncio.Event()
    handler = Counting(gate=gate)
    before, after = texts("before", 10), texts("after", 10)
    try:
        async with consuming(bus, store, handler) as running:
            await bus.publish([message(submitted(f"a-{n}", n)) for n in before] + [message(submitted("p", "poison"))])
            await until(lambda: handler.entered.is_set(), "a batch in the handler's hands", timeout_s=30)
            # The broker freezes while the batch is in hand: its dead letter, its commit and the lag probes meet
            # a broker that answers nothing until the request timeouts.
            os.kill(pid, signal.SIGSTOP)
            try:
                gate.set()
                await until(
                    lambda: outage_pauses(running.group, "bus") >= 1 or running.task.done(),
                    "the consumer to meet the frozen broker",
                    timeout_s=30,
                )
                await asyncio.sleep(3.0)  # several request timeouts
                running.alive()
            finally:
                os.kill(pid, signal.SIGCONT)
            await bus.publish([message(submitted(f"c-{n}", n)) for n in after])
            await until(
                lambda: set(before + after) <= set(handler.calls) or running.task.done(),
                "the consumer to carry on once the broker answers",
                timeout_s=60,
            )
            running.alive()
        assert await applied(store) == dict.fromkeys(before + after, 1), "every event applied exactly once"
        assert handler.calls.get("poison", 0) >= 1
    finally:
        await bus.stop()
    dead = await read_kafka(broker.bootstrap, DLQ)
    assert {record.key for record in dead} == {"p"}, "the poison event is dead-lettered once the broker is back"


def message(event: ItemSubmitted) -> OutgoingMessage:
    return OutgoingMessage(event.topic, event.key, encode(event), tuple(headers_for(event)))


async def read_kafka(bootstrap: str, topic: str) -> list[Record]:
    """Every record of ``topic`` now, read without a group."""
    reader = KafkaBus(bootstrap, client_id="outage-reader", partitions=2, replication_factor=1, min_insync_replicas=1)
    await reader.start()
    consumer = reader.consumer(f"outage.reader.{uuid.uuid4().hex[:8]}", [topic])
    records: list[Record] = []
    try:
        await consumer.start()
        for _ in range(20):
            records += await consumer.poll(timeout_s=0.25)
    finally:
        await consumer.stop()
        await reader.stop()
    return records


@pytest.mark.slow
async def test_a_commit_to_a_frozen_broker_fails_in_bounded_time_instead_of_hanging(
    freezable_kafka: tuple[LocalKafkaBroker, int],
) -> None:
    broker, pid = freezable_kafka
    bus = KafkaBus(broker.bootstrap, client_id="commit", partitions=1, replication_factor=1, min_insync_replicas=1,
                   request_timeout_ms=1_500, session_timeout_ms=6_000, heartbeat_interval_ms=1_000)
    await bus.start()
    consumer = bus.consumer("outage.commit", [ITEM_SUBMITTED])
    try:
        await bus.publish([message(submitted("a-1", "one"))])
        await consumer.start()
        records: list[Record] = []
        for _ in range(60):
            records += await consumer.poll(timeout_s=0.5)
            if records:
                break
        assert records, "the record is polled"
        os.kill(pid, signal.SIGSTOP)
        try:
            tp = TopicPartition(records[0].topic, records[0].partition)
            # The guard is far above the consumer's own bound (request timeout + 5 s): meeting it would raise
            # TimeoutError instead, as a commit that hangs the way aiokafka's does.
            with pytest.raises(CommitTimeoutError):
                await asyncio.wait_for(consumer.commit({tp: records[0].offset + 1}), 120)
        finally:
            os.kill(pid, signal.SIGCONT)
    finally:
        with contextlib.suppress(Exception):
            await consumer.stop()
        await bus.stop()
