"""The in-process bus against the bus contract, with and without its journal, plus what only it promises."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from labelgate_core.bus.memory import MemoryBus, partition_for
from labelgate_core.bus.port import Bus, CommitFailedError, OutgoingMessage
from labelgate_core.testing.bus_contract import BusContract, BusFactory, next_offsets


class TestMemoryBus(BusContract):
    durable = False
    # Without a journal the log lives and dies with the object: there is nothing to reopen.
    test_log_and_committed_offsets_survive_a_reopen = None  # type: ignore[assignment]
    deadline_s = 10.0
    settle_s = 0.2

    @pytest.fixture
    def bus_factory(self) -> BusFactory:
        async def open_bus() -> Bus:
            bus = MemoryBus(partitions=4)
            await bus.start()
            return bus

        return open_bus


class TestJournaledMemoryBus(BusContract):
    deadline_s = 10.0
    settle_s = 0.2

    @pytest.fixture
    def bus_factory(self, tmp_path: Path) -> BusFactory:
        async def open_bus() -> Bus:
            bus = MemoryBus(partitions=4, journal=tmp_path / "bus.db")
            await bus.start()
            return bus

        return open_bus


@pytest.fixture
async def bus() -> MemoryBus:
    return MemoryBus(partitions=4)


def keys_per_partition(partitions: int) -> list[str]:
    """One key for each partition."""
    found: dict[int, str] = {}
    i = 0
    while len(found) < partitions:
        found.setdefault(partition_for(f"key-{i}", partitions, 0), f"key-{i}")
        i += 1
    return [found[p] for p in range(partitions)]


@pytest.mark.unit
async def test_a_commit_for_a_partition_given_away_fails_and_its_records_come_again(bus: MemoryBus) -> None:
    await bus.publish([OutgoingMessage("t", key, key.encode()) for key in keys_per_partition(4)])
    first = bus.consumer("g", ["t"])
    await first.start()
    records = await first.poll(timeout_s=1)
    assert len(records) == 4

    second = bus.consumer("g", ["t"])
    await second.start()  # the group rebalances: ``first`` keeps only half of the partitions
    taken = [r for r in records if r.tp not in first.assignment()]
    assert taken

    with pytest.raises(CommitFailedError):
        await first.commit(next_offsets(records))
    redelivered = await second.poll(timeout_s=1)
    assert sorted(r.value for r in redelivered) == sorted(r.value for r in taken)


@pytest.mark.unit
async def test_a_stopped_consumer_owns_nothing_and_cannot_commit(bus: MemoryBus) -> None:
    await bus.publish([OutgoingMessage("t", "k", b"v")])
    consumer = bus.consumer("g", ["t"])
    await consumer.start()
    records = await consumer.poll(timeout_s=1)
    await consumer.stop()

    assert consumer.assignment() == set()
    with pytest.raises(CommitFailedError):
        await consumer.commit(next_offsets(records))


@pytest.mark.unit
async def test_a_waiting_poll_returns_the_record_published_meanwhile(bus: MemoryBus) -> None:
    consumer = bus.consumer("g", ["t"])
    await consumer.start()
    waiting = asyncio.create_task(consumer.poll(timeout_s=30))
    await asyncio.sleep(0.05)
    await bus.publish([OutgoingMessage("t", "k", b"late")])

    assert [r.value for r in await waiting] == [b"late"]


@pytest.mark.unit
async def test_a_backlog_in_one_partition_does_not_starve_the_others(bus: MemoryBus) -> None:
    keys = keys_per_partition(4)
    await bus.publish([OutgoingMessage("t", key, b"x") for key in keys for _ in range(50)])
    consumer = bus.consumer("g", ["t"])
    await consumer.start()

    seen: set[int] = set()
    for _ in range(4):
        seen |= {r.partition for r in await consumer.poll(max_records=10, timeout_s=1)}

    assert seen == {0, 1, 2, 3}


@pytest.mark.unit
async def test_the_journal_keeps_records_and_commits_of_a_process_that_died(tmp_path: Path) -> None:
    crashed = MemoryBus(partitions=4, journal=tmp_path / "bus.db")
    await crashed.publish([OutgoingMessage("t", "k", f"v{i}".encode(), (("h", b"1"),)) for i in range(5)])
    consumer = crashed.consumer("g", ["t"])
    await consumer.start()
    records = await consumer.poll(timeout_s=1)
    await consumer.commit(next_offsets(records[:2]))
    # No stop(): the process was killed. A new one opens the same journal.

    revived = MemoryBus(partitions=4, journal=tmp_path / "bus.db")
    resumed = revived.consumer("g", ["t"])
    await resumed.start()
    again = await resumed.poll(timeout_s=1)

    assert [r.value for r in again] == [b"v2", b"v3", b"v4"]
    assert again[0].headers == (("h", b"1"),)
    assert revived.committed("g") == {records[0].tp: 2}
    await revived.stop()
