# ruff: noqa: S101  (a test suite: its checks are asserts)
"""The store port's contract: one abstract test suite that every ``Store`` adapter must pass.

Subclass :class:`StoreContract` in a test module and provide one fixture, ``store_factory``: an async callable
that returns a new, *started* store. Every call within one test must reach the same data (the same file, the
same database), which is how the suite simulates a restarted process (``StoreHarness.reopen``); each test
should get a store of its own (a fresh file, a fresh database name), because the inbox and the outbox are
per store. An adapter that keeps nothing across clients sets ``durable = False``. Collection and consumer
names carry a uuid suffix anyway, so a shared database does no harm to the collection tests.

SQLite (``tests/core/test_store_sqlite.py``)::

    class TestSqliteStore(StoreContract):
        @pytest.fixture
        def store_factory(self, tmp_path: Path) -> StoreFactory:
            async def open_store() -> Store:
                store = SqliteStore(tmp_path / "store.db")
                await store.start()
                return store

            return open_store

MongoDB, against the session's server (the ``mongo_url`` fixture of ``tests/conftest.py``)::

    pytestmark = [pytest.mark.integration]

    class TestMongoStore(StoreContract):
        @pytest.fixture
        def store_factory(self, mongo_url: str) -> StoreFactory:
            database = f"lgtest_{uuid.uuid4().hex[:12]}"

            async def open_store() -> Store:
                store = MongoStore(mongo_url, database)
                await store.start()
                return store

            return open_store

The subclass inherits the ``contract`` marker; a module-level ``pytestmark`` adds its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import ClassVar

import pytest

from ..store.port import Doc, DuplicateKeyError, Filter, Index, Store

StoreFactory = Callable[[], Awaitable[Store]]
"""Returns a new, started client of the store under test; every call in one test reaches the same data."""


class StoreHarness:
    """The stores one test opened, and unique names. ``reopen`` stops the live store and opens a new client
    of the same data, as a restarted process would."""

    def __init__(self, factory: StoreFactory) -> None:
        self._factory = factory
        self._suffix = uuid.uuid4().hex[:12]
        self._stores: list[Store] = []
        self.store: Store | None = None

    def name(self, base: str) -> str:
        """A collection, consumer or topic name of this test alone."""
        return f"{base}_{self._suffix}"

    async def open(self) -> Store:
        self.store = await self._factory()
        self._stores.append(self.store)
        return self.store

    async def reopen(self) -> Store:
        if self.store is not None:
            self._stores.remove(self.store)
            await self.store.stop()
        return await self.open()

    async def close(self) -> None:
        for store in self._stores:
            with contextlib.suppress(Exception):
                await store.stop()
        self._stores = []


class Boom(Exception):
    """Raised inside a transaction to roll it back."""


async def seed(store: Store, collection: str, docs: Sequence[Doc]) -> None:
    async with store.transaction() as tx:
        await tx.insert_many(collection, [dict(d) for d in docs])


def ids(docs: Sequence[Doc]) -> list[str]:
    return [str(d["_id"]) for d in docs]


# Five documents with every kind of value a filter meets: numbers, strings, booleans, null, missing fields
# and nested objects.
SAMPLE: tuple[Doc, ...] = (
    {"_id": "a", "n": 1, "name": "alpha", "flag": True, "meta": {"lang": "en", "score": 0.9}, "opt": None},
    {"_id": "b", "n": 2, "name": "beta", "flag": False, "meta": {"lang": "de", "score": 0.5}},
    {"_id": "c", "n": 3, "name": "gamma", "flag": True, "meta": {"lang": "en", "score": 0.1}, "opt": "set"},
    {"_id": "d", "n": 4, "name": "delta", "meta": {"lang": "fr"}},
    {"_id": "e", "n": 5.5, "name": "epsilon", "flag": False, "opt": None},
)

FILTERS: list[tuple[str, Filter, str]] = [
    ("everything", {}, "abcde"),
    ("by _id", {"_id": "c"}, "c"),
    ("equal string", {"name": "beta"}, "b"),
    ("equal number", {"n": 3}, "c"),
    ("dotted field", {"meta.lang": "en"}, "ac"),
    ("true", {"flag": True}, "ac"),
    ("false", {"flag": False}, "be"),
    ("None matches null and missing", {"opt": None}, "abde"),
    ("$ne None", {"opt": {"$ne": None}}, "c"),
    ("$exists true, null included", {"opt": {"$exists": True}}, "ace"),
    ("$exists false", {"opt": {"$exists": False}}, "bd"),
    ("$exists on a dotted field", {"meta.score": {"$exists": False}}, "de"),
    ("$in", {"name": {"$in": ["alpha", "delta", "zeta"]}}, "ad"),
    ("$in on _id", {"_id": {"$in": ["a", "e"]}}, "ae"),
    ("$in empty", {"name": {"$in": []}}, ""),
    ("$ne", {"name": {"$ne": "alpha"}}, "bcde"),
    ("$ne matches missing", {"meta.lang": {"$ne": "en"}}, "bde"),
    ("$lt", {"n": {"$lt": 3}}, "ab"),
    ("$lte", {"n": {"$lte": 3}}, "abc"),
    ("$gt", {"n": {"$gt": 3}}, "de"),
    ("$gte with $lt", {"n": {"$gte": 3, "$lt": 5}}, "cd"),
    ("$gt on a dotted float", {"meta.score": {"$gt": 0.4}}, "ab"),
    ("$gte on strings", {"name": {"$gte": "delta"}}, "cde"),
    ("several fields", {"meta.lang": "en", "flag": True, "n": {"$gt": 1}}, "c"),
    ("no match", {"flag": True, "name": "beta"}, ""),
]


class StoreContract:
    """What every store adapter promises: Mongo-style filters, atomic transactions, an inbox and an outbox."""

    pytestmark: ClassVar[list[pytest.MarkDecorator]] = [pytest.mark.contract]

    durable: ClassVar[bool] = True
    """Whether a new client from ``store_factory`` sees what an earlier one committed."""

    @pytest.fixture
    def store_factory(self) -> StoreFactory:
        raise NotImplementedError("a StoreContract subclass provides the store_factory fixture")

    @pytest.fixture
    async def harness(self, store_factory: StoreFactory) -> AsyncIterator[StoreHarness]:
        harness = StoreHarness(store_factory)
        await harness.open()
        try:
            yield harness
        finally:
            await harness.close()

    @pytest.fixture
    def store(self, harness: StoreHarness) -> Store:
        assert harness.store is not None
        return harness.store

    @pytest.fixture
    def coll(self, harness: StoreHarness) -> str:
        return harness.name("docs")

    @pytest.fixture
    async def sample(self, store: Store, coll: str) -> str:
        await seed(store, coll, SAMPLE)
        return coll

    # -- reads ---------------------------------------------------------------------------------------------

    async def test_documents_come_back_as_they_went_in(self, store: Store, coll: str) -> None:
        doc: Doc = {
            "_id": "item-1",
            "text": "naïve café — 東京",
            "count": 3,
            "ratio": 0.25,
            "ok": True,
            "bad": False,
            "nothing": None,
            "labels": ["spam", "ham"],
            "spans": [{"start": 0, "end": 5, "label": "ORG"}],
            "nested": {"deeper": {"value": 1.5}},
        }
        await seed(store, coll, [doc])

        found = await store.find_one(coll, {"_id": "item-1"})

        assert found == doc
        assert found["ok"] is True
        assert found["bad"] is False
        assert isinstance(found["count"], int)
        assert await store.find_one(coll, {"_id": "missing"}) is None

    async def test_reading_a_collection_never_written_finds_nothing(self, store: Store, harness: StoreHarness) -> None:
        empty = harness.name("never")
        assert await store.find(empty, {}) == []
        assert await store.find_one(empty, {"_id": "x"}) is None
        assert await store.count(empty, {}) == 0
        assert [d async for d in store.stream(empty, {})] == []

    @pytest.mark.parametrize(("filter", "expected"), [(f, e) for _, f, e in FILTERS], ids=[n for n, _, _ in FILTERS])
    async def test_filters(self, store: Store, sample: str, filter: Filter, expected: str) -> None:
        assert sorted(ids(await store.find(sample, filter))) == list(expected)
        assert await store.count(sample, filter) == len(expected)
        one = await store.find_one(sample, filter)
        if expected:
            assert one is not None
            assert one["_id"] in expected
        else:
            assert one is None

    async def test_reads_inside_a_transaction_take_the_same_filters(self, store: Store, sample: str) -> None:
        async with store.transaction() as tx:
            for _, filter, expected in FILTERS:
                assert sorted(ids(await tx.find(sample, filter))) == list(expected), filter
                assert await tx.count(sample, filter) == len(expected), filter

    async def test_sort_limit_and_skip(self, store: Store, sample: str) -> None:
        assert ids(await store.find(sample, {}, sort=[("n", -1)])) == list("edcba")
        assert ids(await store.find(sample, {}, sort=[("name", 1)], limit=2, skip=1)) == ["b", "d"]
        assert ids(await store.find(sample, {}, sort=[("n", 1)], skip=3)) == ["d", "e"]
        assert ids(await store.find(sample, {"flag": True}, sort=[("n", -1)], limit=1)) == ["c"]
        # A missing field sorts before every value, as in MongoDB; later keys break ties.
        assert ids(await store.find(sample, {}, sort=[("meta.lang", 1), ("n", -1)])) == list("ebcad")
        assert ids(await store.find(sample, {}, sort=[("meta.score", -1)]))[:3] == list("abc")

    async def test_stream_yields_everything_across_batches(self, store: Store, coll: str) -> None:
        docs = [{"_id": f"d{i:03d}", "i": i, "even": i % 2 == 0} for i in range(25)]
        await seed(store, coll, docs)

        streamed = [d async for d in store.stream(coll, {}, sort=[("i", -1)], batch_size=10)]
        evens = [d async for d in store.stream(coll, {"even": True}, batch_size=4)]

        assert [d["i"] for d in streamed] == list(range(24, -1, -1))
        assert sorted(d["i"] for d in evens) == list(range(0, 25, 2))

    # -- writes --------------------------------------------------------------------------------------------

    async def test_update_one_sets_and_increments_one_document(self, store: Store, sample: str) -> None:
        async with store.transaction() as tx:
            assert await tx.update_one(sample, {"_id": "a"}, set={"name": "ALPHA", "meta.reviewed": True},
                                       inc={"n": 2, "meta.score": 0.05, "views": 1})
            assert await tx.update_one(sample, {"_id": "e"}, set={"meta.lang": "it"})
            assert not await tx.update_one(sample, {"_id": "zzz"}, set={"name": "ghost"})
            assert await tx.update_one(sample, {"flag": True}, set={"touched": True})

        a = await store.find_one(sample, {"_id": "a"})
        assert a is not None
        assert (a["name"], a["n"], a["views"]) == ("ALPHA", 3, 1)
        assert a["meta"]["lang"] == "en", "setting a dotted path keeps the siblings"
        assert a["meta"]["reviewed"] is True
        assert a["meta"]["score"] == pytest.approx(0.95)
        e = await store.find_one(sample, {"_id": "e"})
        assert e is not None
        assert e["meta"] == {"lang": "it"}, "a dotted set creates the missing object"
        assert await store.count(sample, {}) == 5, "no upsert without upsert=True"
        assert await store.count(sample, {"touched": True}) == 1, "update_one changes one document"

    async def test_upsert_inserts_from_the_filter_then_updates(self, store: Store, coll: str) -> None:
        key = {"project_id": "p1", "day": "2025-01-01", "label.name": "spam", "total": {"$gte": 0}}
        for _ in range(3):
            async with store.transaction() as tx:
                assert await tx.update_one(coll, key, inc={"total": 1, "cost": 0.5}, set={"seen": True},
                                           upsert=True)

        (doc,) = await store.find(coll, {})
        assert isinstance(doc["_id"], str)
        assert {k: v for k, v in doc.items() if k != "_id"} == {
            "project_id": "p1", "day": "2025-01-01", "label": {"name": "spam"}, "total": 3, "cost": 1.5,
            "seen": True,
        }

        async with store.transaction() as tx:
            assert await tx.update_one(coll, {"_id": "chosen"}, set={"x": 1}, upsert=True)
        assert await store.find_one(coll, {"_id": "chosen"}) == {"_id": "chosen", "x": 1}

    async def test_find_one_and_update_returns_the_first_in_sort_order_as_updated(
        self, store: Store, sample: str
    ) -> None:
        async with store.transaction() as tx:
            doc = await tx.find_one_and_update(
                sample, {"flag": False}, sort=[("n", -1)], set={"owner": "r1"}, inc={"n": 10}
            )
            none = await tx.find_one_and_update(sample, {"name": "nobody"}, set={"owner": "r1"})

        assert doc is not None
        assert (doc["_id"], doc["owner"], doc["n"]) == ("e", "r1", 15.5)
        assert none is None
        assert await store.count(sample, {"owner": "r1"}) == 1

    async def test_concurrent_claimers_never_lease_the_same_document(self, store: Store, coll: str) -> None:
        await seed(store, coll, [{"_id": f"task-{i}", "status": "queued", "priority": i} for i in range(10)])

        async def claim(reviewer: str) -> Doc | None:
            async with store.transaction() as tx:
                return await tx.find_one_and_update(
                    coll, {"status": "queued"}, sort=[("priority", -1)], set={"status": "leased", "owner": reviewer}
                )

        claims = await asyncio.gather(*(claim(f"r{i}") for i in range(15)))

        leased = [c for c in claims if c is not None]
        assert len(leased) == 10
        assert len({c["_id"] for c in leased}) == 10, "no task leased twice"
        assert sorted(c["priority"] for c in leased) == list(range(10))
        for c in leased:
            stored = await store.find_one(coll, {"_id": c["_id"]})
            assert stored is not None
            assert (stored["status"], stored["owner"]) == ("leased", c["owner"])
        assert claims.count(None) == 5

    async def test_delete_many_removes_what_matches(self, store: Store, sample: str) -> None:
        async with store.transaction() as tx:
            assert await tx.delete_many(sample, {"flag": True}) == 2
            assert await tx.delete_many(sample, {"name": "nobody"}) == 0

        assert sorted(ids(await store.find(sample, {}))) == ["b", "d", "e"]

        async with store.transaction() as tx:
            assert await tx.delete_many(sample, {}) == 3
        assert await store.count(sample, {}) == 0

    # -- unique keys ---------------------------------------------------------------------------------------

    async def test_a_second_document_with_the_same_id_is_refused(self, store: Store, coll: str) -> None:
        await seed(store, coll, [{"_id": "x", "v": 1}])

        with pytest.raises(DuplicateKeyError):
            await seed(store, coll, [{"_id": "x", "v": 2}])

        assert await store.find(coll, {}) == [{"_id": "x", "v": 1}]

    async def test_unique_indexes_refuse_duplicates(self, store: Store, coll: str) -> None:
        indexes = [Index(("project_id", "email"), unique=True), Index(("meta.hash",), unique=True), Index(("status",))]
        await store.ensure_indexes(coll, indexes)
        await store.ensure_indexes(coll, indexes)  # idempotent
        await seed(store, coll, [
            {"_id": "1", "project_id": "p1", "email": "a@x", "meta": {"hash": "h1"}, "status": "new"},
            {"_id": "2", "project_id": "p1", "email": "b@x", "meta": {"hash": "h2"}, "status": "new"},
            {"_id": "3", "project_id": "p2", "email": "a@x", "meta": {"hash": "h3"}, "status": "new"},
        ])

        with pytest.raises(DuplicateKeyError):
            await seed(store, coll, [{"_id": "4", "project_id": "p1", "email": "a@x", "meta": {"hash": "h4"}}])
        with pytest.raises(DuplicateKeyError):
            await seed(store, coll, [{"_id": "5", "project_id": "p3", "email": "c@x", "meta": {"hash": "h1"}}])
        with pytest.raises(DuplicateKeyError):
            async with store.transaction() as tx:
                await tx.update_one(coll, {"_id": "2"}, set={"email": "a@x"})

        assert sorted(ids(await store.find(coll, {}))) == ["1", "2", "3"]
        two = await store.find_one(coll, {"_id": "2"})
        assert two is not None
        assert two["email"] == "b@x"

    async def test_a_duplicate_in_insert_many_keeps_nothing_of_the_transaction(
        self, store: Store, harness: StoreHarness, coll: str
    ) -> None:
        await store.ensure_indexes(coll, [Index(("key",), unique=True)])
        await seed(store, coll, [{"_id": "old", "key": "k2"}])
        other = harness.name("other")
        consumer, topic = harness.name("consumer"), harness.name("topic")

        async def import_batch() -> None:
            async with store.transaction() as tx:
                await tx.insert(other, {"_id": "side-effect"})
                await tx.claim_event(consumer, "evt-1")
                await tx.add_outbox(topic, "k", b"v")
                await tx.insert_many(coll, [{"_id": f"n{i}", "key": f"k{i}"} for i in range(5)])

        with pytest.raises(DuplicateKeyError):
            await import_batch()

        assert ids(await store.find(coll, {})) == ["old"]
        assert await store.find(other, {}) == []
        assert [e for e in await store.outbox_pending(1000) if e.topic == topic] == []
        async with store.transaction() as tx:
            assert await tx.claim_event(consumer, "evt-1"), "the inbox record was rolled back too"

    async def test_a_caught_duplicate_leaves_nothing_of_its_write_and_the_transaction_goes_on(
        self, store: Store, coll: str
    ) -> None:
        await seed(store, coll, [{"_id": "taken"}])

        async with store.transaction() as tx:
            await tx.insert(coll, {"_id": "before"})
            with pytest.raises(DuplicateKeyError):
                await tx.insert_many(coll, [{"_id": "n1"}, {"_id": "n2"}, {"_id": "taken"}, {"_id": "n3"}])
            with pytest.raises(DuplicateKeyError):
                await tx.insert(coll, {"_id": "taken"})
            await tx.insert(coll, {"_id": "after"})

        assert sorted(ids(await store.find(coll, {}))) == ["after", "before", "taken"]

    # -- transactions --------------------------------------------------------------------------------------

    async def test_an_exception_rolls_back_every_effect(self, store: Store, harness: StoreHarness, sample: str) -> None:
        fresh = harness.name("fresh")
        consumer, topic = harness.name("consumer"), harness.name("topic")

        async def fail_halfway() -> None:
            async with store.transaction() as tx:
                await tx.insert(fresh, {"_id": "new"})
                await tx.insert(sample, {"_id": "f", "n": 6})
                await tx.update_one(sample, {"_id": "a"}, set={"name": "changed"}, inc={"n": 1})
                await tx.delete_many(sample, {"_id": "b"})
                await tx.find_one_and_update(sample, {"_id": "c"}, set={"owner": "r1"})
                assert await tx.claim_event(consumer, "evt-1")
                await tx.add_outbox(topic, "k", b"v")
                raise Boom

        with pytest.raises(Boom):
            await fail_halfway()

        assert await store.find(sample, {}, sort=[("_id", 1)]) == list(SAMPLE)
        assert await store.find(fresh, {}) == []
        assert [e for e in await store.outbox_pending(1000) if e.topic == topic] == []
        async with store.transaction() as tx:
            assert await tx.claim_event(consumer, "evt-1")
            await tx.insert(fresh, {"_id": "new"})  # the collection is still usable after the rollback
        assert ids(await store.find(fresh, {})) == ["new"]

    async def test_writes_are_seen_inside_their_transaction_and_outside_only_after_commit(
        self, store: Store, coll: str
    ) -> None:
        async with store.transaction() as tx:
            await tx.insert(coll, {"_id": "x", "v": 1})
            await tx.update_one(coll, {"_id": "x"}, inc={"v": 1})
            assert await tx.find_one(coll, {"_id": "x"}) == {"_id": "x", "v": 2}
            assert await tx.count(coll, {"v": 2}) == 1
            assert await store.find_one(coll, {"_id": "x"}) is None, "no dirty reads"

        assert await store.find_one(coll, {"_id": "x"}) == {"_id": "x", "v": 2}

    async def test_claim_event_is_true_once_per_consumer_and_event(self, store: Store, harness: StoreHarness) -> None:
        labeler, router = harness.name("labeler"), harness.name("router")
        async with store.transaction() as tx:
            assert await tx.claim_event(labeler, "evt-1")
            assert not await tx.claim_event(labeler, "evt-1")
        async with store.transaction() as tx:
            assert not await tx.claim_event(labeler, "evt-1")
            assert await tx.claim_event(router, "evt-1")
            assert await tx.claim_event(labeler, "evt-2")

    # -- outbox --------------------------------------------------------------------------------------------

    async def test_outbox_entries_come_out_in_order_until_done(self, store: Store, harness: StoreHarness) -> None:
        topic = harness.name("topic")
        headers = (("event_id", b"e1"), ("raw", b"\x00\xff"))
        async with store.transaction() as tx:
            await tx.add_outbox(topic, "item-1", b"first", headers)
            await tx.add_outbox(topic, None, b"second")
        async with store.transaction() as tx:
            await tx.add_outbox(topic, "item-1", b"third", [("n", b"3")])

        pending = [e for e in await store.outbox_pending(1000) if e.topic == topic]
        assert [(e.key, e.value, tuple(e.headers)) for e in pending] == [
            ("item-1", b"first", headers), (None, b"second", ()), ("item-1", b"third", (("n", b"3"),)),
        ]
        assert [e.seq for e in pending] == sorted(e.seq for e in pending)
        assert len(await store.outbox_pending(2)) == 2

        await store.outbox_done([pending[0].seq, pending[1].seq])
        await store.outbox_done([])
        assert [e.value for e in await store.outbox_pending(1000) if e.topic == topic] == [b"third"]

    async def test_the_outbox_signal_is_set_after_a_commit_that_wrote_the_outbox(
        self, store: Store, harness: StoreHarness
    ) -> None:
        store.outbox_signal.clear()
        async with store.transaction() as tx:
            await tx.add_outbox(harness.name("topic"), "k", b"v")

        assert store.outbox_signal.is_set()

    async def test_ready_while_started(self, store: Store) -> None:
        assert await store.ready()

    # -- a restarted process -------------------------------------------------------------------------------

    async def test_everything_committed_survives_a_reopen(
        self, harness: StoreHarness, store: Store, sample: str
    ) -> None:
        if not self.durable:
            pytest.skip("this adapter keeps nothing across clients")
        unique = harness.name("unique")
        consumer, topic = harness.name("consumer"), harness.name("topic")
        await store.ensure_indexes(unique, [Index(("email",), unique=True)])
        async with store.transaction() as tx:
            await tx.insert(unique, {"_id": "1", "email": "a@x"})
            await tx.claim_event(consumer, "evt-1")
            await tx.add_outbox(topic, "k", b"v")

        store = await harness.reopen()

        assert await store.find(sample, {}, sort=[("_id", 1)]) == list(SAMPLE)
        assert [e.value for e in await store.outbox_pending(1000) if e.topic == topic] == [b"v"]
        async with store.transaction() as tx:
            assert not await tx.claim_event(consumer, "evt-1")
        with pytest.raises(DuplicateKeyError):
            await seed(store, unique, [{"_id": "2", "email": "a@x"}])
