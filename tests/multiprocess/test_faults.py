"""Faults across the four processes on Kafka and MongoDB, each bounded in time: the router SIGKILLed again and
again while items flow, SIGTERM under load, a replay of the router's whole history, and the review API killed
between its store commit and the outbox publish. After each, every item has exactly one decision and exactly
one final label or queue entry, and nothing was applied twice.

``LABELGATE_CHAOS_ITEMS`` sets how many items flow while the router is killed (see ``KILL_ITEMS``)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable
from functools import partial

import pytest
from pymongo import AsyncMongoClient

from labelgate_client import LabelgateClient
from labelgate_core.topics import (
    DECISION_MADE,
    ITEM_SUBMITTED,
    LABEL_FINALIZED,
    LABEL_SCORED,
    REVIEW_SUBMITTED,
    dlq_topic,
)

from .observe import (
    Doc,
    Message,
    commit_offsets,
    committed,
    count_per,
    dump,
    end_offsets,
    find,
    group_members,
    metric,
    mongo,
    per_topic,
    read_events,
)
from .processes import GROUPS, Cluster
from .workload import (
    PATIENCE_S,
    Project,
    all_decided,
    all_final,
    corpus,
    create_project,
    review_queue,
    submit,
    until,
)

pytestmark = [pytest.mark.chaos, pytest.mark.slow]

KILL_ITEMS = int(os.environ.get("LABELGATE_CHAOS_ITEMS", "20000"))
"""Items that flow while the router is killed, as the issue asks. They are posted in ``KILLS`` chunks, one before
each kill, so that the kills spread over the whole flow. On this 2-core machine (which also runs the broker,
the MongoDB-protocol server and the four services) the test took 11 minutes with 20,000 items (642 s, the kills
spread over its first 404 s, while other tests ran beside it): a restart costs a process start and Kafka's 10 s
session timeout before the group hands the partitions over, and a router killed mid-batch leaves an open
transaction holding that batch's inbox records for 60 s (MongoDB's transaction lifetime), which its successor
waits out. Set ``LABELGATE_CHAOS_ITEMS`` lower for a quicker run."""
KILLS = 10
GRACE_S = 25.0
CLEAN_EXIT = (0, -signal.SIGTERM)
"""uvicorn raises SIGTERM again once its graceful shutdown is done."""
SEED = int(os.environ.get("LABELGATE_CHAOS_SEED", "20251128"))


def per_item(messages: Iterable[Message], project_id: str) -> tuple[dict[str, set[str]], Counter[str]]:
    """Per item of the project: the distinct event ids on the topic, and how many records carried them."""
    ids: dict[str, set[str]] = defaultdict(set)
    records: Counter[str] = Counter()
    for message in messages:
        if message.event.get("project_id") == project_id:
            ids[message.event["item_id"]].add(message.event_id)
            records[message.event["item_id"]] += 1
    return ids, records


async def dead_letters(cluster: Cluster, project_id: str, *topics: str) -> int:
    """Records of the project in the dead-letter topics of ``topics``."""
    found = 0
    for topic in topics:
        letters = await read_events(cluster.bootstrap, dlq_topic(topic), cluster.origin)
        found += sum(letter.event.get("project_id") == project_id for letter in letters)
    return found


async def assert_decided_once(cluster: Cluster, db: AsyncMongoClient[Doc], project: Project) -> Counter[str]:
    """Every item of ``project``: one decision in the router's store and one queue entry or final label in the
    review API's; no item of it dead-lettered. Returns, per item, the records of decision.made that carried
    its decision (more than one only when a relay published the same event again after a crash)."""
    ids = set(project.gold)
    scope = {"project_id": project.id}
    decisions = await count_per(db, cluster.database("router"), "decisions", "item_id", scope)
    tasks = await count_per(db, cluster.database("review-api"), "tasks", "item_id", scope)
    finals = await count_per(db, cluster.database("review-api"), "finals", "item_id", scope)
    reviews = await count_per(db, cluster.database("review-api"), "reviews", "item_id", scope)
    assert decisions == Counter(dict.fromkeys(ids, 1)), "one decision per item in the router's store"
    assert set(tasks) | set(finals) == ids, "every item queued or final"
    assert set(tasks.values()) | set(finals.values()) | set(reviews.values()) <= {1}, "nothing queued or final twice"
    unreviewed = ids - set(reviews)
    assert all(tasks[i] + finals[i] == 1 for i in unreviewed), "an item not reviewed: queued or final, not both"
    event_ids, records = per_item(await read_events(cluster.bootstrap, DECISION_MADE, cluster.origin), project.id)
    assert {item: len(found) for item, found in event_ids.items()} == dict.fromkeys(ids, 1), (
        "one decision.made event per item (a re-published one keeps its event id)"
    )
    assert await dead_letters(cluster, project.id, LABEL_SCORED, DECISION_MADE) == 0
    return records


DECISION_CHAIN = {"labeler.label": ITEM_SUBMITTED, "router.decide": LABEL_SCORED, "review-api.items": DECISION_MADE}
"""The consumer groups an item passes on its way to its decision, with the topic each reads."""


async def until_all_decided(
    cluster: Cluster, client: LabelgateClient, project: Project, what: str, stall_s: float = PATIENCE_S
) -> None:
    """Wait until every posted item has had its decision, however long a large backlog takes, as long as the
    pipeline moves: fail only when no group of the decision chain committed anything for ``stall_s``. Progress is
    read from Kafka (the groups' committed offsets), which costs the MongoDB-protocol server nothing; the review
    API's stats, counts over every item, are asked only once nothing waits on the chain's topics."""
    best, last_progress = -1, time.monotonic()
    while True:
        ends = await end_offsets(cluster.bootstrap, DECISION_CHAIN.values())
        consumed = lag = 0
        for group, topic in DECISION_CHAIN.items():
            done = await committed(cluster.bootstrap, group)
            for tp, end in ends.items():
                if tp[0] == topic:
                    at = done.get(tp, cluster.origin.get(tp, 0))
                    consumed, lag = consumed + at, lag + end - at
        if lag == 0 and await all_decided(client, project):
            return
        if consumed > best:
            best, last_progress = consumed, time.monotonic()
        elif time.monotonic() - last_progress > stall_s:
            raise AssertionError(f"nothing consumed for {stall_s:.0f} s waiting until {what} ({lag} records wait)")
        await asyncio.sleep(2.0)


# -- (1) the router killed ten times while items flow ------------------------------------------------------------


@pytest.mark.timeout(max(600, KILL_ITEMS // 8))
async def test_the_router_killed_ten_times_while_items_flow_decides_each_item_once(services: Cluster) -> None:
    """The items arrive in ten chunks, one before each kill. Each time the router is up again, its group has
    handed it the partitions and it has committed a batch, it is SIGKILLed at a random moment within a window:
    amid a batch, between its store commit and its offset commit or its outbox publish, wherever it is. The
    window shrinks when the router got a batch through before the kill and grows when it did not, so that the
    kills spread over all of those moments whatever the machine's speed."""
    rng = random.Random(SEED)
    router = services["router"]
    db = mongo(services.mongo_url)
    project_id = f"kill-router-{uuid.uuid4().hex[:6]}"
    items = corpus(KILL_ITEMS, seed=SEED, prefix=project_id)
    size = -(-KILL_ITEMS // KILLS)
    chunks = [items[i : i + size] for i in range(0, KILL_ITEMS, size)]
    window_s = 1.0
    started = time.monotonic()
    kills: list[tuple[float, int, int, int]] = []
    killed_members: set[str] = set()

    # Progress is read from the router's committed offsets: counting its decisions in the store, several times
    # a second, would load the MongoDB-protocol server the pipeline runs on.
    async def router_offsets() -> tuple[int, int]:
        """Records of label.scored the router has committed since the cluster started, and those it has not."""
        ends = await end_offsets(services.bootstrap, [LABEL_SCORED])
        done = await committed(services.bootstrap, "router.decide")
        origin = {tp: services.origin.get(tp, 0) for tp in ends}
        at = {tp: done.get(tp, origin[tp]) for tp in ends}
        return sum(at[tp] - origin[tp] for tp in ends), sum(end - at[tp] for tp, end in ends.items())

    async def router_committed_since(mark: int) -> bool:
        return (await router_offsets())[0] > mark

    async def router_owns_its_partitions() -> bool:
        state, members = await group_members(services.bootstrap, "router.decide")
        return state == "Stable" and bool(members) and not killed_members & set(members)

    async with LabelgateClient(services.url("review-api"), timeout=120.0) as client:
        project = await create_project(client, project_id)
        for _ in range(KILLS):
            if chunks:
                await submit(client, project, chunks.pop(0))
            await until(router_owns_its_partitions, "the (re)started router owns its partitions", timeout_s=120)
            mark, _ = await router_offsets()
            # A router killed mid-transaction holds its successor up to 60 s (see KILL_ITEMS).
            await until(partial(router_committed_since, mark), "the router commits after its restart", 150)
            before, _ = await router_offsets()
            await asyncio.sleep(rng.uniform(0.0, window_s))
            killed_members |= set((await group_members(services.bootstrap, "router.decide"))[1])
            router.kill()
            # The router is dead: what it committed can no longer change.
            at, lag = await router_offsets()
            router.spawn()
            kills.append((round(time.monotonic() - started, 1), at, len(project.gold), lag))
            assert lag > 0, f"kill {len(kills)} found nothing in flight"
            window_s = window_s * 0.6 if at > before else min(window_s * 1.3, 10.0)
        for chunk in chunks:
            await submit(client, project, chunk)
        await asyncio.to_thread(router.wait_ready)
        await until_all_decided(services, client, project, "every item is decided after the last restart")
    elapsed = time.monotonic() - started

    assert len(project.gold) == KILL_ITEMS
    records = await assert_decided_once(services, db, project)
    republished = sum(n - 1 for n in records.values())
    print(
        f"router SIGKILLed {len(kills)} times while {KILL_ITEMS} items flowed, at (s, records committed, items "
        f"posted, records not committed) {kills}; every item decided once in {elapsed:.0f} s; decision.made "
        f"records published twice: {republished}"
    )
    await db.close()


# -- (2) SIGTERM under load ---------------------------------------------------------------------------------------


async def test_sigterm_under_load_drains_and_commits_so_nothing_is_delivered_again(services: Cluster) -> None:
    """The labeler and the router stop gracefully while both have records in hand or waiting (a client keeps
    posting): each exits within the grace period, and once restarted neither sees again an event it had
    applied (its duplicate counter stays 0), while both carry on with the rest of the stream."""
    stopped = ("labeler", "router")
    db = mongo(services.mongo_url)
    decisions = db.get_database(services.database("router")).get_collection("decisions")
    project_id = f"sigterm-{uuid.uuid4().hex[:6]}"
    items = corpus(400, seed=SEED + 1, prefix=project_id)
    first, rest = items[:240], items[240:]

    async def lag(group: str, topic: str) -> int:
        ends = await end_offsets(services.bootstrap, [topic])
        done = await committed(services.bootstrap, group)
        return sum(end - done.get(tp, services.origin.get(tp, 0)) for tp, end in ends.items())

    async with LabelgateClient(services.url("review-api"), timeout=120.0) as client:
        project = await create_project(client, project_id)

        async def stream() -> None:
            for start in range(0, len(first), 10):
                await submit(client, project, first[start : start + 10])
                await asyncio.sleep(0.05)

        poster = asyncio.create_task(stream())
        while not (await lag("router.decide", LABEL_SCORED) > 0 and await lag("labeler.label", ITEM_SUBMITTED) > 0):
            assert not poster.done(), "the stream ended before the labeler and the router were both seen busy"
            await asyncio.sleep(0.02)
        outcomes = await asyncio.gather(*(asyncio.to_thread(services[s].terminate, 60.0) for s in stopped))
        at_stop = await decisions.count_documents({"project_id": project_id})
        for service, (code, seconds) in zip(stopped, outcomes, strict=True):
            assert code in CLEAN_EXIT, f"{service} exited with {code}:\n{services[service].log_tail()}"
            assert services[service].stopped_cleanly(), f"{service}:\n{services[service].log_tail()}"
            assert seconds <= GRACE_S, f"{service} took {seconds:.1f} s to drain and stop"

        await poster
        for service in stopped:
            services[service].spawn()
        for service in stopped:
            await asyncio.to_thread(services[service].wait_ready)
        await submit(client, project, rest)
        await until(lambda: all_decided(client, project), "every item is decided after the restart")

    await assert_decided_once(services, db, project)
    for service in stopped:
        url = services.url(service)
        for group in GROUPS[service]:
            duplicates = metric(url, "labelgate_consumer_events_total", group=group, result="duplicate")
            assert duplicates == 0, f"{group} was delivered again {duplicates:.0f} events it had applied"
        applied = sum(metric(url, "labelgate_consumer_events_total", group=g, result="ok") for g in GROUPS[service])
        assert applied > 0, f"the restarted {service} carried on with the stream"
    took = ", ".join(f"{s} stopped in {t:.1f} s" for s, (_, t) in zip(stopped, outcomes, strict=True))
    print(f"SIGTERM under load: {took}, with {at_stop} of 400 items decided; no redelivery after the restart")
    await db.close()


# -- (3) replaying the router's history ---------------------------------------------------------------------------


async def test_replaying_the_routers_whole_history_changes_nothing(services: Cluster) -> None:
    """The router's consumer groups are reset to the start of the cluster's history and the router reads it
    all again: every event is recognised as already applied, and neither its store nor the review API's
    changes."""
    db = mongo(services.mongo_url)
    router_topics = sorted({t for topics in GROUPS["router"].values() for t in topics})
    project_id = f"replay-{uuid.uuid4().hex[:6]}"
    async with LabelgateClient(services.url("review-api"), timeout=120.0) as client:
        # A history of its own (decisions and reviews), whatever ran before.
        project = await create_project(client, project_id)
        await submit(client, project, corpus(60, seed=SEED + 2, prefix=project_id))
        await until(lambda: all_final(client, project), "every item is reviewed and final")
    await until(partial(quiet, services, db), "every service has applied and published everything")

    before = {s: await dump(db, services.database(s)) for s in ("router", "review-api")}
    code, _ = await asyncio.to_thread(services["router"].terminate, 60.0)
    assert code in CLEAN_EXIT
    history = per_topic(await end_offsets(services.bootstrap, router_topics), router_topics)
    for group, topics in GROUPS["router"].items():
        await commit_offsets(services.bootstrap, group, per_topic(services.origin, topics))
    replayed = sum(end - services.origin.get(tp, 0) for tp, end in history.items())
    await asyncio.to_thread(services["router"].start)

    async def replayed_all() -> bool:
        for group, topics in GROUPS["router"].items():
            if per_topic(await committed(services.bootstrap, group), topics) != per_topic(history, topics):
                return False
        return True

    await until(replayed_all, "the router has read its whole history again")
    await until(partial(quiet, services, db), "nothing is left to apply or publish")
    after = {s: await dump(db, services.database(s)) for s in ("router", "review-api")}
    duplicates = sum(
        metric(services.url("router"), "labelgate_consumer_events_total", group=group, result="duplicate")
        for group in GROUPS["router"]
    )
    assert replayed > 0
    assert duplicates == replayed, "every replayed event was recognised as already applied"
    for service in before:
        assert after[service] == before[service], f"the replay changed {service}'s store"
    print(f"replay: {replayed} events read again by the router, {duplicates:.0f} recognised; stores unchanged")
    await db.close()


async def quiet(cluster: Cluster, db: AsyncMongoClient[Doc]) -> bool:
    """Every consumer group has committed the end of its topics, no service has an outbox entry left, and the
    router has fitted its calibrations to every outcome it recorded (a refit is deferred work, done on a timer
    and again by a restarted router that finds outcomes newer than its last fit)."""
    for groups in GROUPS.values():
        for group, topics in groups.items():
            ends = per_topic(await end_offsets(cluster.bootstrap, topics), topics)
            done = per_topic(await committed(cluster.bootstrap, group), topics)
            if any(done.get(tp, cluster.origin.get(tp, 0)) < end for tp, end in ends.items()):
                return False
    for service in GROUPS:
        if await find(db, cluster.database(service), "_outbox", {}):
            return False
    router = db.get_database(cluster.database("router"))
    fitted = {fit["_id"]: int(fit.get("n_outcomes", 0)) for fit in await find(db, router.name, "calibrations", {})}
    outcomes = router.get_collection("outcomes")
    for project_id in await outcomes.distinct("project_id"):
        if fitted.get(project_id, 0) < await outcomes.count_documents({"project_id": project_id}):
            return False
    return True


# -- (4) the review API killed between its commit and the outbox publish ------------------------------------------


async def test_reviews_committed_before_the_review_api_died_are_published_once(services: Cluster) -> None:
    """A reviewer works the queue. Now and then, the moment a review is answered (so just committed), the review
    API is frozen (SIGSTOP) and its outbox looked at; once a freeze finds review events committed and not yet
    published, the process is killed (SIGKILL) right there and restarted. Every committed review is then
    published, each under one event id, and applied downstream once. (One reviewer, so that no other request
    is inside a transaction at the kill: MongoDB keeps a killed process's open transaction, and the documents it
    wrote, for 60 s, and the review API answers 500 to the writes that meet it until then.)"""
    rng = random.Random(SEED + 3)
    review_api = services["review-api"]
    db = mongo(services.mongo_url)
    outbox = db.get_database(services.database("review-api")).get_collection("_outbox")
    project_id = f"kill-review-api-{uuid.uuid4().hex[:6]}"
    pending: list[Doc] = []
    freezes = 0
    on_topic: set[str] = set()

    async def freeze_right_after_a_review() -> None:
        nonlocal pending, freezes, on_topic
        if pending or rng.random() > 0.5:
            return
        review_api.send(signal.SIGSTOP)
        freezes += 1
        pending = await outbox.find({"topic": REVIEW_SUBMITTED}).to_list()
        if not pending:
            review_api.send(signal.SIGCONT)
            return
        review_api.kill()
        # A relay may have published an entry and died before marking it done: then it goes out twice.
        on_topic = {m.event_id for m in await read_events(services.bootstrap, REVIEW_SUBMITTED, services.origin)}
        review_api.spawn()

    async with LabelgateClient(services.url("review-api"), timeout=30.0) as client:
        project = await create_project(client, project_id)
        await submit(client, project, corpus(80, seed=SEED + 4, prefix=project_id))
        await until(lambda: all_decided(client, project), "every item is queued")
        await review_queue(client, project, reviewers=1, on_review=freeze_right_after_a_review)
        assert pending, f"no freeze in {freezes} found a review committed and not yet published"
        await asyncio.to_thread(review_api.wait_ready)
        await until(lambda: all_final(client, project), "every item is reviewed and final")
    committed_only = [doc for doc in pending if _event_id(doc) not in on_topic]

    scope = {"project_id": project_id}
    reviews = {doc["_id"]: doc for doc in await find(db, services.database("review-api"), "reviews", scope)}
    assert set(project.reviews) <= set(reviews)
    published: dict[str, set[str]] = defaultdict(set)
    records: Counter[str] = Counter()
    for message in await read_events(services.bootstrap, REVIEW_SUBMITTED, services.origin):
        if message.event.get("project_id") == project_id:
            published[message.event["review_id"]].add(message.event_id)
            records[message.event["review_id"]] += 1
    assert {r: len(ids) for r, ids in published.items()} == dict.fromkeys(reviews, 1), (
        "every committed review is published, under one event id"
    )
    twice = {_review_id(doc) for doc in pending if _event_id(doc) in on_topic}
    assert all(n == 1 or review in twice for review, n in records.items()), "published again only if it had gone out"
    for review in (_review_id(doc) for doc in committed_only):
        assert records[review] == 1, f"review {review}, committed before the kill, published once after the restart"
    finals, _ = per_item(await read_events(services.bootstrap, LABEL_FINALIZED, services.origin), project_id)
    assert {item: len(ids) for item, ids in finals.items()} == dict.fromkeys(project.gold, 1)
    examples = await count_per(db, services.database("labeler"), "examples", "item_id", {"project_id": project_id})
    assert examples == Counter(dict.fromkeys(project.gold, 1)), "the labeler learned each review once"
    print(
        f"review API frozen {freezes} times, killed with {len(pending)} review events in its outbox "
        f"({len(committed_only)} committed and not published, {len(twice)} published and not yet marked); "
        f"{len(reviews)} reviews, each published once; the reviewer saw {project.transport_errors} connection errors "
        f"and {project.server_errors} server errors"
    )
    await db.close()


def _event_id(doc: Doc) -> str:
    headers = {str(name): bytes(value) for name, value in doc["headers"]}
    return headers["event_id"].decode()


def _review_id(doc: Doc) -> str:
    return str(json.loads(bytes(doc["value"]))["review_id"])
