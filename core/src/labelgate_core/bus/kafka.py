"""The Kafka bus: the bus port on Apache Kafka through aiokafka, with an idempotent ``acks=all`` producer and
consumers that commit only what the caller says it has made durable."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # type: ignore[import-untyped]
from aiokafka import TopicPartition as KafkaTopicPartition
from aiokafka.abc import ConsumerRebalanceListener  # type: ignore[import-untyped]
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # type: ignore[import-untyped]
from aiokafka.errors import (  # type: ignore[import-untyped]
    CommitFailedError as KafkaCommitFailedError,
)
from aiokafka.errors import (
    IllegalGenerationError,
    IllegalStateError,
    RebalanceInProgressError,
    TopicAlreadyExistsError,
    UnknownMemberIdError,
    for_code,
)

from .port import CommitFailedError, Consumer, OutgoingMessage, Record, TopicPartition

log = logging.getLogger(__name__)

# The group moved on without this member: its partitions may already belong to another one.
_MEMBERSHIP_ERRORS = (
    KafkaCommitFailedError,
    RebalanceInProgressError,
    IllegalGenerationError,
    UnknownMemberIdError,
    IllegalStateError,
)


class CommitTimeoutError(RuntimeError):
    """The group coordinator did not acknowledge a commit in time (a broker outage): nothing is known to be
    committed, so the runner keeps the offsets and tries again after a backoff."""


class TopicCreationError(RuntimeError):
    """Kafka refused to create a topic, or the topic did not get a leader for every partition in time."""


class KafkaBus:
    """The bus port on a Kafka cluster.

    Topics are created by ``ensure_topics`` (and on first use by ``publish`` and by consumers, so that a DLQ
    topic appears when its first dead letter does) with ``partitions`` partitions, ``replication_factor``
    replicas and ``min.insync.replicas`` = ``min_insync_replicas``: with ``acks=all`` a write is acknowledged
    only once that many replicas have it.
    """

    def __init__(
        self,
        bootstrap_servers: str | Sequence[str],
        *,
        client_id: str = "labelgate",
        partitions: int = 4,
        replication_factor: int = 3,
        min_insync_replicas: int = 2,
        topic_configs: Mapping[str, str] | None = None,
        request_timeout_ms: int = 30_000,
        session_timeout_ms: int = 10_000,
        heartbeat_interval_ms: int = 3_000,
        max_poll_interval_ms: int = 300_000,
        linger_ms: int = 0,
        compression_type: str | None = None,
        ready_timeout_s: float = 5.0,
    ) -> None:
        if partitions < 1:
            raise ValueError("partitions must be at least 1")
        if replication_factor < 1:
            raise ValueError("replication_factor must be at least 1")
        if not 1 <= min_insync_replicas <= replication_factor:
            raise ValueError(
                f"min_insync_replicas ({min_insync_replicas}) must be between 1 and the replication factor "
                f"({replication_factor}): acks=all writes would otherwise always fail"
            )
        self.bootstrap_servers = (
            bootstrap_servers if isinstance(bootstrap_servers, str) else ",".join(bootstrap_servers)
        )
        self.client_id = client_id
        self.partitions = partitions
        self.replication_factor = replication_factor
        self.min_insync_replicas = min_insync_replicas
        self.topic_configs = {"min.insync.replicas": str(min_insync_replicas), **(topic_configs or {})}
        self.request_timeout_ms = request_timeout_ms
        self.session_timeout_ms = session_timeout_ms
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.max_poll_interval_ms = max_poll_interval_ms
        self._linger_ms = linger_ms
        self._compression_type = compression_type
        self._ready_timeout_s = ready_timeout_s
        self._producer: Any = None
        self._admin: Any = None
        self._known_topics: set[str] = set()
        self._topics_lock = asyncio.Lock()
        self._consumers: set[KafkaConsumer] = set()
        self._member_ids = itertools.count()
        self._offset_reader: Any = None
        self._offset_reader_lock = asyncio.Lock()

    # -- lifecycle ------------------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._producer is not None:
            return
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self.bootstrap_servers,
            client_id=f"{self.client_id}.admin",
            request_timeout_ms=self.request_timeout_ms,
        )
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap_servers,
            client_id=f"{self.client_id}.producer",
            acks="all",
            enable_idempotence=True,
            request_timeout_ms=self.request_timeout_ms,
            linger_ms=self._linger_ms,
            compression_type=self._compression_type,
        )
        try:
            await admin.start()
            await producer.start()
        except BaseException:
            await producer.stop()
            await admin.close()
            raise
        self._admin, self._producer = admin, producer

    async def stop(self) -> None:
        for consumer in list(self._consumers):
            await consumer.stop()
        producer, self._producer = self._producer, None
        admin, self._admin = self._admin, None
        reader, self._offset_reader = self._offset_reader, None
        if reader is not None:
            await reader.stop()
        if producer is not None:
            await producer.stop()  # flushes what is still in flight
        if admin is not None:
            await admin.close()
        self._known_topics.clear()

    async def ready(self) -> bool:
        """True when the cluster answers a metadata request and lists at least one broker."""
        if self._admin is None:
            return False
        try:
            cluster = await asyncio.wait_for(self._admin.describe_cluster(), self._ready_timeout_s)
        except Exception as exc:
            log.warning("Kafka is not ready", extra={"error": repr(exc)})
            return False
        return bool(cluster.get("brokers"))

    def _started_admin(self) -> Any:
        if self._admin is None:
            raise RuntimeError("KafkaBus.start() has not been called")
        return self._admin

    # -- topics ---------------------------------------------------------------------------------------------

    async def ensure_topics(self, topics: Sequence[str]) -> None:
        """Create the topics that do not exist yet; returns once every partition of each has a leader."""
        if all(topic in self._known_topics for topic in topics):
            return
        admin = self._started_admin()
        async with self._topics_lock:
            wanted = [topic for topic in dict.fromkeys(topics) if topic not in self._known_topics]
            if not wanted:
                return
            existing = set(await admin.list_topics())
            missing = [topic for topic in wanted if topic not in existing]
            if missing:
                await self._create(admin, missing)
            await self._wait_for_leaders(admin, wanted)
            self._known_topics.update(wanted)

    async def _create(self, admin: Any, topics: list[str]) -> None:
        response = await admin.create_topics(
            [
                NewTopic(topic, self.partitions, self.replication_factor, topic_configs=dict(self.topic_configs))
                for topic in topics
            ],
            timeout_ms=self.request_timeout_ms,
        )
        failures: list[str] = []
        for entry in response.topic_errors:
            topic, code = entry[0], entry[1]
            message = entry[2] if len(entry) > 2 else None
            error = for_code(code)
            if code == 0 or error is TopicAlreadyExistsError:  # created meanwhile by another process: fine
                continue
            failures.append(f"{topic}: {error.__name__}{f' ({message})' if message else ''}")
        if failures:
            raise TopicCreationError(
                f"Kafka refused to create topics with {self.partitions} partitions, replication factor "
                f"{self.replication_factor} and min.insync.replicas {self.min_insync_replicas}: "
                f"{'; '.join(failures)}. A cluster needs at least as many brokers as the replication factor "
                "(LABELGATE_KAFKA_REPLICATION_FACTOR)."
            )
        log.info("created Kafka topics", extra={"topics": topics, "partitions": self.partitions})

    async def _wait_for_leaders(self, admin: Any, topics: list[str]) -> None:
        # Creation returns when the controller has the topics; brokers learn of them a moment later.
        deadline = asyncio.get_running_loop().time() + self.request_timeout_ms / 1000
        pending = topics
        while True:
            described = await admin.describe_topics(pending)
            pending = [
                item["topic"]
                for item in described
                if item["error_code"] != 0
                or not item["partitions"]
                or any(partition["leader"] < 0 for partition in item["partitions"])
            ]
            if not pending:
                return
            if asyncio.get_running_loop().time() >= deadline:
                raise TopicCreationError(f"topics without a leader for every partition: {pending}")
            await asyncio.sleep(0.05)

    # -- producing ------------------------------------------------------------------------------------------

    async def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        """Send every message, then wait until each is acknowledged by all in-sync replicas."""
        if not messages:
            return
        if self._producer is None:
            raise RuntimeError("KafkaBus.start() has not been called")
        await self.ensure_topics([message.topic for message in messages])
        deliveries: list[asyncio.Future[Any]] = []
        try:
            for message in messages:
                deliveries.append(
                    await self._producer.send(
                        message.topic,
                        message.value,
                        key=None if message.key is None else message.key.encode(),
                        headers=[(name, bytes(value)) for name, value in message.headers],
                    )
                )
        finally:
            outcomes = await asyncio.gather(*deliveries, return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

    # -- consuming ------------------------------------------------------------------------------------------

    def consumer(self, group_id: str, topics: Sequence[str]) -> Consumer:
        return KafkaConsumer(self, group_id, list(topics))

    async def _log_offsets(self, partitions: list[Any]) -> tuple[dict[Any, int], dict[Any, int]]:
        """First and next offsets of ``partitions``, asked through a client of their own: a group member's
        connection is busy with its long-polling fetches, and would answer only after them."""
        async with self._offset_reader_lock:
            if self._offset_reader is None:
                self._started_admin()
                reader = AIOKafkaConsumer(
                    bootstrap_servers=self.bootstrap_servers,
                    client_id=f"{self.client_id}.offsets",
                    group_id=None,
                    enable_auto_commit=False,
                    request_timeout_ms=self.request_timeout_ms,
                )
                await reader.start()
                self._offset_reader = reader
            reader = self._offset_reader
        starts, ends = await asyncio.gather(reader.beginning_offsets(partitions), reader.end_offsets(partitions))
        return starts, ends

    def _consumer_client(self, group_id: str) -> Any:
        return AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap_servers,
            client_id=f"{self.client_id}.{group_id}.{next(self._member_ids)}",
            group_id=group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            request_timeout_ms=self.request_timeout_ms,
            session_timeout_ms=self.session_timeout_ms,
            heartbeat_interval_ms=self.heartbeat_interval_ms,
            max_poll_interval_ms=self.max_poll_interval_ms,
        )


class KafkaConsumer:
    """One member of a Kafka consumer group.

    A commit covers only records polled under the partition's current assignment: after any rebalance that
    took a partition away (even if it came back), records polled before it are not committed — Kafka has
    already rewound the partition to its committed offset and they are delivered again, to whichever member
    owns the partition now.
    """

    def __init__(self, bus: KafkaBus, group_id: str, topics: list[str]) -> None:
        self._bus = bus
        self.group_id = group_id
        self.topics = topics
        self._client: Any = None
        # Each assignment this member receives gets a number; ``_polled_under`` keeps, per partition, the
        # number of the assignment under which it was last polled.
        self._assignments = itertools.count(1)
        self._assigned: dict[TopicPartition, int] = {}
        self._polled_under: dict[TopicPartition, int] = {}
        self.commit_timeout_s = bus.request_timeout_ms / 1000 + 5.0

    async def start(self) -> None:
        if self._client is not None:
            return
        await self._bus.ensure_topics(self.topics)
        client = self._bus._consumer_client(self.group_id)
        client.subscribe(topics=self.topics, listener=_RebalanceListener(self))
        try:
            await client.start()  # returns once the group has given this member its partitions
        except BaseException:
            await client.stop()
            raise
        self._client = client
        self._bus._consumers.add(self)

    async def stop(self) -> None:
        client, self._client = self._client, None
        self._bus._consumers.discard(self)
        if client is not None:
            await client.stop()  # leaves the group, so the others rebalance at once
        self._assigned.clear()
        self._polled_under.clear()

    def _started(self) -> Any:
        if self._client is None:
            raise RuntimeError("the consumer has not been started")
        return self._client

    # called by the rebalance listener, between two generations of the group
    def _on_revoked(self, partitions: set[TopicPartition]) -> None:
        for tp in partitions:
            self._assigned.pop(tp, None)

    def _on_assigned(self, partitions: set[TopicPartition]) -> None:
        generation = next(self._assignments)
        self._assigned = dict.fromkeys(partitions, generation)

    async def poll(self, *, max_records: int = 500, timeout_s: float = 1.0) -> list[Record]:
        batches = await self._started().getmany(timeout_ms=max(0, int(timeout_s * 1000)), max_records=max_records)
        records: list[Record] = []
        for ktp in sorted(batches, key=lambda t: (t.topic, t.partition)):
            tp = TopicPartition(ktp.topic, ktp.partition)
            generation = self._assigned.get(tp)
            if generation is None:  # revoked while the batch was on its way: the new owner reads it
                continue
            self._polled_under[tp] = generation
            records.extend(_record(message) for message in batches[ktp])
        return records

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        if not offsets:
            return
        client = self._client
        if client is None:
            raise CommitFailedError("the consumer has stopped: it owns no partitions")
        stale = [
            tp
            for tp in offsets
            if tp not in self._assigned
            or self._polled_under.get(tp, self._assigned[tp]) != self._assigned[tp]
        ]
        if stale:
            raise CommitFailedError(f"partitions {sorted(stale, key=_tp_key)} were reassigned since they were polled")
        request = {KafkaTopicPartition(tp.topic, tp.partition): offset for tp, offset in offsets.items()}
        try:
            # aiokafka retries a commit while the coordinator is unreachable, without end: bound it, so that
            # a broker outage surfaces as an error the runner backs off from instead of a silent hang.
            await asyncio.wait_for(client.commit(request), timeout=self.commit_timeout_s)
        except _MEMBERSHIP_ERRORS as exc:
            raise CommitFailedError(str(exc)) from exc
        except TimeoutError as exc:
            raise CommitTimeoutError(f"commit not acknowledged within {self.commit_timeout_s:.0f} s") from exc

    def assignment(self) -> set[TopicPartition]:
        # The listener's view: empty from the moment a rebalance revokes the partitions until it assigns
        # new ones, whereas aiokafka's own view lags behind until the new assignment arrives.
        return set(self._assigned)

    async def lag(self) -> dict[TopicPartition, int]:
        """Per assigned partition: end offset minus the group's committed offset (the log start if none)."""
        partitions = [KafkaTopicPartition(tp.topic, tp.partition) for tp in self._assigned]
        if self._client is None or not partitions:
            return {}
        (starts, ends), committed = await asyncio.gather(
            self._bus._log_offsets(partitions),
            self._bus._started_admin().list_consumer_group_offsets(self.group_id, partitions=partitions),
        )
        lags: dict[TopicPartition, int] = {}
        for ktp in partitions:
            done = committed.get(ktp)
            base = done.offset if done is not None and done.offset >= 0 else starts[ktp]
            lags[TopicPartition(ktp.topic, ktp.partition)] = max(0, int(ends[ktp]) - int(base))
        return lags


class _RebalanceListener(ConsumerRebalanceListener):  # type: ignore[misc]
    """Keeps the consumer's view of which partitions it owns, and under which assignment, in step with the
    group, so that ``commit`` refuses records that another member may be processing."""

    def __init__(self, consumer: KafkaConsumer) -> None:
        self._consumer = consumer

    async def on_partitions_revoked(self, revoked: Any) -> None:
        partitions = {TopicPartition(ktp.topic, ktp.partition) for ktp in revoked}
        if partitions:
            log.info("partitions revoked", extra={"group": self._consumer.group_id, "partitions": len(partitions)})
        self._consumer._on_revoked(partitions)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        partitions = {TopicPartition(ktp.topic, ktp.partition) for ktp in assigned}
        log.info("partitions assigned", extra={"group": self._consumer.group_id, "partitions": len(partitions)})
        self._consumer._on_assigned(partitions)


def _record(message: Any) -> Record:
    key = message.key
    return Record(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=None if key is None else key.decode(errors="replace"),
        value=b"" if message.value is None else bytes(message.value),
        headers=tuple((name, b"" if value is None else bytes(value)) for name, value in (message.headers or ())),
        timestamp_ms=int(message.timestamp or 0),
    )


def _tp_key(tp: TopicPartition) -> tuple[str, int]:
    return (tp.topic, tp.partition)
