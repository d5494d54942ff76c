"""The bus port: what Labelgate needs of a log-based message broker (Kafka's model)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, slots=True)
class TopicPartition:
    topic: str
    partition: int


@dataclass(frozen=True, slots=True)
class Record:
    """A message as read from the bus."""

    topic: str
    partition: int
    offset: int
    key: str | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()
    timestamp_ms: int = 0

    @property
    def tp(self) -> TopicPartition:
        return TopicPartition(self.topic, self.partition)


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """A message to publish."""

    topic: str
    key: str | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = field(default=())


class CommitFailedError(RuntimeError):
    """A commit for a partition the member no longer owns (the group rebalanced): the records will be
    delivered again to the partition's new owner."""


class Consumer(Protocol):
    """One member of a consumer group. Offsets move only when ``commit`` is called (never automatically):
    records polled but not committed are delivered again after a restart or a rebalance."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def poll(self, *, max_records: int = 500, timeout_s: float = 1.0) -> list[Record]:
        """Records from the assigned partitions, in offset order per partition; [] after ``timeout_s``."""
        ...

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Commit, per partition, the offset of the next record to read."""
        ...

    def assignment(self) -> set[TopicPartition]: ...

    async def lag(self) -> dict[TopicPartition, int]:
        """Per assigned partition: end offset minus committed offset."""
        ...


class Bus(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def ensure_topics(self, topics: Sequence[str]) -> None: ...

    async def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        """Publish; returns once every message is durable on the bus. Messages with one key keep their order."""
        ...

    def consumer(self, group_id: str, topics: Sequence[str]) -> Consumer: ...

    async def ready(self) -> bool: ...
