"""The Kafka bus against a real Apache Kafka broker (KRaft, started once per session): the bus contract, plus
what only Kafka has (topic creation with partitions, replication and min.insync.replicas; rebalances)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient  # type: ignore[import-untyped]
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType  # type: ignore[import-untyped]

from labelgate_core.adapters import make_bus
from labelgate_core.bus.kafka import KafkaBus, TopicCreationError
from labelgate_core.bus.port import Bus, CommitFailedError, Consumer, OutgoingMessage, Record, TopicPartition
from labelgate_core.consumer import EventConsumer, HandlerContext
from labelgate_core.events import Event
from labelgate_core.settings import CoreSettings
from labelgate_core.store.sqlite import SqliteStore
from labelgate_core.testing.bus_contract import BusContract, BusFactory, next_offsets
from labelgate_core.topics import ITEM_SUBMITTED, dlq_topic

pytestmark = pytest.mark.contract

PARTITIONS = 3


def kafka_bus(
    bootstrap: str, *, partitions: int = PARTITIONS, replication_factor: int = 1, min_insync_replicas: int = 1
) -> KafkaBus:
    """A bus for a one-broker cluster, with short group timeouts so that rebalances take well under a second
    (the test broker accepts sessions down to 500 ms)."""
    return KafkaBus(
        bootstrap,
        client_id="labelgate-tests",
        partitions=partitions,
        replication_factor=replication_factor,
        min_insync_replicas=min_insync_replicas,
        request_timeout_ms=15_000,
        session_timeout_ms=3_000,
        heartbeat_interval_ms=250,
        ready_timeout_s=2.0,
    )


class TestKafkaBus(BusContract):
    deadline_s = 30.0
    settle_s = 1.0

    @pytest.fixture
    def bus_factory(self, kafka_bootstrap: str) -> BusFactory:
        async def open_bus() -> Bus:
            bus = kafka_bus(kafka_bootstrap, partitions=4)
            await bus.start()
            return bus

        return open_bus


@pytest.fixture
async def bus(kafka_bootstrap: str) -> AsyncIterator[KafkaBus]:
    bus = kafka_bus(kafka_bootstrap)
    await bus.start()
    yield bus
    await bus.stop()


def fresh(name: str) -> str:
    """A topic name no other test uses (the broker lives for the whole session)."""
    return f"test.{name}.{uuid.uuid4().hex[:10]}.v1"


async def poll_until(consumer: Consumer, count: int, *, rounds: int = 40) -> list[Record]:
    records: list[Record] = []
    for _ in range(rounds):
        records.extend(await consumer.poll(max_records=500, timeout_s=0.5))
        if len(records) >= count:
            break
    return records


async def test_ensure_topics_creates_topics_with_the_configured_partitions_and_min_insync(
    bus: KafkaBus, kafka_bootstrap: str
) -> None:
    topic = fresh("created")
    await bus.ensure_topics([topic, topic])
    await bus.ensure_topics([topic])  # already there: nothing to do, no error

    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
        configs = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    finally:
        await admin.close()
    assert described["error_code"] == 0
    assert len(described["partitions"]) == PARTITIONS
    assert all(len(partition["replicas"]) == 1 for partition in described["partitions"])
    entries = {entry[0]: entry[1] for entry in configs[0].resources[0][4]}
    assert entries["min.insync.replicas"] == "1"


async def test_a_topic_created_by_another_client_meanwhile_is_fine(kafka_bootstrap: str) -> None:
    topic = fresh("race")
    first, second = kafka_bus(kafka_bootstrap), kafka_bus(kafka_bootstrap)
    await first.start()
    await second.start()
    try:
        await first.ensure_topics([topic])
        await second.ensure_topics([topic])
        await second.publish([OutgoingMessage(topic, "k", b"v")])
    finally:
        await first.stop()
        await second.stop()


async def test_a_replication_factor_larger_than_the_cluster_is_refused_clearly(kafka_bootstrap: str) -> None:
    bus = kafka_bus(kafka_bootstrap, replication_factor=3, min_insync_replicas=2)
    await bus.start()
    try:
        with pytest.raises(TopicCreationError, match="replication factor 3"):
            await bus.ensure_topics([fresh("rf3")])
    finally:
        await bus.stop()


async def test_publish_creates_a_dlq_topic_on_first_use_and_keeps_key_headers_and_order(bus: KafkaBus) -> None:
    topic = dlq_topic(fresh("item.submitted"))
    assert topic.endswith(".v1.dlq")
    headers = (("dlq.original_topic", ITEM_SUBMITTED.encode()), ("dlq.attempts", b"3"))
    await bus.publish([OutgoingMessage(topic, "item-1", f"v{i}".encode(), headers) for i in range(20)])

    consumer = bus.consumer(fresh("dlq-readers"), [topic])
    await consumer.start()
    try:
        records = await poll_until(consumer, 20)
    finally:
        await consumer.stop()
    assert [record.value for record in records] == [f"v{i}".encode() for i in range(20)]
    assert {record.key for record in records} == {"item-1"}
    assert {record.partition for record in records} == {records[0].partition}
    assert all(record.headers == headers for record in records)
    assert [record.offset for record in records] == list(range(20))


@pytest.mark.integration
async def test_the_consumer_runner_dead_letters_an_unreadable_record_and_moves_on(
    bus: KafkaBus, tmp_path: Path
) -> None:
    topic = fresh("unreadable")
    await bus.publish([OutgoingMessage(topic, "item-9", b"not an event", (("trace_id", b"t-1"),))])
    store = SqliteStore(tmp_path / "service.db")
    await store.start()

    async def never_called(event: Event, ctx: HandlerContext) -> None:
        raise AssertionError("an undecodable record reached its handler")

    runner = EventConsumer(bus, store.transaction, fresh("service.readers"), {topic: never_called})
    stopping = asyncio.Event()
    running = asyncio.create_task(runner.run(stopping))
    dead = bus.consumer(fresh("dlq.readers"), [dlq_topic(topic)])
    try:
        await dead.start()
        (letter,) = await poll_until(dead, 1)
        assert (letter.topic, letter.key, letter.value) == (dlq_topic(topic), "item-9", b"not an event")
        headers = dict(letter.headers)
        assert headers["trace_id"] == b"t-1"
        assert headers["dlq.original_topic"] == topic.encode()
        assert headers["dlq.offset"] == b"0"
        assert int(headers["dlq.partition"]) in range(PARTITIONS)

        # The runner committed past the bad record: a new member of its group starts after it.
        stopping.set()
        await running
        again = bus.consumer(runner.group_id, [topic])
        await again.start()
        assert await again.poll(timeout_s=1.0) == []
        await again.stop()
    finally:
        stopping.set()
        await running
        await dead.stop()
        await store.stop()


async def test_a_commit_after_the_partitions_moved_to_another_member_is_refused(bus: KafkaBus) -> None:
    topic, group = fresh("rebalance"), fresh("workers")
    everything = {TopicPartition(topic, p) for p in range(PARTITIONS)}
    await bus.publish([OutgoingMessage(topic, f"item-{i}", f"v{i}".encode()) for i in range(30)])

    first = bus.consumer(group, [topic])
    await first.start()
    second = bus.consumer(group, [topic])
    try:
        polled = await poll_until(first, 30)
        assert len(polled) == 30
        assert first.assignment() == everything

        await second.start()  # the group rebalances while the first member is "processing" its batch
        redelivered: list[Record] = []
        for _ in range(40):
            mine, theirs = first.assignment(), second.assignment()
            if mine and theirs and mine.isdisjoint(theirs) and mine | theirs == everything:
                break
            redelivered += await second.poll(timeout_s=0.25)
            await first.poll(timeout_s=0.25)
        else:
            pytest.fail(f"the group did not settle: {first.assignment()} / {second.assignment()}")

        with pytest.raises(CommitFailedError):
            await first.commit(next_offsets(polled))

        # Nothing was committed: the second member gets every record of the partitions it took over.
        taken = {(r.partition, r.value) for r in polled if r.tp in second.assignment()}
        redelivered += await poll_until(second, len(taken) - len(redelivered), rounds=10)
        assert {(r.partition, r.value) for r in redelivered} == taken
        await second.commit(next_offsets(redelivered))
    finally:
        await second.stop()
        await first.stop()


async def test_ready_says_whether_the_cluster_answers(bus: KafkaBus) -> None:
    assert await bus.ready()
    assert not await kafka_bus("127.0.0.1:1").ready()  # never started


def test_min_insync_replicas_above_the_replication_factor_is_refused() -> None:
    with pytest.raises(ValueError, match="min_insync_replicas"):
        KafkaBus("127.0.0.1:9092", replication_factor=1, min_insync_replicas=2)


def test_settings_select_the_kafka_bus() -> None:
    settings = CoreSettings(
        bus="kafka",
        kafka_bootstrap_servers="broker-1:9092,broker-2:9092",
        kafka_topic_partitions=8,
        kafka_client_id="router",
    )
    bus = make_bus(settings)
    assert isinstance(bus, KafkaBus)
    assert bus.bootstrap_servers == "broker-1:9092,broker-2:9092"
    assert (bus.partitions, bus.replication_factor, bus.min_insync_replicas) == (8, 3, 2)
    assert bus.client_id == "router"
