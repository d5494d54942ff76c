# ruff: noqa: S101  (a test suite: its checks are asserts)
"""The bus port's contract: one abstract test suite that every ``Bus`` adapter must pass.

Subclass :class:`BusContract` in a test module and provide one fixture, ``bus_factory``: an async callable that
returns a new, *started* bus. Each call must give a fresh client of the same underlying log (the same broker,
the same journal file): that is how the suite simulates a restarted process (``BusHarness.reopen``). An adapter
whose log lives and dies with the object sets ``durable = False``, and sets its reopen test to ``None`` so it is
not collected.
Topics made by ``ensure_topics`` must have at least two partitions, so that a group has something to split.

Every test uses its own topic and group names (a uuid suffix), so the suite can share one real broker with
other tests, and waits for records in polling loops bounded by a generous ``deadline_s``, because joining a
group on a real broker takes seconds. Nothing is asserted about speed.

The in-process bus (``tests/core/test_bus_memory.py``)::

    class TestMemoryBus(BusContract):
        durable = False

        @pytest.fixture
        def bus_factory(self) -> BusFactory:
            async def open_bus() -> Bus:
                bus = MemoryBus(partitions=4)
                await bus.start()
                return bus

            return open_bus

Kafka, against the session's broker (the ``kafka_bootstrap`` fixture of ``tests/conftest.py``)::

    pytestmark = [pytest.mark.integration, pytest.mark.slow]

    class TestKafkaBus(BusContract):
        @pytest.fixture
        def bus_factory(self, kafka_bootstrap: str) -> BusFactory:
            async def open_bus() -> Bus:
                bus = KafkaBus(kafka_bootstrap, partitions=4, replication_factor=1, min_insync_replicas=1)
                await bus.start()
                return bus

            return open_bus

The subclass inherits the ``contract`` marker; a module-level ``pytestmark`` adds its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import ClassVar

import pytest

from ..bus.port import Bus, Consumer, OutgoingMessage, Record, TopicPartition

BusFactory = Callable[[], Awaitable[Bus]]
"""Returns a new, started client of the bus under test; every call reaches the same log."""


def next_offsets(records: Sequence[Record]) -> dict[TopicPartition, int]:
    """The offsets to commit once ``records`` are processed: per partition, the one after the last record."""
    offsets: dict[TopicPartition, int] = {}
    for record in records:
        offsets[record.tp] = max(offsets.get(record.tp, 0), record.offset + 1)
    return offsets


def message(topic: str, key: str | None, value: str, headers: Sequence[tuple[str, bytes]] = ()) -> OutgoingMessage:
    return OutgoingMessage(topic, key, value.encode(), tuple(headers))


def values(records: Sequence[Record]) -> list[str]:
    return [record.value.decode() for record in records]


class BusHarness:
    """What one test opened: buses, consumers, unique names. ``reopen`` stops the live bus and its consumers
    and opens a new client of the same log, as a restarted process would."""

    def __init__(self, factory: BusFactory, *, deadline_s: float, settle_s: float) -> None:
        self._factory = factory
        self.deadline_s = deadline_s
        self.settle_s = settle_s
        self._suffix = uuid.uuid4().hex[:12]
        self._buses: list[Bus] = []
        self._consumers: list[tuple[Bus, Consumer]] = []
        self.bus: Bus | None = None

    def topic(self, name: str) -> str:
        return f"lgtest.{name}.{self._suffix}"

    def group(self, name: str) -> str:
        return f"lgtest-{name}-{self._suffix}"

    async def open(self) -> Bus:
        self.bus = await self._factory()
        self._buses.append(self.bus)
        return self.bus

    async def reopen(self) -> Bus:
        if self.bus is not None:
            await self._stop_bus(self.bus)
        return await self.open()

    async def consumer(self, group: str, topics: Sequence[str], bus: Bus | None = None) -> Consumer:
        """A started member of ``group``; stopped at the end of the test (or when its bus is reopened)."""
        owner = bus or self.bus
        if owner is None:
            raise RuntimeError("open a bus first")
        consumer = owner.consumer(group, list(topics))
        await consumer.start()
        self._consumers.append((owner, consumer))
        return consumer

    async def stop_consumer(self, consumer: Consumer) -> None:
        self._consumers = [(b, c) for b, c in self._consumers if c is not consumer]
        await consumer.stop()

    async def collect(self, consumer: Consumer, count: int, *, commit: bool = True) -> list[Record]:
        """Poll until ``count`` records arrived (committing each batch unless told not to)."""
        return (await self.collect_all([consumer], count, commit=commit))[0]

    async def collect_all(
        self, consumers: Sequence[Consumer], count: int, *, commit: bool = True
    ) -> list[list[Record]]:
        """Poll several consumers side by side until together they got ``count`` records; per consumer."""
        got: list[list[Record]] = [[] for _ in consumers]
        deadline = time.monotonic() + self.deadline_s
        while sum(len(records) for records in got) < count:
            if time.monotonic() > deadline:
                seen = [values(records) for records in got]
                raise AssertionError(f"expected {count} records within {self.deadline_s}s, got {seen}")
            batches = await asyncio.gather(*(c.poll(max_records=500, timeout_s=0.5) for c in consumers))
            for consumer, batch, records in zip(consumers, batches, got, strict=True):
                records.extend(batch)
                if commit and batch:
                    await consumer.commit(next_offsets(batch))
        return got

    async def quiet(self, consumer: Consumer) -> list[Record]:
        """Whatever arrives within ``settle_s``: for checking that nothing more is delivered."""
        return await consumer.poll(max_records=500, timeout_s=self.settle_s)

    async def until_assigned(self, consumers: Sequence[Consumer]) -> None:
        """Poll until every member holds partitions and no two hold the same one (the group settled)."""
        deadline = time.monotonic() + self.deadline_s
        while True:
            assignments = [c.assignment() for c in consumers]
            union = set().union(*assignments)
            if all(assignments) and len(union) == sum(len(a) for a in assignments):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"the group did not settle within {self.deadline_s}s: {assignments}")
            batches = await asyncio.gather(*(c.poll(timeout_s=0.5) for c in consumers))
            assert not any(batches), "records arrived before any were published"

    async def _stop_bus(self, bus: Bus) -> None:
        for owner, consumer in list(self._consumers):
            if owner is bus:
                await self.stop_consumer(consumer)
        self._buses.remove(bus)
        await bus.stop()
        if self.bus is bus:
            self.bus = None

    async def close(self) -> None:
        for _, consumer in self._consumers:
            with contextlib.suppress(Exception):
                await consumer.stop()
        self._consumers = []
        for bus in self._buses:
            with contextlib.suppress(Exception):
                await bus.stop()
        self._buses = []


class BusContract:
    """What every bus adapter promises (Kafka's model): keyed order, groups, committed offsets, redelivery."""

    pytestmark: ClassVar[list[pytest.MarkDecorator]] = [pytest.mark.contract]

    durable: ClassVar[bool] = True
    """Whether a new client from ``bus_factory`` sees the log and offsets an earlier one left."""
    deadline_s: ClassVar[float] = 60.0
    """Upper bound on any wait for records or a group to settle."""
    settle_s: ClassVar[float] = 2.0
    """How long a consumer must stay empty for the suite to conclude that nothing more is coming."""

    @pytest.fixture
    def bus_factory(self) -> BusFactory:
        raise NotImplementedError("a BusContract subclass provides the bus_factory fixture")

    @pytest.fixture
    async def harness(self, bus_factory: BusFactory) -> AsyncIterator[BusHarness]:
        harness = BusHarness(bus_factory, deadline_s=self.deadline_s, settle_s=self.settle_s)
        await harness.open()
        try:
            yield harness
        finally:
            await harness.close()

    @pytest.fixture
    def bus(self, harness: BusHarness) -> Bus:
        assert harness.bus is not None
        return harness.bus

    # -- publish and poll ----------------------------------------------------------------------------------

    async def test_a_record_keeps_its_key_value_and_headers(self, harness: BusHarness, bus: Bus) -> None:
        topic = harness.topic("roundtrip")
        await bus.ensure_topics([topic])
        headers = (("event_type", b"item.submitted"), ("raw", b"\x00\xff\x10"), ("event_type", b"again"))
        await bus.publish([
            OutgoingMessage(topic, "item-1", b'{"text": "caf\xc3\xa9"}', headers),
            OutgoingMessage(topic, None, b"without a key"),
        ])

        consumer = await harness.consumer(harness.group("roundtrip"), [topic])
        records = {r.value: r for r in await harness.collect(consumer, 2)}

        keyed = records[b'{"text": "caf\xc3\xa9"}']
        assert (keyed.topic, keyed.key, tuple(keyed.headers)) == (topic, "item-1", headers)
        unkeyed = records[b"without a key"]
        assert (unkeyed.key, tuple(unkeyed.headers)) == (None, ())
        for record in records.values():
            assert record.offset >= 0
            assert abs(record.timestamp_ms / 1000 - time.time()) < 3600, "timestamps are epoch milliseconds"

    async def test_records_with_one_key_keep_their_order(self, harness: BusHarness, bus: Bus) -> None:
        topic = harness.topic("order")
        await bus.ensure_topics([topic])
        keys = [f"item-{k}" for k in range(6)]
        for batch in range(4):  # several publishes, keys interleaved inside each
            await bus.publish([message(topic, key, f"{key}/{batch * 5 + i}") for i in range(5) for key in keys])

        consumer = await harness.consumer(harness.group("order"), [topic])
        records = await harness.collect(consumer, len(keys) * 20)

        per_key: dict[str | None, list[str]] = defaultdict(list)
        partitions: dict[str | None, set[int]] = defaultdict(set)
        last_offset: dict[TopicPartition, int] = {}
        for record in records:
            per_key[record.key].append(record.value.decode())
            partitions[record.key].add(record.partition)
            assert record.offset > last_offset.get(record.tp, -1), "offsets grow within a partition"
            last_offset[record.tp] = record.offset
        assert per_key == {key: [f"{key}/{i}" for i in range(20)] for key in keys}
        assert all(len(p) == 1 for p in partitions.values()), "one key always lands in one partition"

    async def test_poll_returns_nothing_when_nothing_was_published(self, harness: BusHarness, bus: Bus) -> None:
        topic = harness.topic("empty")
        await bus.ensure_topics([topic])
        consumer = await harness.consumer(harness.group("empty"), [topic])
        assert await harness.quiet(consumer) == []

    # -- groups --------------------------------------------------------------------------------------------

    async def test_a_new_group_reads_the_log_from_the_beginning(self, harness: BusHarness, bus: Bus) -> None:
        topic = harness.topic("history")
        await bus.ensure_topics([topic])
        await bus.publish([message(topic, f"k{i % 3}", f"v{i}") for i in range(9)])

        consumer = await harness.consumer(harness.group("late"), [topic])
        records = await harness.collect(consumer, 9)

        assert sorted(values(records)) == sorted(f"v{i}" for i in range(9))

    async def test_every_group_gets_every_record(self, harness: BusHarness, bus: Bus) -> None:
        topic = harness.topic("fanout")
        await bus.ensure_topics([topic])
        sent = [f"v{i}" for i in range(30)]
        await bus.publish([message(topic, f"k{i % 7}", v) for i, v in enumerate(sent)])

        first = await harness.consumer(harness.group("first"), [topic])
        second = await harness.consumer(harness.group("second"), [topic])
        got_first = await harness.collect(first, len(sent))
        got_second = await harness.collect(second, len(sent))

        assert sorted(values(got_first)) == sorted(sent)
        assert sorted(values(got_second)) == sorted(sent)
        assert await harness.quiet(first) == []

    async def test_members_of_one_group_split_the_partitions(self, harness: BusHarness, bus: Bus) -> None:
        topic = harness.topic("split")
        await bus.ensure_topics([topic])
        group = harness.group("workers")
        one = await harness.consumer(group, [topic])
        two = await harness.consumer(group, [topic])
        await harness.until_assigned([one, two])

        sent = [f"v{i}" for i in range(40)]
        await bus.publish([message(topic, f"key-{i}", v) for i, v in enumerate(sent)])
        got_one, got_two = await harness.collect_all([one, two], len(sent))

        assert got_one, "both members got a share of the records"
        assert got_two, "both members got a share of the records"
        assert sorted(values(got_one) + values(got_two)) == sorted(sent), "every record exactly once"
        assert {r.partition for r in got_one}.isdisjoint({r.partition for r in got_two})
        assert await harness.quiet(one) == []
        assert await harness.quiet(two) == []

    async def test_a_member_that_leaves_hands_its_partitions_over(self, harness: BusHarness, bus: Bus) -> None:
        topic = harness.topic("handover")
        await bus.ensure_topics([topic])
        group = harness.group("workers")
        one = await harness.consumer(group, [topic])
        two = await harness.consumer(group, [topic])
        await harness.until_assigned([one, two])
        await bus.publish([message(topic, f"key-{i}", f"before-{i}") for i in range(20)])
        await harness.collect_all([one, two], 20)

        await harness.stop_consumer(two)
        after = [f"after-{i}" for i in range(20)]
        await bus.publish([message(topic, f"key-{i}", v) for i, v in enumerate(after)])

        # Everything before was committed: the survivor gets only the new records, from every partition.
        assert sorted(values(await harness.collect(one, len(after)))) == sorted(after)
        assert await harness.quiet(one) == []

    # -- offsets -------------------------------------------------------------------------------------------

    async def test_a_restarted_consumer_resumes_after_its_last_commit(self, harness: BusHarness, bus: Bus) -> None:
        topic = harness.topic("resume")
        await bus.ensure_topics([topic])
        group = harness.group("resume")
        await bus.publish([message(topic, "one-key", f"v{i}") for i in range(10)])
        consumer = await harness.consumer(group, [topic])
        assert values(await harness.collect(consumer, 10)) == [f"v{i}" for i in range(10)]
        await harness.stop_consumer(consumer)

        await bus.publish([message(topic, "one-key", "v10"), message(topic, "one-key", "v11")])
        restarted = await harness.consumer(group, [topic])

        assert values(await harness.collect(restarted, 2)) == ["v10", "v11"]
        assert await harness.quiet(restarted) == []

    async def test_records_polled_but_not_committed_are_delivered_again(
        self, harness: BusHarness, bus: Bus
    ) -> None:
        topic = harness.topic("redeliver")
        await bus.ensure_topics([topic])
        group = harness.group("redeliver")
        await bus.publish([message(topic, "one-key", f"v{i}") for i in range(10)])
        consumer = await harness.consumer(group, [topic])
        records = await harness.collect(consumer, 10, commit=False)
        await consumer.commit(next_offsets(records[:4]))  # processed four, then the process stopped
        await harness.stop_consumer(consumer)

        restarted = await harness.consumer(group, [topic])

        assert values(await harness.collect(restarted, 6)) == [f"v{i}" for i in range(4, 10)]
        assert await harness.quiet(restarted) == []

    async def test_lag_is_end_offset_minus_committed_offset(self, harness: BusHarness, bus: Bus) -> None:
        topic = harness.topic("lag")
        await bus.ensure_topics([topic])
        await bus.publish([message(topic, "one-key", f"v{i}") for i in range(6)])
        consumer = await harness.consumer(harness.group("lag"), [topic])
        records = await harness.collect(consumer, 6, commit=False)
        tp = records[0].tp

        lag = await consumer.lag()
        assert lag[tp] == 6, "nothing committed yet: the whole partition is lag"
        assert set(lag) == consumer.assignment()
        assert sum(lag.values()) == 6

        await consumer.commit(next_offsets(records[:2]))
        assert (await consumer.lag())[tp] == 4

        await consumer.commit(next_offsets(records))
        assert sum((await consumer.lag()).values()) == 0

    async def test_ensure_topics_is_idempotent(self, harness: BusHarness, bus: Bus) -> None:
        topic, other = harness.topic("ensure"), harness.topic("ensure-other")
        await bus.ensure_topics([topic])
        await bus.publish([message(topic, f"k{i}", f"before-{i}") for i in range(8)])

        await bus.ensure_topics([topic])
        await bus.ensure_topics([topic, other, topic])
        await bus.publish([message(topic, f"k{i}", f"after-{i}") for i in range(8)])

        consumer = await harness.consumer(harness.group("ensure"), [topic])
        records = await harness.collect(consumer, 16)
        assert sorted(values(records)) == sorted([f"before-{i}" for i in range(8)] + [f"after-{i}" for i in range(8)])
        partition_of: dict[str | None, set[int]] = defaultdict(set)
        for record in records:
            partition_of[record.key].add(record.partition)
        assert all(len(p) == 1 for p in partition_of.values()), "the partition count did not change"

    # -- a restarted process -------------------------------------------------------------------------------

    async def test_log_and_committed_offsets_survive_a_reopen(self, harness: BusHarness, bus: Bus) -> None:
        topic = harness.topic("durable")
        group = harness.group("durable")
        await bus.ensure_topics([topic])
        await bus.publish([message(topic, "one-key", f"v{i}", [("n", str(i).encode())]) for i in range(5)])
        consumer = await harness.consumer(group, [topic])
        records = await harness.collect(consumer, 5, commit=False)
        await consumer.commit(next_offsets(records[:3]))

        bus = await harness.reopen()
        await bus.ensure_topics([topic])

        resumed = await harness.consumer(group, [topic])
        again = await harness.collect(resumed, 2)
        assert values(again) == ["v3", "v4"]
        assert [(r.offset, tuple(r.headers)) for r in again] == [
            (r.offset, tuple(r.headers)) for r in records[3:]
        ]

        await bus.publish([message(topic, "one-key", "v5")])
        (newest,) = await harness.collect(resumed, 1)
        assert newest.offset == records[-1].offset + 1, "offsets continue after a reopen"

        fresh = await harness.consumer(harness.group("fresh"), [topic])
        assert values(await harness.collect(fresh, 6)) == [f"v{i}" for i in range(6)]
