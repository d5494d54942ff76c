"""The MongoDB store against a real MongoDB-protocol replica set (started once per session): what only MongoDB
has to get right (majority write concern, write conflicts between transactions, the outbox sequence under
concurrency, the transaction staying usable after a duplicate), beside the store contract."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from prometheus_client import REGISTRY
from pymongo import AsyncMongoClient

from labelgate_core.adapters import make_store
from labelgate_core.bus.memory import MemoryBus
from labelgate_core.consumer import EventConsumer, Handler, HandlerContext
from labelgate_core.errors import RetriableError
from labelgate_core.events import Event
from labelgate_core.outbox import OutboxRelay
from labelgate_core.settings import CoreSettings
from labelgate_core.store.mongo import MongoStore, MongoTransaction
from labelgate_core.store.port import DuplicateKeyError, Index, Store
from labelgate_core.testing.store_contract import StoreContract, StoreFactory
from labelgate_core.topics import ITEM_SUBMITTED

from .helpers import FAST_RETRY, eventually, lag, publish, read_topic, submitted

pytestmark = pytest.mark.contract


OpenStore = Callable[[], Awaitable[MongoStore]]


def database_name() -> str:
    return f"lgtest_{uuid.uuid4().hex[:16]}"


async def drop_database(mongo_url: str, name: str) -> None:
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(mongo_url)
    try:
        await client.drop_database(name)
    finally:
        await client.close()


class TestMongoStore(StoreContract):
    @pytest.fixture
    async def store_factory(self, mongo_url: str) -> AsyncIterator[StoreFactory]:
        name = database_name()

        async def open_one() -> Store:
            store = MongoStore(mongo_url, name)
            await store.start()
            return store

        yield open_one
        await drop_database(mongo_url, name)


@pytest.fixture
async def open_store(mongo_url: str) -> AsyncIterator[OpenStore]:
    """Opens started stores on one fresh database (several stores on it act as several processes); the
    database is dropped afterwards."""
    name = database_name()
    stores: list[MongoStore] = []

    async def open_one() -> MongoStore:
        store = MongoStore(mongo_url, name)
        await store.start()
        stores.append(store)
        return store

    yield open_one
    for store in stores:
        await store.stop()
    await drop_database(mongo_url, name)


@pytest.fixture
async def store(open_store: OpenStore) -> MongoStore:
    return await open_store()


def replays(outcome: str) -> float:
    return REGISTRY.get_sample_value("labelgate_store_transaction_replays_total", {"outcome": outcome}) or 0.0


async def with_retries(body: Callable[[], Awaitable[None]], attempts: int = 20) -> int:
    """Run ``body`` until it stops raising RetriableError, as the consumer runner does; returns the retries."""
    for retry in range(attempts):
        try:
            await body()
        except RetriableError:
            await asyncio.sleep(0.01)
            continue
        return retry
    raise AssertionError(f"still failing after {attempts} attempts")


# -- configuration -----------------------------------------------------------------------------------------


async def test_writes_and_reads_are_majority_even_when_the_url_asks_for_less(
    open_store: OpenStore, mongo_url: str
) -> None:
    weak_url = mongo_url + ("&" if "?" in mongo_url else "?") + "w=1&readConcernLevel=local"
    store = await open_store()
    weak = MongoStore(weak_url, store.database.name)
    await weak.start()
    try:
        for db in (store.database, weak.database):
            assert db.write_concern.document == {"w": "majority"}
            assert db.read_concern.level == "majority"
    finally:
        await weak.stop()


def test_settings_select_one_database_per_service() -> None:
    settings = CoreSettings(store="mongo", mongo_database_prefix="lg")
    store = make_store(settings, "router")
    assert isinstance(store, MongoStore)
    assert store._database_name == "lg_router"
    assert "mongodb://" not in repr(settings)  # the URL may hold credentials


# -- documents ---------------------------------------------------------------------------------------------


async def test_documents_come_back_as_they_were_given(store: MongoStore) -> None:
    doc = {"_id": "item-1", "project_id": "p", "n": 3, "ratio": 0.5, "tags": ["a", "b"], "meta": {"x": {"y": 1}}}
    async with store.transaction() as tx:
        await tx.insert("items", doc)
    assert await store.find_one("items", {"_id": "item-1"}) == doc
    assert await store.find_one("items", {"meta.x.y": 1}) == doc


async def test_an_upsert_without_an_id_makes_a_string_id(store: MongoStore) -> None:
    async with store.transaction() as tx:
        assert await tx.update_one("counts", {"project_id": "p"}, inc={"n": 2}, upsert=True)
        assert await tx.update_one("counts", {"project_id": "p"}, inc={"n": 1}, upsert=True)
    [doc] = await store.find("counts", {})
    assert isinstance(doc["_id"], str)
    assert doc["project_id"] == "p"
    assert doc["n"] == 3


async def test_find_one_and_update_takes_the_first_in_sort_order_and_returns_it_updated(store: MongoStore) -> None:
    async with store.transaction() as tx:
        await tx.insert_many("queue", [{"_id": f"t{i}", "priority": i, "lease": None} for i in range(3)])
        taken = await tx.find_one_and_update(
            "queue", {"lease": None}, sort=[("priority", -1)], set={"lease": "reviewer-1"}
        )
    assert taken == {"_id": "t2", "priority": 2, "lease": "reviewer-1"}


async def test_stream_reads_everything_in_batches_in_order(store: MongoStore) -> None:
    async with store.transaction() as tx:
        await tx.insert_many("items", [{"_id": f"i{i:03d}", "n": i % 7} for i in range(25)])
    streamed = [doc async for doc in store.stream("items", {"n": {"$ne": 0}}, sort=[("n", 1)], batch_size=4)]
    expected = sorted((d for d in await store.find("items", {}) if d["n"] != 0), key=lambda d: (d["n"], d["_id"]))
    assert streamed == expected


async def test_filters_outside_the_ports_subset_are_refused(store: MongoStore) -> None:
    with pytest.raises(ValueError, match="operator"):
        await store.find("items", {"n": {"$where": "1"}})
    with pytest.raises(ValueError, match="field"):
        await store.find("items", {"$or": [{"n": 1}]})


async def test_ensure_indexes_names_them_after_the_port(store: MongoStore) -> None:
    await store.ensure_indexes("reviews", [Index(("item_id", "reviewer_id"), unique=True), Index(("meta.at",))])
    names = {
        index["name"]: bool(index.get("unique"))
        async for index in await store.database["reviews"].list_indexes()
    }
    assert names["ix_item_id_reviewer_id_u"] is True
    assert names["ix_meta_at"] is False


# -- duplicates --------------------------------------------------------------------------------------------


async def test_a_caught_duplicate_leaves_the_transaction_usable(store: MongoStore) -> None:
    """MongoDB aborts a transaction whose write fails; the store finds the collision first, so a caller can
    catch DuplicateKeyError and go on, as with SQLite."""
    await store.ensure_indexes("reviews", [Index(("item_id", "reviewer_id"), unique=True)])
    async with store.transaction() as tx:
        await tx.insert("reviews", {"_id": "r1", "item_id": "i", "reviewer_id": "a"})
    async with store.transaction() as tx:
        with pytest.raises(DuplicateKeyError):
            await tx.insert("reviews", {"_id": "r1", "item_id": "j", "reviewer_id": "b"})
        with pytest.raises(DuplicateKeyError):
            await tx.insert("reviews", {"_id": "r2", "item_id": "i", "reviewer_id": "a"})
        with pytest.raises(DuplicateKeyError):
            await tx.insert_many("reviews", [{"_id": "r3", "item_id": "k"}, {"_id": "r3", "item_id": "l"}])
        await tx.insert("reviews", {"_id": "r4", "item_id": "i", "reviewer_id": "b"})
    assert sorted(d["_id"] for d in await store.find("reviews", {})) == ["r1", "r4"]


async def test_a_duplicate_the_server_finds_aborts_the_transaction(store: MongoStore) -> None:
    await store.ensure_indexes("reviews", [Index(("item_id", "reviewer_id"), unique=True)])
    async with store.transaction() as tx:
        await tx.insert_many(
            "reviews", [{"_id": "r1", "item_id": "i", "reviewer_id": "a"}, {"_id": "r2", "item_id": "i"}]
        )
    with pytest.raises(DuplicateKeyError):
        async with store.transaction() as tx:
            await tx.update_one("reviews", {"_id": "r2"}, set={"reviewer_id": "a"})
    caught: list[DuplicateKeyError] = []

    async def swallow_the_duplicate() -> None:
        async with store.transaction() as tx:
            await tx.insert("notes", {"_id": "n1"})
            try:
                await tx.update_one("reviews", {"_id": "r2"}, set={"reviewer_id": "a"})
            except DuplicateKeyError as exc:
                caught.append(exc)

    with pytest.raises(RetriableError):
        await swallow_the_duplicate()
    assert caught
    assert await store.count("notes", {}) == 0


async def test_claim_event_in_a_batch_goes_on_past_an_event_already_processed(store: MongoStore) -> None:
    async with store.transaction() as tx:
        assert await tx.claim_event("router.decide", "e1")
    async with store.transaction() as tx:
        assert await tx.claim_event("router.decide", "e2")
        assert not await tx.claim_event("router.decide", "e1")
        assert not await tx.claim_event("router.decide", "e2")
        assert await tx.claim_event("metrics.collect", "e1")
        await tx.insert("effects", {"_id": "of-e2"})
    assert await store.count("effects", {}) == 1
    assert await store.count("_inbox", {}) == 3


# -- outbox ------------------------------------------------------------------------------------------------


async def test_outbox_entries_come_out_in_commit_order_and_go_when_done(store: MongoStore) -> None:
    store.outbox_signal.clear()
    async with store.transaction() as tx:
        await tx.add_outbox("t", "k1", b"one", [("h", b"\x00\x01")])
        await tx.add_outbox("t", None, b"two")
    assert store.outbox_signal.is_set()
    async with store.transaction() as tx:
        await tx.add_outbox("t", "k1", b"three")
    pending = await store.outbox_pending()
    assert [(e.key, e.value) for e in pending] == [("k1", b"one"), (None, b"two"), ("k1", b"three")]
    assert pending[0].headers == (("h", b"\x00\x01"),)
    assert [e.seq for e in pending] == sorted(e.seq for e in pending)
    await store.outbox_done([e.seq for e in pending[:2]])
    assert [e.value for e in await store.outbox_pending()] == [b"three"]


async def test_a_rolled_back_transaction_leaves_no_outbox_and_no_signal(store: MongoStore) -> None:
    store.outbox_signal.clear()

    async def failing_handler() -> None:
        async with store.transaction() as tx:
            await tx.insert("items", {"_id": "i1"})
            await tx.add_outbox("t", "k", b"v")
            raise RuntimeError("handler failed")

    with pytest.raises(RuntimeError, match="handler failed"):
        await failing_handler()
    assert not store.outbox_signal.is_set()
    assert await store.outbox_pending() == []
    assert await store.count("items", {}) == 0


async def test_concurrent_outbox_writers_in_two_processes_all_commit_with_distinct_ordered_seqs(
    open_store: OpenStore,
) -> None:
    """Every outbox write increments one counter, so overlapping transactions conflict on it; the losers
    replay and commit without their callers noticing, and each transaction's entries stay together."""
    stores = [await open_store(), await open_store()]  # two clients: two processes, two in-process locks
    start = asyncio.Event()

    async def writer(store: MongoStore, name: str) -> None:
        async with store.transaction() as tx:
            await tx.insert("items", {"_id": name})
            await start.wait()
            for part in range(3):
                await tx.add_outbox("t", name, f"{name}/{part}".encode())

    tasks = [asyncio.create_task(writer(stores[i % 2], f"w{i}")) for i in range(8)]
    await asyncio.sleep(0.05)
    start.set()
    await asyncio.gather(*tasks)

    pending = await stores[0].outbox_pending()
    assert len(pending) == 24
    assert len({e.seq for e in pending}) == 24
    by_writer: dict[str | None, list[int]] = {}
    for entry in pending:
        by_writer.setdefault(entry.key, []).append(entry.seq)
        assert entry.value.decode().startswith(f"{entry.key}/")
    for seqs in by_writer.values():
        assert seqs == list(range(seqs[0], seqs[0] + 3))  # one transaction's entries are contiguous
    assert [e.value.decode().split("/")[1] for e in pending] == ["0", "1", "2"] * 8


# -- concurrency -------------------------------------------------------------------------------------------


async def test_two_read_modify_writes_of_one_document_lose_no_update(store: MongoStore) -> None:
    async with store.transaction() as tx:
        await tx.insert("counters", {"_id": "c", "n": 0})
    both_read = asyncio.Barrier(2)
    retried: list[int] = []

    async def bump() -> None:
        first = True

        async def body() -> None:
            nonlocal first
            async with store.transaction() as tx:
                doc = await tx.find_one("counters", {"_id": "c"})
                assert doc is not None
                if first:  # make the two transactions overlap: both read before either writes
                    first = False
                    await both_read.wait()
                await tx.update_one("counters", {"_id": "c"}, set={"n": doc["n"] + 1})

        retried.append(await with_retries(body))

    await asyncio.gather(bump(), bump())
    assert await store.find_one("counters", {"_id": "c"}) == {"_id": "c", "n": 2}
    assert sorted(retried)[-1] >= 1  # the loser saw RetriableError and ran its logic again


async def test_concurrent_blind_increments_replay_without_bothering_the_caller(store: MongoStore) -> None:
    async with store.transaction() as tx:
        await tx.insert("counters", {"_id": "c", "n": 0})
    started = asyncio.Barrier(5)
    replayed_before, changed_before = replays("replayed"), replays("changed")

    async def bump(i: int) -> None:
        async with store.transaction() as tx:
            await tx.insert("log", {"_id": f"l{i}"})
            await started.wait()
            await tx.update_one("counters", {"_id": "c"}, inc={"n": 1})

    await asyncio.gather(*(bump(i) for i in range(5)))
    assert await store.find_one("counters", {"_id": "c"}) == {"_id": "c", "n": 5}
    assert await store.count("log", {}) == 5
    assert replays("replayed") > replayed_before  # the conflicts did happen, and were absorbed
    assert replays("changed") == changed_before


async def test_two_handlers_racing_on_one_event_apply_its_effect_once(store: MongoStore) -> None:
    both_started = asyncio.Barrier(2)
    outcomes: list[bool] = []

    async def handle(name: str) -> None:
        first = True

        async def body() -> None:
            nonlocal first
            async with store.transaction() as tx:
                await tx.update_one("seen", {"_id": name}, inc={"runs": 1}, upsert=True)
                if first:  # both snapshots are taken before either claims
                    first = False
                    await both_started.wait()
                claimed = await tx.claim_event("g", "e1")
                if claimed:
                    await tx.update_one("effects", {"_id": "e1"}, inc={"applied": 1}, upsert=True)
            outcomes.append(claimed)

        await with_retries(body)

    await asyncio.gather(handle("h1"), handle("h2"))
    assert await store.find_one("effects", {"_id": "e1"}) == {"_id": "e1", "applied": 1}
    assert sorted(outcomes) == [False, True]  # what each handler committed
    assert [d["runs"] for d in await store.find("seen", {})] == [1, 1]


async def test_a_document_held_by_another_transaction_ends_in_retriable_error(
    store: MongoStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(MongoTransaction, "MAX_RESTARTS", 3)
    async with store.transaction() as tx:
        await tx.insert("counters", {"_id": "c", "n": 0})
    holding = asyncio.Event()
    release = asyncio.Event()

    async def holder() -> None:
        async with store.transaction() as tx:
            await tx.update_one("counters", {"_id": "c"}, inc={"n": 10})
            holding.set()
            await release.wait()

    task = asyncio.create_task(holder())
    await holding.wait()
    try:
        with pytest.raises(RetriableError, match="kept conflicting"):
            async with store.transaction() as tx:
                await tx.update_one("counters", {"_id": "c"}, inc={"n": 1})
    finally:
        release.set()
        await task
    assert await store.find_one("counters", {"_id": "c"}) == {"_id": "c", "n": 10}


async def test_ready_reports_a_stopped_store(open_store: OpenStore) -> None:
    store = await open_store()
    assert await store.ready()
    await store.stop()
    assert not await store.ready()


# -- with the consumer runner ------------------------------------------------------------------------------


@pytest.mark.integration
async def test_two_consumer_groups_apply_each_event_once_and_relay_what_they_emit(
    bus: MemoryBus, store: MongoStore
) -> None:
    """Two groups' batches write one aggregate document and the outbox at the same time: their transactions
    conflict, and still every event counts once per group and every emitted event is relayed once."""
    events = [submitted(f"item-{i}", f"text-{i}") for i in range(30)]
    await publish(bus, *events, *events[:10])  # the first ten are delivered twice
    groups = ["tests.alpha", "tests.beta"]

    def handler_for(group: str) -> Handler:
        async def handle(event: Event, ctx: HandlerContext) -> None:
            await ctx.tx.update_one("totals", {"_id": "all"}, inc={group.split(".")[1]: 1}, upsert=True)
            await ctx.tx.add_outbox("tests.out", event.key, f"{group}:{event.event_id}".encode())

        return handle

    stopping = asyncio.Event()
    consumers = [
        EventConsumer(
            bus=bus, store_transaction=store.transaction, group_id=group, handlers={ITEM_SUBMITTED: handler_for(group)},
            retry=FAST_RETRY, max_records=7, poll_timeout_s=0.05,
        )
        for group in groups
    ]
    tasks = [asyncio.create_task(consumer.run(stopping)) for consumer in consumers]

    async def drained() -> bool:
        return all(lag(bus, group, [ITEM_SUBMITTED]) == 0 for group in groups)

    try:
        await eventually(drained, timeout_s=30, what="both groups to commit everything")
    finally:
        stopping.set()
        await asyncio.gather(*tasks)

    assert await store.find_one("totals", {"_id": "all"}) == {"_id": "all", "alpha": 30, "beta": 30}
    assert await OutboxRelay(store, bus, service="tests").publish_pending() == 60
    assert await store.outbox_pending() == []
    values = [record.value.decode() for record in await read_topic(bus, "tests.out", 60)]
    assert sorted(values) == sorted(f"{g}:{e.event_id}" for g in groups for e in events)
