"""Poison messages on a real Kafka broker: a record that is not an event, an event whose handler fails every time
and one it rejects as permanently wrong each land once in ``<topic>.dlq``, with headers saying where they came
from and why, while the healthy events around them keep flowing and are each applied exactly once."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer  # type: ignore[import-untyped]
from aiokafka import TopicPartition as KafkaTopicPartition
from aiokafka.admin import AIOKafkaAdminClient  # type: ignore[import-untyped]

from labelgate_core.bus.kafka import KafkaBus
from labelgate_core.bus.port import OutgoingMessage, Record
from labelgate_core.consumer import EventConsumer, HandlerContext, RetryPolicy
from labelgate_core.errors import PermanentError
from labelgate_core.events import Event, ItemSubmitted, LabelDef, RoutingPolicy, TaskSpec
from labelgate_core.store.sqlite import SqliteStore
from labelgate_core.topics import ITEM_SUBMITTED, dlq_topic, encode, headers_for

pytestmark = [pytest.mark.chaos, pytest.mark.slow]

TOPIC = ITEM_SUBMITTED
DLQ = dlq_topic(TOPIC)
MAX_ATTEMPTS = 3  # LABELGATE_CONSUMER_MAX_ATTEMPTS' default
BATCHES, PER_BATCH = 12, 10
TASK = TaskSpec(labels=(LabelDef(name="spam"), LabelDef(name="ham")))


@dataclass(frozen=True)
class Run:
    """Names of one test run. The broker lives for the whole session and these are the real topics: the run's
    group starts at their end offsets (what earlier tests left there is not its business), and its keys and
    project id are its own (later tests start past what it leaves, likewise)."""

    id: str

    @property
    def project(self) -> str:
        return f"chaos-{self.id}"

    @property
    def group(self) -> str:
        return f"tests.poison.{self.id}"

    def item(self, name: str) -> str:
        return f"{self.id}-{name}"

    def owns(self, record: Record) -> bool:
        return (record.key or "").startswith(f"{self.id}-")


def event(run: Run, name: str, **metadata: str) -> ItemSubmitted:
    return ItemSubmitted(
        producer="tests", project_id=run.project, item_id=run.item(name), text=f"text of {name}",
        metadata=dict(metadata), task=TASK, routing=RoutingPolicy(), guideline_version=1,
    )  # fmt: skip


def message(e: Event) -> OutgoingMessage:
    return OutgoingMessage(e.topic, e.key, encode(e), tuple(headers_for(e)))


class Labeler:
    """Stands in for a service's handler: labels an item (one store write per event), except the items the test
    poisoned, which make it crash every time or reject them as permanently wrong."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.calls: Counter[str] = Counter()

    async def __call__(self, e: Event, ctx: HandlerContext) -> None:
        assert isinstance(e, ItemSubmitted)
        if e.project_id != self.run.project:
            return
        self.calls[e.item_id] += 1
        if e.metadata.get("poison") == "crash":
            raise RuntimeError(f"the labeler cannot label {e.item_id}")
        if e.metadata.get("poison") == "reject":
            raise PermanentError(f"{e.item_id} asks for a label the task does not have")
        await ctx.tx.update_one("labeled", {"_id": e.item_id}, inc={"n": 1}, upsert=True)


async def partitions_of(bootstrap: str, topic: str) -> list[KafkaTopicPartition]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return [
        KafkaTopicPartition(topic, p["partition"])
        for p in sorted(described["partitions"], key=lambda p: p["partition"])
    ]


async def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    partitions = await partitions_of(bootstrap, topic)
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await reader.start()
    try:
        ends = await reader.end_offsets(partitions)
    finally:
        await reader.stop()
    return {tp.partition: int(offset) for tp, offset in ends.items()}


async def start_group_at(bootstrap: str, group: str, topic: str, offsets: dict[int, int]) -> None:
    """Commit ``offsets`` for a new group, so that it skips what earlier tests left on the shared topic."""
    client = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await client.start()
    try:
        client.assign([KafkaTopicPartition(topic, p) for p in offsets])
        await client.commit({KafkaTopicPartition(topic, p): offset for p, offset in offsets.items()})
    finally:
        await client.stop()


async def committed(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        found = await admin.list_consumer_group_offsets(group)
        return {tp.partition: int(meta.offset) for tp, meta in found.items() if tp.topic == topic}
    finally:
        await admin.close()


async def record_at(bootstrap: str, topic: str, partition: int, offset: int) -> Record:
    """The record at ``offset`` of ``partition``, read directly (no group)."""
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await reader.start()
    try:
        tp = KafkaTopicPartition(topic, partition)
        reader.assign([tp])
        reader.seek(tp, offset)
        found = await asyncio.wait_for(reader.getone(tp), 15)
        return Record(
            topic=found.topic, partition=found.partition, offset=found.offset,
            key=None if found.key is None else found.key.decode(), value=bytes(found.value),
            headers=tuple((k, bytes(v)) for k, v in found.headers or ()),
        )  # fmt: skip
    finally:
        await reader.stop()


@pytest.fixture
async def bus(kafka_bootstrap: str) -> AsyncIterator[KafkaBus]:
    bus = KafkaBus(
        kafka_bootstrap, client_id="labelgate-chaos-tests", partitions=3, replication_factor=1,
        min_insync_replicas=1, request_timeout_ms=15_000, session_timeout_ms=6_000, heartbeat_interval_ms=500,
        ready_timeout_s=2.0,
    )  # fmt: skip
    await bus.start()
    await bus.ensure_topics([TOPIC, DLQ])
    yield bus
    await bus.stop()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(tmp_path / "labeler.db")
    await store.start()
    yield store
    await store.stop()


async def dead_letters(bus: KafkaBus, run: Run, count: int, *, timeout_s: float) -> list[Record]:
    """This run's records on the DLQ topic, once there are ``count`` (and a moment more, to see any extra)."""
    reader = bus.consumer(f"tests.dlq-reader.{run.id}", [DLQ])
    await reader.start()
    letters: list[Record] = []
    try:
        deadline = time.monotonic() + timeout_s
        while len(letters) < count and time.monotonic() < deadline:
            letters += [r for r in await reader.poll(timeout_s=0.5) if run.owns(r)]
        letters += [r for r in await reader.poll(timeout_s=1.0) if run.owns(r)]
    finally:
        await reader.stop()
    return letters


async def test_poison_messages_go_to_the_dead_letter_topic_while_healthy_events_flow(
    kafka_bootstrap: str, bus: KafkaBus, store: SqliteStore
) -> None:
    run = Run(uuid.uuid4().hex[:10])
    await start_group_at(kafka_bootstrap, run.group, TOPIC, await end_offsets(kafka_bootstrap, TOPIC))
    labeler = Labeler(run)
    consumer = EventConsumer(
        bus, store.transaction, run.group, {TOPIC: labeler},
        retry=RetryPolicy(max_attempts=MAX_ATTEMPTS, backoff_initial_s=0.01, backoff_max_s=0.1), max_records=50,
    )  # fmt: skip
    stopping = asyncio.Event()
    consuming = asyncio.create_task(consumer.run(stopping))

    garbled = run.item("garbled")
    # Looks like an event of the topic, but lacks what the schema requires: it cannot be read.
    garbled_value = b'{"event_type": "item.submitted", "project_id": "%s", "item_id": "%s"}' % (
        run.project.encode(),
        garbled.encode(),
    )
    crashing, rejected = event(run, "crashing", poison="crash"), event(run, "rejected", poison="reject")
    healthy = [event(run, f"ok-{batch}-{i}") for batch in range(BATCHES) for i in range(PER_BATCH)]
    try:
        for batch in range(BATCHES):
            await bus.publish([message(e) for e in healthy[batch * PER_BATCH : (batch + 1) * PER_BATCH]])
            if batch == 3:
                await bus.publish([OutgoingMessage(TOPIC, garbled, garbled_value, (("trace_id", b"trace-g"),))])
            if batch == 6:
                await bus.publish([message(crashing)])
            if batch == 8:
                await bus.publish([message(rejected)])
            await asyncio.sleep(0.05)  # traffic keeps arriving while the consumer works on the poison

        letters = await dead_letters(bus, run, 3, timeout_s=60)
        deadline = time.monotonic() + 30
        while await store.count("labeled", {}) < len(healthy) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
    finally:
        stopping.set()
        await asyncio.wait([consuming], timeout=30)
        if not consuming.done():
            consuming.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await consuming
    assert not consuming.cancelled(), "the consumer did not stop within 30 s of being asked to"
    assert consuming.exception() is None, f"the consumer died: {consuming.exception()!r}"

    # Every healthy event was applied, once, though poison sat among them in the same partitions.
    labeled = {doc["_id"]: doc["n"] for doc in await store.find("labeled", {})}
    assert labeled == {e.item_id: 1 for e in healthy}

    # Each poison message is in the DLQ exactly once, unchanged, and says where it came from and why.
    by_key = {letter.key: letter for letter in letters}
    assert sorted(letter.key or "" for letter in letters) == sorted([garbled, crashing.item_id, rejected.item_id])

    expectations = {
        garbled: ("ValidationError", 1, garbled_value),
        crashing.item_id: (
            f"RuntimeError: the labeler cannot label {crashing.item_id}",
            MAX_ATTEMPTS,
            encode(crashing),
        ),
        rejected.item_id: ("PermanentError: ", 1, encode(rejected)),
    }
    for key, (error, attempts, value) in expectations.items():
        letter = by_key[key]
        headers = dict(letter.headers)
        assert letter.topic == DLQ
        assert letter.value == value
        assert headers["dlq.original_topic"] == TOPIC.encode()
        assert headers["dlq.error"].decode().startswith(error), headers["dlq.error"]
        assert int(headers["dlq.attempts"]) == attempts <= MAX_ATTEMPTS
        assert headers["dlq.group"] == run.group.encode()
        # dlq.partition and dlq.offset point at the very record that was dead-lettered.
        original = await record_at(kafka_bootstrap, TOPIC, int(headers["dlq.partition"]), int(headers["dlq.offset"]))
        assert (original.key, original.value) == (key, value)
        # The original headers travel along (the trace id above all, to find the item's journey).
        for name, original_value in original.headers:
            assert headers[name] == original_value

    # The handler ran as often as the attempts say: retried up to the limit, or not at all when permanent.
    assert labeler.calls[crashing.item_id] == MAX_ATTEMPTS
    assert labeler.calls[rejected.item_id] == 1

    # Nothing is left to redeliver: the group committed past the poison, to the end of every partition.
    assert await committed(kafka_bootstrap, run.group, TOPIC) == await end_offsets(kafka_bootstrap, TOPIC)
