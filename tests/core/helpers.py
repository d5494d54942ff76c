"""Helpers shared by the core's tests: events to publish, reading a topic back, waiting for a condition."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence

from labelgate_core.bus.memory import MemoryBus
from labelgate_core.bus.port import OutgoingMessage, Record, TopicPartition
from labelgate_core.consumer import RetryPolicy
from labelgate_core.events import Event, ItemSubmitted, LabelDef, RoutingPolicy, TaskSpec
from labelgate_core.topics import encode, headers_for

PARTITIONS = 4
FAST_RETRY = RetryPolicy(max_attempts=3, backoff_initial_s=0.001, backoff_max_s=0.005)
TASK = TaskSpec(labels=(LabelDef(name="spam"), LabelDef(name="ham")))


def submitted(item_id: str, text: str = "hello", project_id: str = "proj-1") -> ItemSubmitted:
    return ItemSubmitted(
        producer="tests", project_id=project_id, item_id=item_id, text=text, task=TASK,
        routing=RoutingPolicy(), guideline_version=1,
    )


async def publish(bus: MemoryBus, *events: Event) -> None:
    await bus.publish([OutgoingMessage(e.topic, e.key, encode(e), tuple(headers_for(e))) for e in events])


async def publish_raw(bus: MemoryBus, topic: str, key: str, *values: bytes) -> None:
    await bus.publish([OutgoingMessage(topic, key, value) for value in values])


async def read_topic(bus: MemoryBus, topic: str, count: int, *, timeout_s: float = 10.0) -> list[Record]:
    """Every record of ``topic`` (there must be exactly ``count``), read by a group of its own."""
    consumer = bus.consumer(f"tests.reader.{uuid.uuid4().hex[:8]}", [topic])
    await consumer.start()
    records: list[Record] = []
    try:
        deadline = time.monotonic() + timeout_s
        while len(records) < count and time.monotonic() < deadline:
            records += await consumer.poll(timeout_s=0.1)
        records += await consumer.poll(timeout_s=0.05)
    finally:
        await consumer.stop()
    assert len(records) == count, f"expected {count} records on {topic}, got {len(records)}"
    return records


async def eventually(check: Callable[[], Awaitable[bool]], *, timeout_s: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout_s}s: {what or check}")
        await asyncio.sleep(0.01)


def lag(bus: MemoryBus, group: str, topics: Sequence[str]) -> int:
    """Records of ``topics`` that ``group`` has not committed."""
    committed = bus.committed(group)
    return sum(
        bus.end_offset(TopicPartition(t, p)) - committed.get(TopicPartition(t, p), 0)
        for t in topics
        for p in range(PARTITIONS)
    )


def header(record: Record, name: str) -> str:
    values = [v for k, v in record.headers if k == name]
    assert len(values) == 1, f"header {name!r}: {values}"
    return values[0].decode()
