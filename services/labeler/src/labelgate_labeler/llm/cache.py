"""The response cache: an identical prompt to the same model is answered once and not paid for twice."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Protocol

from labelgate_core.store.port import Store

RESPONSE_CACHE = "llm_response_cache"


class ResponseCache(Protocol):
    async def get(self, key: str) -> dict[str, Any] | None: ...

    async def put(self, key: str, value: dict[str, Any]) -> None: ...


class MemoryResponseCache:
    def __init__(self, max_entries: int = 10_000) -> None:
        self._entries: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._max = max_entries

    async def get(self, key: str) -> dict[str, Any] | None:
        value = self._entries.get(key)
        if value is not None:
            self._entries.move_to_end(key)
        return value

    async def put(self, key: str, value: dict[str, Any]) -> None:
        self._entries[key] = value
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)


class StoreResponseCache:
    """Durable (the labeler's store) behind a small in-memory front. Reads use no transaction; each write is
    its own short one, made after the call, never around it."""

    def __init__(self, store: Store, memory_entries: int = 10_000) -> None:
        self._store = store
        self._memory = MemoryResponseCache(memory_entries)

    async def get(self, key: str) -> dict[str, Any] | None:
        hit = await self._memory.get(key)
        if hit is not None:
            return hit
        doc = await self._store.find_one(RESPONSE_CACHE, {"_id": key})
        if doc is None:
            return None
        value: dict[str, Any] = doc["value"]
        await self._memory.put(key, value)
        return value

    async def put(self, key: str, value: dict[str, Any]) -> None:
        await self._memory.put(key, value)
        async with self._store.transaction() as tx:
            await tx.update_one(RESPONSE_CACHE, {"_id": key}, set={"value": value}, upsert=True)
