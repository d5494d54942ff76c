"""The in-process bus: Kafka's semantics (keyed partitions, consumer groups, committed offsets, redelivery of
what was not committed) without a broker. Given a journal path it keeps its log and offsets in a SQLite file,
so the embedded pipeline survives kill -9 like a Kafka deployment would."""

from __future__ import annotations

import asyncio
import itertools
import json
import sqlite3
import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .port import CommitFailedError, Consumer, OutgoingMessage, Record, TopicPartition


def partition_for(key: str | None, partitions: int, counter: int) -> int:
    if key is None:
        return counter % partitions
    return zlib.crc32(key.encode()) % partitions


@dataclass
class _Group:
    members: dict[str, MemoryConsumer] = field(default_factory=dict)
    committed: dict[TopicPartition, int] = field(default_factory=dict)


class _Journal:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS records (topic TEXT, partition INTEGER, offset INTEGER, key TEXT,"
            " value BLOB, headers TEXT, ts INTEGER, PRIMARY KEY (topic, partition, offset))"
        )
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS offsets (grp TEXT, topic TEXT, partition INTEGER, offset INTEGER,"
            " PRIMARY KEY (grp, topic, partition))"
        )
        self._db.execute("CREATE TABLE IF NOT EXISTS topics (topic TEXT PRIMARY KEY, partitions INTEGER)")

    def load(self) -> tuple[dict[str, int], list[Record], dict[str, dict[TopicPartition, int]]]:
        topics = dict(self._db.execute("SELECT topic, partitions FROM topics").fetchall())
        records = [
            Record(t, p, o, k, bytes(v), tuple((h, bytes.fromhex(b)) for h, b in json.loads(hs)), ts)
            for t, p, o, k, v, hs, ts in self._db.execute(
                "SELECT topic, partition, offset, key, value, headers, ts FROM records"
                " ORDER BY topic, partition, offset"
            )
        ]
        offsets: dict[str, dict[TopicPartition, int]] = {}
        for grp, t, p, o in self._db.execute("SELECT grp, topic, partition, offset FROM offsets"):
            offsets.setdefault(grp, {})[TopicPartition(t, p)] = o
        return topics, records, offsets

    def add_topic(self, topic: str, partitions: int) -> None:
        self._db.execute("INSERT OR IGNORE INTO topics VALUES (?, ?)", (topic, partitions))

    def append(self, records: Sequence[Record]) -> None:
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT INTO records VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (r.topic, r.partition, r.offset, r.key, r.value,
                     json.dumps([(h, b.hex()) for h, b in r.headers]), r.timestamp_ms)
                    for r in records
                ],
            )

    def commit(self, group: str, offsets: Mapping[TopicPartition, int]) -> None:
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT OR REPLACE INTO offsets VALUES (?, ?, ?, ?)",
                [(group, tp.topic, tp.partition, o) for tp, o in offsets.items()],
            )

    def close(self) -> None:
        self._db.close()


class MemoryBus:
    def __init__(self, *, partitions: int = 4, journal: Path | None = None) -> None:
        self._default_partitions = partitions
        self._logs: dict[str, list[list[Record]]] = {}
        self._groups: dict[str, _Group] = {}
        self._new_data = asyncio.Event()
        self._counter = itertools.count()
        self._member_ids = itertools.count()
        self._journal = _Journal(journal) if journal else None
        if self._journal:
            topics, records, offsets = self._journal.load()
            for topic, n in topics.items():
                self._logs[topic] = [[] for _ in range(n)]
            for record in records:
                self._logs[record.topic][record.partition].append(record)
            for group, committed in offsets.items():
                self._groups[group] = _Group(committed=committed)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        for group in self._groups.values():
            for member in list(group.members.values()):
                await member.stop()
        if self._journal:
            self._journal.close()
            self._journal = None

    async def ready(self) -> bool:
        return True

    def _log(self, topic: str) -> list[list[Record]]:
        log = self._logs.get(topic)
        if log is None:
            log = self._logs[topic] = [[] for _ in range(self._default_partitions)]
            if self._journal:
                self._journal.add_topic(topic, self._default_partitions)
        return log

    async def ensure_topics(self, topics: Sequence[str]) -> None:
        for topic in topics:
            self._log(topic)

    async def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        now = int(time.time() * 1000)
        appended: list[Record] = []
        for message in messages:
            log = self._log(message.topic)
            p = partition_for(message.key, len(log), next(self._counter))
            record = Record(message.topic, p, len(log[p]), message.key, message.value, message.headers, now)
            log[p].append(record)
            appended.append(record)
        if self._journal and appended:
            self._journal.append(appended)
        self._new_data.set()
        self._new_data = asyncio.Event()

    def consumer(self, group_id: str, topics: Sequence[str]) -> Consumer:
        return MemoryConsumer(self, group_id, list(topics))

    # -- group coordination -------------------------------------------------------------------------------

    def _join(self, member: MemoryConsumer) -> None:
        group = self._groups.setdefault(member.group_id, _Group())
        group.members[member.member_id] = member
        self._rebalance(group)

    def _leave(self, member: MemoryConsumer) -> None:
        group = self._groups.get(member.group_id)
        if group and group.members.pop(member.member_id, None) is not None:
            self._rebalance(group)

    def _rebalance(self, group: _Group) -> None:
        members = sorted(group.members.values(), key=lambda m: m.member_id)
        if not members:
            return
        topics = sorted({t for m in members for t in m.topics})
        partitions = [TopicPartition(t, p) for t in topics for p in range(len(self._log(t)))]
        assignment: dict[str, set[TopicPartition]] = {m.member_id: set() for m in members}
        for i, tp in enumerate(partitions):
            candidates = [m for m in members if tp.topic in m.topics]
            if candidates:
                assignment[candidates[i % len(candidates)].member_id].add(tp)
        for member in members:
            member._assign(assignment[member.member_id], group.committed)
        self._new_data.set()
        self._new_data = asyncio.Event()

    def _commit(self, member: MemoryConsumer, offsets: Mapping[TopicPartition, int]) -> None:
        group = self._groups[member.group_id]
        foreign = [tp for tp in offsets if tp not in member.assignment()]
        if foreign:
            raise CommitFailedError(f"partitions {foreign} are no longer assigned to this member")
        group.committed.update(offsets)
        if self._journal:
            self._journal.commit(member.group_id, offsets)

    def end_offset(self, tp: TopicPartition) -> int:
        return len(self._log(tp.topic)[tp.partition])

    def committed(self, group_id: str) -> dict[TopicPartition, int]:
        group = self._groups.get(group_id)
        return dict(group.committed) if group else {}


class MemoryConsumer:
    def __init__(self, bus: MemoryBus, group_id: str, topics: list[str]) -> None:
        self._bus = bus
        self.group_id = group_id
        self.topics = topics
        self.member_id = f"{next(bus._member_ids):08d}"
        self._positions: dict[TopicPartition, int] = {}
        self._turn = itertools.count()
        self._started = False

    def _assign(self, partitions: set[TopicPartition], committed: Mapping[TopicPartition, int]) -> None:
        kept = {tp: pos for tp, pos in self._positions.items() if tp in partitions}
        self._positions = {tp: kept.get(tp, committed.get(tp, 0)) for tp in partitions}

    def assignment(self) -> set[TopicPartition]:
        return set(self._positions)

    async def start(self) -> None:
        if not self._started:
            self._started = True
            self._bus._join(self)

    async def stop(self) -> None:
        if self._started:
            self._started = False
            self._bus._leave(self)
            self._positions = {}

    async def poll(self, *, max_records: int = 500, timeout_s: float = 1.0) -> list[Record]:
        deadline = time.monotonic() + timeout_s
        while True:
            out: list[Record] = []
            # Start each poll at the next partition, so that a backlog in one does not starve the others.
            order = sorted(self._positions, key=lambda t: (t.topic, t.partition))
            if order:
                start = next(self._turn) % len(order)
                order = order[start:] + order[:start]
            for tp in order:
                log = self._bus._log(tp.topic)[tp.partition]
                pos = self._positions[tp]
                take = log[pos : pos + max_records - len(out)]
                if take:
                    out.extend(take)
                    self._positions[tp] = pos + len(take)
                if len(out) >= max_records:
                    break
            remaining = deadline - time.monotonic()
            if out or remaining <= 0:
                return out
            signal = self._bus._new_data
            try:
                await asyncio.wait_for(signal.wait(), remaining)
            except TimeoutError:
                return []

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        self._bus._commit(self, offsets)

    async def lag(self) -> dict[TopicPartition, int]:
        committed = self._bus.committed(self.group_id)
        return {tp: self._bus.end_offset(tp) - committed.get(tp, 0) for tp in self._positions}
