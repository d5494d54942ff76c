"""The embedded store: SQLite in WAL mode through aiosqlite, one JSON document per row.

One writer connection serialises transactions (SQLite allows one writer at a time anyway); a second
connection serves reads outside transactions, which WAL lets run beside the writer."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

from ..events import new_id
from .documents import apply_update, check_field, upsert_seed
from .port import Doc, DuplicateKeyError, Filter, Index, OutboxEntry, Sort


def _expr(field: str) -> str:
    if field == "_id":
        return "id"
    return f"json_extract(doc, '$.{check_field(field)}')"


def _scalar(value: Any) -> Any:
    if isinstance(value, (dict, list, tuple)):
        raise ValueError("filters compare scalars only")
    return value


def _where(filter: Filter) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    for field, cond in filter.items():
        expr = _expr(field)
        if isinstance(cond, Mapping):
            for op, value in cond.items():
                if op == "$in":
                    values = [_scalar(v) for v in value]
                    if not values:
                        clauses.append("0")
                    else:
                        clauses.append(f"{expr} IN ({','.join('?' * len(values))})")
                        params.extend(values)
                elif op == "$ne":
                    if value is None:
                        clauses.append(f"{expr} IS NOT NULL")
                    else:
                        clauses.append(f"({expr} IS NULL OR {expr} != ?)")
                        params.append(_scalar(value))
                elif op in ("$lt", "$lte", "$gt", "$gte"):
                    sym = {"$lt": "<", "$lte": "<=", "$gt": ">", "$gte": ">="}[op]
                    clauses.append(f"{expr} {sym} ?")
                    params.append(_scalar(value))
                elif op == "$exists":
                    json_type = "id" if field == "_id" else f"json_type(doc, '$.{field}')"
                    clauses.append(f"{json_type} IS {'NOT ' if value else ''}NULL")
                else:
                    raise ValueError(f"unsupported filter operator {op!r}")
        elif cond is None:
            clauses.append(f"{expr} IS NULL")
        else:
            clauses.append(f"{expr} = ?")
            params.append(_scalar(cond))
    return (" AND ".join(clauses) or "1"), params


def _order(sort: Sort) -> str:
    if not sort:
        return ""
    return " ORDER BY " + ", ".join(f"{_expr(f)} {'DESC' if d < 0 else 'ASC'}" for f, d in sort)


def _table(collection: str) -> str:
    return "c_" + check_field(collection).replace(".", "_")


def _load(doc_json: str) -> Doc:
    doc: Doc = json.loads(doc_json)
    return doc


class _Queries:
    """Reads, against whichever connection the caller holds."""

    def __init__(self, store: SqliteStore, conn: aiosqlite.Connection) -> None:
        self._store = store
        self._conn = conn

    async def _has_table(self, collection: str) -> bool:
        """Whether the collection's table exists as this connection sees it. Reads outside a transaction
        never create tables: they run on the reader connection and must not write through the writer,
        which may be inside another task's transaction."""
        return await self._store._committed_table(collection)

    async def find(
        self, collection: str, filter: Filter, *, sort: Sort = (), limit: int | None = None, skip: int = 0
    ) -> list[Doc]:
        where, params = _where(filter)
        order = _order(sort)
        if not await self._has_table(collection):
            return []
        sql = f"SELECT doc FROM {_table(collection)} WHERE {where}{order}"  # noqa: S608
        if limit is not None or skip:
            sql += " LIMIT ? OFFSET ?"
            params += [-1 if limit is None else limit, skip]
        # One job on aiosqlite's thread: a cursor left open between jobs would pin an old read snapshot for
        # every other coroutine reading on this connection.
        return [_load(row[0]) for row in await self._conn.execute_fetchall(sql, params)]

    async def find_one(self, collection: str, filter: Filter) -> Doc | None:
        docs = await self.find(collection, filter, limit=1)
        return docs[0] if docs else None

    async def count(self, collection: str, filter: Filter) -> int:
        where, params = _where(filter)
        if not await self._has_table(collection):
            return 0
        sql = f"SELECT COUNT(*) FROM {_table(collection)} WHERE {where}"  # noqa: S608
        rows = list(await self._conn.execute_fetchall(sql, params))
        return int(rows[0][0]) if rows else 0


class SqliteTransaction(_Queries):
    def __init__(self, store: SqliteStore, conn: aiosqlite.Connection) -> None:
        super().__init__(store, conn)
        # Tables created inside this transaction exist only if it commits.
        self._new_tables: set[str] = set()
        self._outbox_written = False

    async def _has_table(self, collection: str) -> bool:
        await self._ensure_table(collection)
        return True

    async def _ensure_table(self, collection: str) -> None:
        if collection in self._new_tables or collection in self._store._tables:
            return
        await self._conn.execute(
            f"CREATE TABLE IF NOT EXISTS {_table(collection)} (id TEXT PRIMARY KEY, doc TEXT NOT NULL)"
        )
        self._new_tables.add(collection)

    async def insert(self, collection: str, doc: Doc) -> None:
        await self.insert_many(collection, [doc])

    async def insert_many(self, collection: str, docs: Sequence[Doc]) -> None:
        if not docs:
            return
        await self._ensure_table(collection)
        rows = [(str(d["_id"]), json.dumps(d, default=str)) for d in docs]
        # A savepoint, because a failing row aborts only itself: a caller who catches the DuplicateKeyError
        # must not find the rows before it inserted.
        await self._conn.execute("SAVEPOINT insert_many")
        try:
            await self._conn.executemany(
                f"INSERT INTO {_table(collection)} (id, doc) VALUES (?, ?)", rows  # noqa: S608
            )
        except sqlite3.IntegrityError as exc:
            await self._conn.execute("ROLLBACK TO insert_many")
            await self._conn.execute("RELEASE insert_many")
            raise DuplicateKeyError(f"{collection}: {exc}") from exc
        await self._conn.execute("RELEASE insert_many")

    async def _write(self, collection: str, doc: Doc, *, new: bool) -> None:
        table = _table(collection)
        try:
            if new:
                sql = f"INSERT INTO {table} (id, doc) VALUES (?, ?)"  # noqa: S608
                await self._conn.execute(sql, (str(doc["_id"]), json.dumps(doc, default=str)))
            else:
                sql = f"UPDATE {table} SET doc = ? WHERE id = ?"  # noqa: S608
                await self._conn.execute(sql, (json.dumps(doc, default=str), str(doc["_id"])))
        except sqlite3.IntegrityError as exc:
            raise DuplicateKeyError(f"{collection}: {exc}") from exc

    async def update_one(
        self,
        collection: str,
        filter: Filter,
        *,
        set: Mapping[str, Any] | None = None,
        inc: Mapping[str, float] | None = None,
        upsert: bool = False,
    ) -> bool:
        doc = await self.find_one(collection, filter)
        if doc is None:
            if not upsert:
                return False
            seed = upsert_seed(filter)
            seed.setdefault("_id", str(seed.get("_id") or new_id()))
            await self._write(collection, apply_update(seed, set, inc), new=True)
            return True
        await self._write(collection, apply_update(doc, set, inc), new=False)
        return True

    async def find_one_and_update(
        self,
        collection: str,
        filter: Filter,
        *,
        sort: Sort = (),
        set: Mapping[str, Any] | None = None,
        inc: Mapping[str, float] | None = None,
    ) -> Doc | None:
        docs = await self.find(collection, filter, sort=sort, limit=1)
        if not docs:
            return None
        doc = apply_update(docs[0], set, inc)
        await self._write(collection, doc, new=False)
        return doc

    async def delete_many(self, collection: str, filter: Filter) -> int:
        where, params = _where(filter)
        await self._ensure_table(collection)
        cursor = await self._conn.execute(f"DELETE FROM {_table(collection)} WHERE {where}", params)  # noqa: S608
        return cursor.rowcount

    async def claim_event(self, consumer: str, event_id: str) -> bool:
        cursor = await self._conn.execute(
            "INSERT OR IGNORE INTO _inbox (consumer, event_id, processed_at) VALUES (?, ?, ?)",
            (consumer, event_id, time.time()),
        )
        return cursor.rowcount == 1

    async def add_outbox(
        self, topic: str, key: str | None, value: bytes, headers: Sequence[tuple[str, bytes]] = ()
    ) -> None:
        await self._conn.execute(
            "INSERT INTO _outbox (topic, key, value, headers) VALUES (?, ?, ?, ?)",
            (topic, key, value, json.dumps([(h, v.hex()) for h, v in headers])),
        )
        self._outbox_written = True


class SqliteStore(_Queries):
    def __init__(self, path: Path | str) -> None:
        self._path = str(path)
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._tables: set[str] = set()
        self._lock = asyncio.Lock()
        self.outbox_signal = asyncio.Event()

    async def start(self) -> None:
        Path(self._path).parent.mkdir(parents=True, exist_ok=True)
        self._writer = await aiosqlite.connect(self._path, isolation_level=None)
        await self._writer.execute("PRAGMA journal_mode=WAL")
        await self._writer.execute("PRAGMA synchronous=NORMAL")
        await self._writer.execute("PRAGMA busy_timeout=10000")
        await self._writer.execute(
            "CREATE TABLE IF NOT EXISTS _inbox (consumer TEXT, event_id TEXT, processed_at REAL,"
            " PRIMARY KEY (consumer, event_id))"
        )
        await self._writer.execute(
            "CREATE TABLE IF NOT EXISTS _outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT,"
            " key TEXT, value BLOB, headers TEXT)"
        )
        self._reader = await aiosqlite.connect(self._path, isolation_level=None)
        await self._reader.execute("PRAGMA busy_timeout=10000")
        _Queries.__init__(self, self, self._reader)

    async def stop(self) -> None:
        for conn in (self._reader, self._writer):
            if conn is not None:
                await conn.close()
        self._reader = self._writer = None

    async def ready(self) -> bool:
        if self._reader is None:
            return False
        return bool(list(await self._reader.execute_fetchall("SELECT 1")))

    async def _committed_table(self, collection: str) -> bool:
        if collection in self._tables:
            return True
        if self._reader is None:
            raise RuntimeError("store not started")
        found = bool(list(await self._reader.execute_fetchall(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (_table(collection),)
        )))
        if found:
            self._tables.add(collection)
        return found

    async def ensure_indexes(self, collection: str, indexes: Sequence[Index]) -> None:
        """Create the collection and its indexes (idempotent). Not to be called inside a transaction."""
        async with self.transaction() as tx:
            await tx._ensure_table(collection)
            table = _table(collection)
            for index in indexes:
                columns = ", ".join(_expr(f) for f in index.fields)
                unique = "UNIQUE " if index.unique else ""
                await tx._conn.execute(
                    f"CREATE {unique}INDEX IF NOT EXISTS {table}_{index.name} ON {table} ({columns})"
                )

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[SqliteTransaction]:
        if self._writer is None:
            raise RuntimeError("store not started")
        writer = self._writer
        async with self._lock:
            await writer.execute("BEGIN IMMEDIATE")
            tx = SqliteTransaction(self, writer)
            try:
                yield tx
                await writer.execute("COMMIT")
            except BaseException:
                # A failed COMMIT leaves the transaction open; a failed statement may already have ended it.
                if writer.in_transaction:
                    await writer.execute("ROLLBACK")
                raise
            self._tables |= tx._new_tables
            if tx._outbox_written:
                self.outbox_signal.set()

    async def stream(
        self, collection: str, filter: Filter, *, sort: Sort = (), batch_size: int = 1000
    ) -> AsyncIterator[Doc]:
        skip = 0
        while True:
            batch = await self.find(collection, filter, sort=[*sort, ("_id", 1)], limit=batch_size, skip=skip)
            for doc in batch:
                yield doc
            if len(batch) < batch_size:
                return
            skip += batch_size

    async def outbox_pending(self, limit: int = 500) -> list[OutboxEntry]:
        if self._reader is None:
            raise RuntimeError("store not started")
        rows = await self._reader.execute_fetchall(
            "SELECT seq, topic, key, value, headers FROM _outbox ORDER BY seq LIMIT ?", (limit,)
        )
        return [
            OutboxEntry(seq, topic, key, bytes(value), tuple((h, bytes.fromhex(v)) for h, v in json.loads(hs)))
            for seq, topic, key, value, hs in rows
        ]

    async def outbox_done(self, seqs: Sequence[int]) -> None:
        if not seqs:
            return
        async with self.transaction() as tx:
            await tx._conn.execute(
                f"DELETE FROM _outbox WHERE seq IN ({','.join('?' * len(seqs))})", list(seqs)  # noqa: S608
            )
