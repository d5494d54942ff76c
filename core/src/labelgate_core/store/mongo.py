"""The MongoDB store: PyMongo's async client, majority writes and reads, multi-document transactions.

Needs a replica set (a single node is enough): MongoDB runs transactions only there.

How a transaction survives conflicts. MongoDB transactions are snapshot-isolated and first-writer-wins: when
two overlapping transactions write one document, the second gets ``WriteConflict`` (labelled
``TransientTransactionError``) and the server aborts it. The body of ``async with store.transaction()`` cannot
be run again from here, so every operation and what it returned (or the ``DuplicateKeyError`` it raised) is
recorded; after a transient abort the recorded operations are replayed in a fresh transaction, and if each of
them observes exactly what it observed the first time, the body would have issued the very same calls, so
the replay is the re-run and the transaction goes on as if nothing happened. If any observation differs, the
caller gets ``RetriableError`` and the consumer runner runs the handler again from the start. So conflicts on
blind writes (an ``inc``, the outbox counter, the inbox record of a new event) stay inside the store, unless
they go on past ``MAX_RESTARTS``; a read-modify-write that lost a race is re-run by its caller; no update is
lost either way.

How the outbox keeps commit order. Entries are buffered in the transaction and written just before commit,
each with ``_id = seq`` taken from one counter document that the same transaction increments. Only one of two
overlapping transactions can write that counter (the other conflicts and replays from a newer snapshot), so a
transaction that got a higher seq started its increment after every lower seq had committed: seq order is
commit order, and the relay, reading by seq, never sees a later seq commit before an earlier one appears.
Within one process a lock serialises the counter increment and the commit, so there a conflict on the
counter costs one replay at most instead of a race.
Aborted transactions leave gaps in the sequence, never reorderings."""

from __future__ import annotations

import asyncio
import copy
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NoReturn, TypeVar

from prometheus_client import Counter
from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, ReturnDocument
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import (
    BulkWriteError,
    ConnectionFailure,
    ExecutionTimeout,
    OperationFailure,
    PyMongoError,
    WTimeoutError,
)
from pymongo.errors import DuplicateKeyError as MongoDuplicateKeyError
from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern

from ..errors import RetriableError
from ..events import new_id
from .documents import check_field, get_path, upsert_seed
from .port import Doc, DuplicateKeyError, Filter, Index, OutboxEntry, Sort

T = TypeVar("T")

log = logging.getLogger(__name__)

REPLAYS = Counter(
    "labelgate_store_transaction_replays_total",
    "MongoDB transactions restarted after a transient abort (a write conflict), by how the replay ended",
    ["outcome"],
)

_INBOX = "_inbox"
_OUTBOX = "_outbox"
_COUNTERS = "_counters"
_OUTBOX_COUNTER = "outbox"
_OPERATORS = frozenset({"$in", "$ne", "$lt", "$lte", "$gt", "$gte", "$exists"})
_DUPLICATE_KEY = 11000
_NAMESPACE_EXISTS = 48
_UNIQUE_CACHE_S = 60.0

MAJORITY = WriteConcern("majority")
TRANSACTION_READ_CONCERN = ReadConcern("snapshot")


def _scalar(value: Any) -> Any:
    if isinstance(value, (dict, list, tuple)):
        raise ValueError("filters compare scalars only")
    return value


def _query(filter: Filter) -> dict[str, Any]:
    """The port's filter as a MongoDB query, refusing anything beyond the port's subset."""
    query: dict[str, Any] = {}
    for field, cond in filter.items():
        check_field(field)
        if isinstance(cond, Mapping):
            ops: dict[str, Any] = {}
            for op, value in cond.items():
                if op not in _OPERATORS:
                    raise ValueError(f"unsupported filter operator {op!r}")
                if op == "$in":
                    ops[op] = [_scalar(v) for v in value]
                elif op == "$exists":
                    ops[op] = bool(value)
                else:
                    ops[op] = _scalar(value)
            query[field] = ops
        else:
            query[field] = _scalar(cond)
    return query


def _sort(sort: Sort) -> list[tuple[str, int]]:
    return [(check_field(field), DESCENDING if direction < 0 else ASCENDING) for field, direction in sort]


def _update(set: Mapping[str, Any] | None, inc: Mapping[str, float] | None) -> dict[str, Any]:
    update: dict[str, Any] = {}
    if set:
        update["$set"] = {check_field(path): value for path, value in set.items()}
    if inc:
        update["$inc"] = {check_field(path): amount for path, amount in inc.items()}
    return update


def _is_duplicate(exc: PyMongoError) -> bool:
    if isinstance(exc, MongoDuplicateKeyError):
        return True
    if isinstance(exc, BulkWriteError):
        return any(e.get("code") == _DUPLICATE_KEY for e in exc.details.get("writeErrors", ()))
    return False


def _is_transient(exc: PyMongoError) -> bool:
    """A conflict worth replaying the transaction for. The driver also labels network errors inside a
    transaction as transient, but replaying into an unreachable server only waits out its selection timeout
    again and again: those go back to the caller as ``RetriableError`` at once (the consumer runner pauses and
    retries the handler; an API request fails fast with a retryable status)."""
    return exc.has_error_label("TransientTransactionError") and not isinstance(exc, ConnectionFailure)


def _is_retriable(exc: PyMongoError) -> bool:
    return (
        isinstance(exc, (ConnectionFailure, ExecutionTimeout, WTimeoutError))
        or _is_transient(exc)
        or exc.has_error_label("RetryableWriteError")
        or exc.has_error_label("UnknownTransactionCommitResult")
    )


def _raise_translated(exc: PyMongoError, what: str) -> NoReturn:
    """Raise the port's error for a driver error: callers never see PyMongo's exception types for the
    failures they are expected to handle."""
    if _is_duplicate(exc):
        raise DuplicateKeyError(f"{what}: {exc}") from exc
    if _is_retriable(exc):
        raise RetriableError(f"{what}: {exc}") from exc
    raise exc


class _ConcurrentChangeError(RetriableError):
    """A replay observed something other than the original run: the caller must run its logic again."""


@dataclass(slots=True)
class _Step:
    run: Callable[[], Awaitable[Any]]
    result: Any
    duplicate: bool


class MongoTransaction:
    """One client session in one MongoDB transaction; every operation passes the session.

    Operations must be awaited one at a time (a session runs one command at a time)."""

    MAX_RESTARTS = 12
    BACKOFF_FIRST_S = 0.005
    BACKOFF_MAX_S = 0.25

    def __init__(self, store: MongoStore, session: AsyncClientSession) -> None:
        self._store = store
        self._session = session
        self._steps: list[_Step] = []
        self._outbox: list[Doc] = []
        self._restarts = 0
        self._doomed: BaseException | None = None

    # -- the machinery: record, replay, commit --------------------------------------------------------

    async def _begin(self) -> None:
        await self._session.start_transaction(read_concern=TRANSACTION_READ_CONCERN, write_concern=MAJORITY)

    def _check_usable(self) -> None:
        if self._doomed is not None:
            raise RetriableError(f"this transaction was aborted by the server: {self._doomed}") from self._doomed

    async def _do(self, run: Callable[[], Awaitable[T]]) -> T:
        self._check_usable()
        while True:
            try:
                result = await run()
            except DuplicateKeyError:
                if self._doomed is None:  # found by a read in this transaction, which stays usable
                    self._steps.append(_Step(run, None, duplicate=True))
                raise
            except PyMongoError as exc:
                if not _is_transient(exc):
                    _raise_translated(exc, "mongo transaction")
                await self._restart(exc)
                continue
            # A copy: the caller may change the documents it got, and the replay compares with what it got.
            self._steps.append(_Step(run, copy.deepcopy(result), duplicate=False))
            return result

    async def _restart(self, cause: PyMongoError) -> None:
        """Start a fresh transaction and replay what was done so far, checking it sees the same."""
        while True:
            self._restarts += 1
            if self._restarts > self.MAX_RESTARTS:
                self._doomed = cause
                REPLAYS.labels("exhausted").inc()
                raise RetriableError(
                    f"transaction kept conflicting ({self._restarts - 1} restarts): {cause}"
                ) from cause
            with suppress(PyMongoError):
                if self._session.in_transaction:
                    await self._session.abort_transaction()
            backoff = min(self.BACKOFF_MAX_S, self.BACKOFF_FIRST_S * 2**self._restarts)
            await asyncio.sleep(random.uniform(0, backoff))  # noqa: S311 - jitter, not security
            await self._begin()
            try:
                for step in self._steps:
                    await self._replay(step)
                REPLAYS.labels("replayed").inc()
                log.debug("transaction replayed %d operations after %s", len(self._steps), cause)
                return
            except PyMongoError as exc:
                if not _is_transient(exc):
                    self._doomed = exc
                    _raise_translated(exc, "mongo transaction replay")
                cause = exc

    async def _replay(self, step: _Step) -> None:
        try:
            result = await step.run()
            same = not step.duplicate and result == step.result
        except DuplicateKeyError as exc:
            if self._doomed is not None:
                raise RetriableError(f"replay hit a duplicate key: {exc}") from exc
            same = step.duplicate
        if not same:
            changed = _ConcurrentChangeError(
                "a concurrent transaction changed what this transaction had read; run it again"
            )
            self._doomed = changed
            REPLAYS.labels("changed").inc()
            raise changed

    async def _commit(self) -> bool:
        """Write the outbox, commit; True when the outbox was written."""
        self._check_usable()
        if not self._outbox:
            await self._commit_with_restarts()
            return False
        async with self._store._outbox_lock:
            await self._commit_with_restarts()
        return True

    async def _commit_with_restarts(self) -> None:
        while True:
            try:
                if self._outbox:
                    await self._write_outbox()
                await self._commit_once()
                return
            except PyMongoError as exc:
                if not _is_transient(exc):
                    _raise_translated(exc, "mongo commit")
                await self._restart(exc)

    async def _commit_once(self) -> None:
        attempts = 3
        for attempt in range(attempts):
            try:
                await self._session.commit_transaction()
                return
            except PyMongoError as exc:
                # Retrying a commit whose outcome is unknown is safe: the server commits a transaction once.
                if exc.has_error_label("UnknownTransactionCommitResult") and attempt < attempts - 1:
                    continue
                raise

    async def _write_outbox(self) -> None:
        count = len(self._outbox)
        counter = await self._store._coll(_COUNTERS).find_one_and_update(
            {"_id": _OUTBOX_COUNTER},
            {"$inc": {"seq": count}},
            upsert=True,
            return_document=ReturnDocument.AFTER,
            session=self._session,
        )
        if counter is None:
            raise RuntimeError("the outbox counter upsert returned nothing")
        first = int(counter["seq"]) - count + 1
        docs = [{"_id": first + i, **entry} for i, entry in enumerate(self._outbox)]
        await self._store._coll(_OUTBOX).insert_many(docs, ordered=True, session=self._session)

    async def _write(self, operation: Awaitable[T], what: str) -> T:
        """Run one write; a duplicate key the server found has aborted the whole transaction."""
        try:
            return await operation
        except (MongoDuplicateKeyError, BulkWriteError) as exc:
            if not _is_duplicate(exc):
                raise
            self._doomed = exc
            self._store._forget_unique(what)
            raise DuplicateKeyError(f"{what}: {exc}") from exc

    async def _check_unique(self, collection: str, docs: Sequence[Doc]) -> None:
        """Raise DuplicateKeyError before the server would: a failed write aborts a MongoDB transaction,
        while the port lets the caller catch the error and go on, as SQLite does.

        One indexed query per unique key and prefix group (``{prefix..., last: {"$in": [...]}}``), never an
        ``$or`` across keys: some MongoDB-protocol servers answer an ``$or`` with a collection scan."""
        keys: list[tuple[str, ...]] = [("_id",), *await self._store._unique_keys(collection)]
        for fields in keys:
            seen: set[str] = set()
            groups: dict[str, tuple[dict[str, Any], list[Any]]] = {}
            for doc in docs:
                values = tuple(get_path(doc, f) for f in fields)
                if repr(values) in seen:
                    raise DuplicateKeyError(f"{collection}: {dict(zip(fields, values, strict=True))} twice")
                seen.add(repr(values))
                prefix = dict(zip(fields[:-1], values[:-1], strict=True))
                groups.setdefault(repr(values[:-1]), (prefix, []))[1].append(values[-1])
            for prefix, last_values in groups.values():
                query = {**prefix, fields[-1]: {"$in": last_values}}
                hit = await self._store._coll(collection).find_one(
                    query, projection={"_id": 1}, session=self._session
                )
                if hit is not None:
                    raise DuplicateKeyError(f"{collection}: {hit['_id']!r} collides with an existing document")

    # -- Reader ---------------------------------------------------------------------------------------

    async def find_one(self, collection: str, filter: Filter) -> Doc | None:
        coll, query = self._store._coll(collection), _query(filter)
        return await self._do(lambda: coll.find_one(query, session=self._session))

    async def find(
        self, collection: str, filter: Filter, *, sort: Sort = (), limit: int | None = None, skip: int = 0
    ) -> list[Doc]:
        if limit == 0:
            return []
        coll, query, order = self._store._coll(collection), _query(filter), _sort(sort)

        async def run() -> list[Doc]:
            cursor = coll.find(query, sort=order or None, skip=skip, limit=limit or 0, session=self._session)
            return await cursor.to_list()

        return await self._do(run)

    async def count(self, collection: str, filter: Filter) -> int:
        coll, query = self._store._coll(collection), _query(filter)
        return await self._do(lambda: coll.count_documents(query, session=self._session))

    # -- writes ---------------------------------------------------------------------------------------

    async def insert(self, collection: str, doc: Doc) -> None:
        await self.insert_many(collection, [doc])

    async def insert_many(self, collection: str, docs: Sequence[Doc]) -> None:
        if not docs:
            return
        if any("_id" not in doc for doc in docs):
            raise ValueError("every document needs an _id")
        coll, batch = await self._store._ensure_collection(collection), [dict(doc) for doc in docs]

        async def run() -> None:
            await self._check_unique(collection, batch)
            await self._write(coll.insert_many(batch, ordered=True, session=self._session), collection)

        await self._do(run)

    async def update_one(
        self,
        collection: str,
        filter: Filter,
        *,
        set: Mapping[str, Any] | None = None,
        inc: Mapping[str, float] | None = None,
        upsert: bool = False,
    ) -> bool:
        query, update = _query(filter), _update(set, inc)
        coll = await self._store._ensure_collection(collection) if upsert else self._store._coll(collection)
        if not update:
            # MongoDB refuses an empty update; the effect is "make sure it exists".
            found = await self.find_one(collection, filter) is not None
            if found or not upsert:
                return found
            seed = upsert_seed(filter)
            seed.setdefault("_id", new_id())
            await self.insert(collection, seed)
            return True
        if upsert and not _is_equality(query.get("_id")):
            update["$setOnInsert"] = {"_id": new_id()}  # string ids, as SQLite makes them; never ObjectIds

        async def run() -> bool:
            write = coll.update_one(query, update, upsert=upsert, session=self._session)
            result = await self._write(write, collection)
            return result.matched_count > 0 or result.upserted_id is not None

        return await self._do(run)

    async def find_one_and_update(
        self,
        collection: str,
        filter: Filter,
        *,
        sort: Sort = (),
        set: Mapping[str, Any] | None = None,
        inc: Mapping[str, float] | None = None,
    ) -> Doc | None:
        update = _update(set, inc)
        if not update:
            docs = await self.find(collection, filter, sort=sort, limit=1)
            return docs[0] if docs else None
        coll, query, order = self._store._coll(collection), _query(filter), _sort(sort)

        async def run() -> Doc | None:
            return await self._write(
                coll.find_one_and_update(
                    query, update, sort=order or None, return_document=ReturnDocument.AFTER, session=self._session
                ),
                collection,
            )

        return await self._do(run)

    async def delete_many(self, collection: str, filter: Filter) -> int:
        coll, query = self._store._coll(collection), _query(filter)

        async def run() -> int:
            return (await coll.delete_many(query, session=self._session)).deleted_count

        return await self._do(run)

    async def claim_event(self, consumer: str, event_id: str) -> bool:
        # An upsert, not an insert: a duplicate insert would abort the whole transaction, and a batch of
        # events must go on past one that was already processed.
        coll, key = await self._store._ensure_collection(_INBOX), f"{consumer}:{event_id}"
        record = {"consumer": consumer, "event_id": event_id}

        async def run() -> bool:
            result = await coll.update_one(
                {"_id": key},
                {"$setOnInsert": {**record, "processed_at": datetime.now(UTC)}},
                upsert=True,
                session=self._session,
            )
            return result.upserted_id is not None

        return await self._do(run)

    async def add_outbox(
        self, topic: str, key: str | None, value: bytes, headers: Sequence[tuple[str, bytes]] = ()
    ) -> None:
        self._check_usable()
        self._outbox.append(
            {"topic": topic, "key": key, "value": bytes(value), "headers": [[h, bytes(v)] for h, v in headers]}
        )


def _is_equality(cond: Any) -> bool:
    return cond is not None and not isinstance(cond, Mapping)


class MongoStore:
    """A service's store in one MongoDB database (``url`` must reach a replica set)."""

    def __init__(self, url: str, database: str, *, ready_timeout_s: float = 2.0, **client_options: Any) -> None:
        self._url = url
        self._database_name = database
        self._ready_timeout_s = ready_timeout_s
        self._client_options = client_options
        self._client: AsyncMongoClient[Doc] | None = None
        self._db: AsyncDatabase[Doc] | None = None
        self._unique: dict[str, tuple[float, list[tuple[str, ...]]]] = {}
        self._collections: set[str] = set()
        self._outbox_lock = asyncio.Lock()
        self.outbox_signal = asyncio.Event()

    @property
    def database(self) -> AsyncDatabase[Doc]:
        if self._db is None:
            raise RuntimeError("store not started")
        return self._db

    async def start(self) -> None:
        # Keyword arguments win over the URL's options: a URL cannot weaken majority writes and reads.
        client: AsyncMongoClient[Doc] = AsyncMongoClient(
            self._url,
            **{
                "tz_aware": True,
                "appname": "labelgate",
                **self._client_options,
                "w": "majority",
                "readConcernLevel": "majority",
            },
        )
        self._client = client
        self._db = client.get_database(self._database_name)
        try:
            await client.admin.command("ping")
            for name in (_INBOX, _OUTBOX, _COUNTERS):
                await self._ensure_collection(name)
            await self._coll(_COUNTERS).update_one(
                {"_id": _OUTBOX_COUNTER}, {"$setOnInsert": {"seq": 0}}, upsert=True
            )
        except MongoDuplicateKeyError:
            pass  # another process created the counter at the same moment
        except PyMongoError as exc:
            await self.stop()
            _raise_translated(exc, f"mongo store {self._database_name}")

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.close()
        self._client = self._db = None

    async def ready(self) -> bool:
        if self._client is None:
            return False
        try:
            await asyncio.wait_for(self._client.admin.command("ping"), self._ready_timeout_s)
        except (PyMongoError, TimeoutError):
            return False
        return True

    def _coll(self, collection: str) -> AsyncCollection[Doc]:
        return self.database.get_collection(check_field(collection))

    async def _ensure_collection(self, collection: str) -> AsyncCollection[Doc]:
        """The collection, created outside any transaction if it is new: a collection that a transaction
        creates makes every other transaction that writes to it conflict until the first one commits."""
        coll = self._coll(collection)
        if collection not in self._collections:
            try:
                await self.database.create_collection(collection, check_exists=False)
            except OperationFailure as exc:
                if exc.code != _NAMESPACE_EXISTS:
                    _raise_translated(exc, f"create {collection}")
            self._collections.add(collection)
        return coll

    async def _unique_keys(self, collection: str) -> list[tuple[str, ...]]:
        cached = self._unique.get(collection)
        if cached is not None and time.monotonic() - cached[0] < _UNIQUE_CACHE_S:
            return cached[1]
        # listIndexes may not run inside a transaction; it runs beside it, without the session.
        keys = [
            tuple(index["key"])
            async for index in await self._coll(collection).list_indexes()
            if index.get("unique") and tuple(index["key"]) != ("_id",)
        ]
        self._unique[collection] = (time.monotonic(), keys)
        return keys

    def _forget_unique(self, collection: str) -> None:
        self._unique.pop(collection, None)

    async def ensure_indexes(self, collection: str, indexes: Sequence[Index]) -> None:
        coll = self._coll(collection)
        try:
            for index in indexes:
                keys = [(check_field(f), ASCENDING) for f in index.fields]
                await coll.create_index(keys, name=index.name, unique=index.unique)
        except PyMongoError as exc:
            _raise_translated(exc, f"indexes of {collection}")
        self._forget_unique(collection)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[MongoTransaction]:
        client = self._client
        if client is None:
            raise RuntimeError("store not started")
        async with client.start_session() as session:
            tx = MongoTransaction(self, session)
            await tx._begin()
            try:
                yield tx
            except BaseException:
                with suppress(PyMongoError):
                    if session.in_transaction:
                        await session.abort_transaction()
                raise
            wrote_outbox = await tx._commit()
        if wrote_outbox:
            self.outbox_signal.set()

    # -- Reader, outside transactions: majority read concern ------------------------------------------

    async def find_one(self, collection: str, filter: Filter) -> Doc | None:
        try:
            return await self._coll(collection).find_one(_query(filter))
        except PyMongoError as exc:
            _raise_translated(exc, f"find_one in {collection}")

    async def find(
        self, collection: str, filter: Filter, *, sort: Sort = (), limit: int | None = None, skip: int = 0
    ) -> list[Doc]:
        if limit == 0:
            return []
        query, order = _query(filter), _sort(sort)
        cursor = self._coll(collection).find(query, sort=order or None, skip=skip, limit=limit or 0)
        try:
            return await cursor.to_list()
        except PyMongoError as exc:
            _raise_translated(exc, f"find in {collection}")

    async def count(self, collection: str, filter: Filter) -> int:
        try:
            return await self._coll(collection).count_documents(_query(filter))
        except PyMongoError as exc:
            _raise_translated(exc, f"count in {collection}")

    async def stream(
        self, collection: str, filter: Filter, *, sort: Sort = (), batch_size: int = 1000
    ) -> AsyncIterator[Doc]:
        order = _sort(sort)
        if all(field != "_id" for field, _ in order):
            order.append(("_id", ASCENDING))  # a total order, as the SQLite store gives
        cursor = self._coll(collection).find(_query(filter), sort=order, batch_size=batch_size)
        try:
            async for doc in cursor:
                yield doc
        except PyMongoError as exc:
            _raise_translated(exc, f"stream of {collection}")
        finally:
            await cursor.close()

    # -- outbox ---------------------------------------------------------------------------------------

    async def outbox_pending(self, limit: int = 500) -> list[OutboxEntry]:
        try:
            docs = await self._coll(_OUTBOX).find({}, sort=[("_id", ASCENDING)], limit=limit).to_list()
        except PyMongoError as exc:
            _raise_translated(exc, "outbox_pending")
        return [
            OutboxEntry(
                seq=int(doc["_id"]),
                topic=doc["topic"],
                key=doc["key"],
                value=bytes(doc["value"]),
                headers=tuple((str(h), bytes(v)) for h, v in doc["headers"]),
            )
            for doc in docs
        ]

    async def outbox_done(self, seqs: Sequence[int]) -> None:
        if not seqs:
            return
        try:
            await self._coll(_OUTBOX).delete_many({"_id": {"$in": list(seqs)}})
        except PyMongoError as exc:
            _raise_translated(exc, "outbox_done")
