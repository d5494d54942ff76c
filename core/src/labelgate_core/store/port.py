"""The store port: a small document store with transactions, an inbox and an outbox.

Documents are JSON objects with a string ``_id``. Filters are a subset of MongoDB's: equality on (dotted)
fields, and the operators ``$in``, ``$ne``, ``$lt``, ``$lte``, ``$gt``, ``$gte`` and ``$exists``. Updates
take ``set`` and ``inc``. Every service owns its own store; no service reads another's."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol

Doc = dict[str, Any]
Filter = Mapping[str, Any]
Sort = Sequence[tuple[str, int]]


class DuplicateKeyError(Exception):
    """An insert collided with a unique index: the thing already exists."""


@dataclass(frozen=True, slots=True)
class Index:
    fields: tuple[str, ...]
    unique: bool = False

    @property
    def name(self) -> str:
        return "ix_" + "_".join(f.replace(".", "_") for f in self.fields) + ("_u" if self.unique else "")


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    seq: int
    topic: str
    key: str | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...]


class Reader(Protocol):
    async def find_one(self, collection: str, filter: Filter) -> Doc | None: ...

    async def find(
        self, collection: str, filter: Filter, *, sort: Sort = (), limit: int | None = None, skip: int = 0
    ) -> list[Doc]: ...

    async def count(self, collection: str, filter: Filter) -> int: ...


class Transaction(Reader, Protocol):
    """Everything done through one transaction becomes durable together, or not at all."""

    async def insert(self, collection: str, doc: Doc) -> None:
        """Raises ``DuplicateKeyError`` when ``_id`` or a unique index already holds the values."""
        ...

    async def insert_many(self, collection: str, docs: Sequence[Doc]) -> None: ...

    async def update_one(
        self,
        collection: str,
        filter: Filter,
        *,
        set: Mapping[str, Any] | None = None,
        inc: Mapping[str, float] | None = None,
        upsert: bool = False,
    ) -> bool:
        """Update the first matching document; True when one matched (or was upserted)."""
        ...

    async def find_one_and_update(
        self,
        collection: str,
        filter: Filter,
        *,
        sort: Sort = (),
        set: Mapping[str, Any] | None = None,
        inc: Mapping[str, float] | None = None,
    ) -> Doc | None:
        """Atomically update the first document in ``sort`` order and return it as it is after the update."""
        ...

    async def delete_many(self, collection: str, filter: Filter) -> int: ...

    async def claim_event(self, consumer: str, event_id: str) -> bool:
        """Record in the inbox that ``consumer`` processed ``event_id``; False if it already had."""
        ...

    async def add_outbox(
        self, topic: str, key: str | None, value: bytes, headers: Sequence[tuple[str, bytes]] = ()
    ) -> None: ...


class Store(Reader, Protocol):
    outbox_signal: asyncio.Event
    """Set after a transaction that wrote to the outbox commits, to wake the relay."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def ensure_indexes(self, collection: str, indexes: Sequence[Index]) -> None: ...

    def transaction(self) -> AbstractAsyncContextManager[Transaction]: ...

    def stream(
        self, collection: str, filter: Filter, *, sort: Sort = (), batch_size: int = 1000
    ) -> AsyncIterator[Doc]:
        """All matching documents, read in batches, for exports that must not hold everything in memory."""
        ...

    async def outbox_pending(self, limit: int = 500) -> list[OutboxEntry]: ...

    async def outbox_done(self, seqs: Sequence[int]) -> None: ...

    async def ready(self) -> bool: ...
