"""Looking at the cluster from outside: the services' MongoDB databases, the Kafka topics and consumer groups,
and the services' Prometheus counters."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer  # type: ignore[import-untyped]
from aiokafka import TopicPartition as KafkaTopicPartition
from aiokafka.admin import AIOKafkaAdminClient  # type: ignore[import-untyped]
from prometheus_client.parser import text_string_to_metric_families
from pymongo import AsyncMongoClient

from labelgate_core.bus.kafka import KafkaBus
from labelgate_core.topics import all_topics

from .processes import TOPIC_PARTITIONS

Doc = dict[str, Any]
Offsets = dict[tuple[str, int], int]


# -- MongoDB ------------------------------------------------------------------------------------------------------


def mongo(url: str) -> AsyncMongoClient[Doc]:
    return AsyncMongoClient(url, tz_aware=True, readConcernLevel="majority")


async def dump(client: AsyncMongoClient[Doc], database: str) -> dict[str, list[Doc]]:
    """Every collection of ``database``, each as its documents in ``_id`` order."""
    db = client.get_database(database)
    names = sorted(await db.list_collection_names())
    return {name: await db.get_collection(name).find({}, sort=[("_id", 1)]).to_list() for name in names}


async def count_per(
    client: AsyncMongoClient[Doc], database: str, collection: str, field: str, filter: Mapping[str, Any]
) -> Counter[str]:
    """How many documents of ``collection`` matching ``filter`` hold each value of ``field``."""
    docs = client.get_database(database).get_collection(collection).find(dict(filter), projection={field: 1})
    return Counter([str(doc.get(field)) async for doc in docs])


async def find(client: AsyncMongoClient[Doc], database: str, collection: str, filter: Mapping[str, Any]) -> list[Doc]:
    return await client.get_database(database).get_collection(collection).find(dict(filter)).to_list()


# -- Kafka --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    topic: str
    partition: int
    offset: int
    event: Doc

    @property
    def event_id(self) -> str:
        return str(self.event.get("event_id"))


async def ensure_topics(bootstrap: str) -> None:
    """Create the topics (and their dead-letter topics) as the services would, if they do not exist yet."""
    bus = KafkaBus(bootstrap, partitions=TOPIC_PARTITIONS, replication_factor=1, min_insync_replicas=1)
    await bus.start()
    try:
        await bus.ensure_topics(all_topics())
    finally:
        await bus.stop()


async def partitions_of(bootstrap: str, topics: Iterable[str]) -> list[KafkaTopicPartition]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics(list(topics))
    finally:
        await admin.close()
    return [
        KafkaTopicPartition(item["topic"], partition["partition"])
        for item in described
        for partition in item["partitions"]
    ]


async def end_offsets(bootstrap: str, topics: Iterable[str]) -> Offsets:
    partitions = await partitions_of(bootstrap, topics)
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await reader.start()
    try:
        ends = await reader.end_offsets(partitions)
    finally:
        await _stop(reader)
    return {(tp.topic, tp.partition): int(offset) for tp, offset in ends.items()}


async def read_events(bootstrap: str, topic: str, since: Mapping[tuple[str, int], int]) -> list[Message]:
    """Every record of ``topic`` from the offsets ``since`` (0 where it names none) to its end now, decoded."""
    ends = await end_offsets(bootstrap, [topic])
    wanted = {tp: end for tp, end in ends.items() if end > since.get(tp, 0)}
    if not wanted:
        return []
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await reader.start()
    messages: list[Message] = []
    try:
        partitions = [KafkaTopicPartition(t, p) for t, p in wanted]
        reader.assign(partitions)
        for tp in partitions:
            reader.seek(tp, since.get((tp.topic, tp.partition), 0))
        remaining = set(wanted)
        while remaining:
            batches = await reader.getmany(timeout_ms=1000, max_records=5000)
            for ktp, records in batches.items():
                key = (ktp.topic, ktp.partition)
                for record in records:
                    if record.offset < wanted[key]:
                        messages.append(Message(ktp.topic, ktp.partition, record.offset, _decoded(record.value)))
                if records and records[-1].offset + 1 >= wanted[key]:
                    remaining.discard(key)
    finally:
        await _stop(reader)
    return messages


def _decoded(value: bytes | None) -> Doc:
    """An event as JSON; a record that is not one (a dead letter may hold anything) reads as an empty event."""
    try:
        event = json.loads(value or b"")
    except ValueError:
        return {}
    return event if isinstance(event, dict) else {}


async def _stop(reader: Any) -> None:
    """Stop an aiokafka consumer. Its stop may re-raise the cancellation of an internal task it cancels itself;
    that one is not ours to propagate (ours would show in ``cancelling()``)."""
    try:
        await reader.stop()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise


async def committed(bootstrap: str, group: str) -> Offsets:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        found = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {(tp.topic, tp.partition): int(meta.offset) for tp, meta in found.items() if meta.offset >= 0}


async def group_members(bootstrap: str, group: str) -> tuple[str, list[str]]:
    """The group's state (``Stable``, ``PreparingRebalance``, ``Empty``...) and its members that own partitions."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (response,) = await admin.describe_consumer_groups([group])
    finally:
        await admin.close()
    (described,) = response.to_object()["groups"]
    members = [str(m["member_id"]) for m in described["members"] if m["member_assignment"]]
    return str(described["state"]), members


async def commit_offsets(bootstrap: str, group: str, offsets: Mapping[tuple[str, int], int]) -> None:
    """Set ``group``'s committed offsets, as a consumer of no group generation does: the group must have no
    running member (its service is stopped)."""
    client = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await client.start()
    try:
        partitions = [KafkaTopicPartition(t, p) for t, p in offsets]
        client.assign(partitions)
        await client.commit({KafkaTopicPartition(t, p): offset for (t, p), offset in offsets.items()})
    finally:
        await _stop(client)


def per_topic(offsets: Mapping[tuple[str, int], int], topics: Sequence[str]) -> Offsets:
    return {tp: offset for tp, offset in offsets.items() if tp[0] in topics}


# -- Prometheus ---------------------------------------------------------------------------------------------------


def metric(url: str, name: str, **labels: str) -> float:
    """The value of one sample of a service's /metrics (0 when the sample does not exist yet)."""
    text = httpx.get(f"{url}/metrics", timeout=10.0).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0
