"""The SQLite store against the store contract, plus what only it promises."""

from __future__ import annotations

from pathlib import Path

import pytest

from labelgate_core.store.port import Index, Store
from labelgate_core.store.sqlite import SqliteStore
from labelgate_core.testing.store_contract import StoreContract, StoreFactory


class TestSqliteStore(StoreContract):
    @pytest.fixture
    def store_factory(self, tmp_path: Path) -> StoreFactory:
        async def open_store() -> Store:
            store = SqliteStore(tmp_path / "store.db")
            await store.start()
            return store

        return open_store


@pytest.mark.integration
async def test_data_survives_stop_and_start_of_the_same_store(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "nested" / "dir" / "store.db")
    await store.start()
    await store.ensure_indexes("items", [Index(("email",), unique=True)])
    async with store.transaction() as tx:
        await tx.insert("items", {"_id": "1", "email": "a@x"})
        await tx.add_outbox("t", "k", b"v")
    await store.stop()
    assert not await store.ready()

    await store.start()
    try:
        assert await store.ready()
        assert await store.find("items", {}) == [{"_id": "1", "email": "a@x"}]
        assert [e.value for e in await store.outbox_pending()] == [b"v"]
    finally:
        await store.stop()


@pytest.mark.integration
async def test_a_store_that_is_not_started_says_so(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "store.db")
    assert not await store.ready()
    with pytest.raises(RuntimeError, match="not started"):
        async with store.transaction():
            pass
