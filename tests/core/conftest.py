"""Fixtures of the core's tests: a real in-process bus and a real SQLite store in the test's folder."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from labelgate_core.bus.memory import MemoryBus
from labelgate_core.store.sqlite import SqliteStore

from .helpers import PARTITIONS


@pytest.fixture
async def bus(tmp_path: Path) -> AsyncIterator[MemoryBus]:
    bus = MemoryBus(partitions=PARTITIONS, journal=tmp_path / "bus.db")
    await bus.start()
    yield bus
    await bus.stop()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(tmp_path / "store.db")
    await store.start()
    yield store
    await store.stop()
