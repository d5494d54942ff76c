"""kill -9 of `labelgate run` mid-stream, then restart: every accepted item reaches a final label or the queue
exactly once.

A client posts a synthetic corpus in batches with idempotency keys while two reviewers work the queue; the
process is killed twice at seeded moments and restarted on the same data folder. The client retries whatever
it cannot know was accepted, then re-posts every batch; reviewers retry the review they were sending. Once
every item is final, the public API, the services' own SQLite files and the Prometheus counters must all tell
the same story: each item exists once, was decided once, reviewed at most once, and finalized once."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sqlite3
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TypeVar

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from labelgate_client import LabelgateAPIError, LabelgateClient
from labelgate_client.models import Item

from .conftest import PipelineFactory
from .procs import PipelineProcess
from .synthetic import make_items

pytestmark = [pytest.mark.e2e, pytest.mark.chaos, pytest.mark.slow, pytest.mark.timeout(240)]

T = TypeVar("T")

PROJECT = "chaos"
N_ITEMS = 1500
BATCH = 100
REVIEWERS = 2
LEASE_S = 10
"""Short, so that a lease granted just before a kill, whose answer never reached the reviewer, frees itself."""
BACKLOG = 150
"""The client waits until at most this many items are not final before its next batch: a stream, not one
burst, so that the model trains along the way and the kills land amid every kind of work."""
PATIENCE_S = 120.0
"""Longest wait for the pipeline to answer again, or to finish the work it has."""
ENV = {
    # Retrain often, so that a model exists after the first reviews and some items are auto-accepted.
    "LABELGATE_LABELER_RETRAIN_EVERY_REVIEWS": "20",
    "LABELGATE_LABELER_RETRAIN_INTERVAL_S": "2",
}
SEEDS = [int(os.environ["CHAOS_SEED"])] if os.environ.get("CHAOS_SEED") else [20250611]
"""Set CHAOS_SEED to replay a failing run's kill schedule."""


async def until_answered(call: Callable[[], Awaitable[T]], what: str) -> T:
    """What a client does when the server vanishes: try again until it answers (or patience runs out)."""
    deadline = time.monotonic() + PATIENCE_S
    while True:
        try:
            return await call()
        except httpx.TransportError as exc:
            if time.monotonic() > deadline:
                raise AssertionError(f"no answer to {what} for {PATIENCE_S:.0f}s: {exc!r}") from exc
            await asyncio.sleep(0.2)


async def eventually(check: Callable[[], Awaitable[bool]], what: str, timeout_s: float = PATIENCE_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting until {what}")
        await asyncio.sleep(0.2)


@dataclass
class Kill:
    after_batches: int
    delay_s: float


@dataclass
class Run:
    """What the clients saw, to compare with what the pipeline says."""

    seed: int
    kills: list[Kill]
    gold: dict[str, str]
    item_ids: dict[str, str] = field(default_factory=dict)
    """Idempotency key → the item id the API answered with."""
    batches_done: int = 0
    review_ids: set[str] = field(default_factory=set)
    """Reviews the reviewers got an answer for (a retried review answers with the review it recorded)."""
    lost_leases: int = 0
    reviewing: bool = True
    started: float = field(default_factory=time.monotonic)

    def say(self, message: str) -> None:
        print(f"[{time.monotonic() - self.started:6.1f}s] {self}: {message}")

    def __str__(self) -> str:
        kills = ", ".join(f"after batch {k.after_batches} + {k.delay_s:.2f}s" for k in self.kills)
        return f"seed {self.seed} (kills {kills})"

    def record(self, key: str, item_id: str) -> None:
        known = self.item_ids.setdefault(key, item_id)
        assert known == item_id, f"{self}: key {key} resolved to item {known}, then to {item_id}"


def kill_schedule(rng: random.Random, batches: int) -> list[Kill]:
    first = rng.randint(1, batches // 2 - 1)
    second = rng.randint(first + 2, batches - 2)
    return [Kill(first, rng.uniform(0.0, 0.5)), Kill(second, rng.uniform(0.0, 0.5))]


async def post_corpus(client: LabelgateClient, batches: list[list[dict[str, object]]], run: Run) -> None:
    """One pass over the corpus, each batch retried until answered, pausing while many items are not final."""
    for batch in batches:
        result = await until_answered(partial(client.submit_items, PROJECT, batch), "submit")
        for submitted in result.items:
            run.record(submitted.idempotency_key, submitted.item_id)
        run.batches_done += 1

        async def caught_up() -> bool:
            stats = await until_answered(lambda: client.stats(PROJECT), "stats")
            return stats.items - stats.final <= BACKLOG

        await eventually(caught_up, f"at most {BACKLOG} items are not final")


async def reviewer(url: str, name: str, run: Run) -> None:
    """Lease, review with the gold label, repeat. A review whose answer was lost is sent again under the
    same lease; a lease that expired meanwhile is someone else's task now."""
    async with LabelgateClient(url) as client:
        await review_until_told(client, name, run)


async def review_until_told(client: LabelgateClient, name: str, run: Run) -> None:
    while run.reviewing:
        try:
            task = await client.lease(PROJECT, name, lease_seconds=LEASE_S)
        except httpx.TransportError:
            await asyncio.sleep(0.2)
            continue
        if task is None:
            await asyncio.sleep(0.05)
            continue
        labels = [run.gold[str(task.metadata["key"])]]
        try:
            review = await until_answered(
                partial(client.review, PROJECT, task.task_id, task.lease_token, name, labels), "review"
            )
        except LabelgateAPIError as exc:
            if exc.status != 409:
                raise
            run.lost_leases += 1
            continue
        assert review.item_id == task.item_id
        run.review_ids.add(review.review_id)


async def chaos(pipeline: PipelineProcess, run: Run) -> None:
    for number, kill in enumerate(run.kills, start=1):
        while run.batches_done < kill.after_batches:
            await asyncio.sleep(0.01)
        await asyncio.sleep(kill.delay_s)
        pipeline.kill()
        run.say(f"kill {number} after {run.batches_done} batches, {len(run.review_ids)} reviews; restarting")
        await pipeline.start()
        run.say("ready again")


def scraped(text: str, sample_name: str, project: str) -> float:
    """The sum of a metric's samples of one project (over its other labels)."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == sample_name and sample.labels.get("project") == project
    )


def rows(db: Path, collection: str) -> list[dict[str, object]]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return [json.loads(doc) for (doc,) in conn.execute(f"SELECT doc FROM c_{collection}")]  # noqa: S608


def count(db: Path, sql: str) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return int(conn.execute(sql).fetchone()[0])


def once_each(values: list[object]) -> Counter[object]:
    """Values that occur more than once."""
    return Counter({value: n for value, n in Counter(values).items() if n > 1})


async def all_items(client: LabelgateClient) -> list[Item]:
    items: list[Item] = []
    after: str | None = None
    while True:
        page = await client.list_items(PROJECT, limit=1000, after=after)
        items += page.items
        if page.next_after is None:
            return items
        after = page.next_after


@pytest.mark.parametrize("seed", SEEDS)
async def test_kill_9_mid_stream_loses_and_duplicates_nothing(pipeline_process: PipelineFactory, seed: int) -> None:
    rng = random.Random(seed)
    corpus = make_items(N_ITEMS, seed=seed)
    payload: list[dict[str, object]] = [
        {"text": it["text"], "idempotency_key": it["id"], "metadata": {"key": it["id"]}} for it in corpus
    ]
    batches = [payload[i : i + BATCH] for i in range(0, N_ITEMS, BATCH)]
    run = Run(seed, kill_schedule(rng, len(batches)), {it["id"]: it["label"] for it in corpus})
    run.say("start")
    pipeline = pipeline_process(env=ENV)
    await pipeline.start()
    async with LabelgateClient(pipeline.url) as client:
        await client.create_project(PROJECT, name="Chaos", labels=["ham", "spam"], threshold=0.9)
        reviewers = [asyncio.create_task(reviewer(pipeline.url, f"reviewer-{n}", run)) for n in range(REVIEWERS)]
        try:
            await asyncio.gather(post_corpus(client, batches, run), chaos(pipeline, run))
            # The client cannot know what the pipeline kept from before the crashes: it sends it all again.
            first_ids = dict(run.item_ids)
            for batch in batches:
                result = await until_answered(partial(client.submit_items, PROJECT, batch), "submit")
                assert (result.accepted, result.duplicates) == (0, len(batch)), f"{run}: re-post created items"
                for submitted in result.items:
                    run.record(submitted.idempotency_key, submitted.item_id)
            assert run.item_ids == first_ids
            run.say("every batch posted again")

            async def all_final() -> bool:
                for task in reviewers:
                    if task.done():
                        task.result()  # a reviewer that failed fails the test now
                        raise AssertionError("a reviewer stopped before the queue was empty")
                stats = await until_answered(lambda: client.stats(PROJECT), "stats")
                return stats.final >= N_ITEMS

            await eventually(all_final, "every item is final")
        finally:
            run.reviewing = False
            await asyncio.gather(*reviewers)

        run.say("every item final")
        stats = await client.stats(PROJECT)
        items = await all_items(client)
        exported = [line async for line in client.export(PROJECT)]

        expected = {
            "labelgate_pipeline_items_submitted_total": N_ITEMS,
            "labelgate_pipeline_labels_finalized_total": N_ITEMS,
            "labelgate_review_reviews_total": stats.reviews,
        }
        async with httpx.AsyncClient(base_url=pipeline.url) as http:

            async def metrics_caught_up() -> bool:
                text = (await http.get("/metrics")).text
                return all(scraped(text, name, PROJECT) >= n for name, n in expected.items())

            await eventually(metrics_caught_up, "the metrics service has counted every event")
            metrics_text = (await http.get("/metrics")).text
    run.say(f"{stats.model_dump()}; {run.lost_leases} leases lost to the kills")
    # uvicorn re-raises the SIGTERM it handled once its graceful shutdown is done.
    assert await pipeline.stop() in (0, -signal.SIGTERM), pipeline.log_tail()

    ids = set(run.item_ids.values())
    assert len(ids) == N_ITEMS

    # The public API: one item per key, every item final, one decision each and at most one review.
    assert stats.items == N_ITEMS, f"{run}: {stats}"
    assert (stats.final, stats.submitted, stats.queued, stats.queue_depth) == (N_ITEMS, 0, 0, 0), f"{run}: {stats}"
    assert stats.final_by_source.auto + stats.final_by_source.review == N_ITEMS
    assert stats.reviews == stats.final_by_source.review == len(run.review_ids), f"{run}: {stats}"
    assert {item.item_id for item in items} == ids
    for item in items:
        assert item.decision is not None, f"{run}: {item.item_id} has no decision"
        assert item.final is not None, f"{run}: {item.item_id} is not final"
        reviewed = item.decision.outcome == "needs_review"
        assert len(item.reviews) == (1 if reviewed else 0), f"{run}: {item.model_dump_json()}"
        assert item.final.source == ("review" if reviewed else "auto"), f"{run}: {item.model_dump_json()}"
        assert item.metadata["key"] == item.idempotency_key
    assert {review.review_id for item in items for review in item.reviews} == run.review_ids

    assert len(exported) == N_ITEMS
    assert {line.item_id for line in exported} == ids
    assert {line.idempotency_key for line in exported} == set(run.item_ids)

    # The services' own stores, read directly after the graceful stop.
    data = pipeline.data_dir
    decisions = rows(data / "router.db", "decisions")
    assert not once_each([d["scored_event_id"] for d in decisions]), f"{run}: a proposal decided twice"
    assert {d["item_id"] for d in decisions} == ids
    # An item gets a second decision only when it went to review unscored (cold start) and the labeler scored
    # it once a model existed; never two decisions on scored proposals.
    scored_twice = once_each([d["item_id"] for d in decisions if d["confidence"] is not None])
    assert not scored_twice, f"{run}: items decided twice on scored proposals"
    assert max(Counter(d["item_id"] for d in decisions).values()) <= 2
    tasks = rows(data / "review-api.db", "tasks")
    assert not once_each([t["item_id"] for t in tasks]), f"{run}: items queued twice"
    assert all(t["done"] for t in tasks)
    reviews = rows(data / "review-api.db", "reviews")
    assert not once_each([r["item_id"] for r in reviews]), f"{run}: items reviewed twice"
    finals = rows(data / "review-api.db", "finals")
    assert len(finals) == N_ITEMS
    assert {f["item_id"] for f in finals} == ids
    stored = rows(data / "review-api.db", "items")
    assert len(stored) == N_ITEMS
    assert not once_each([i["idempotency_key"] for i in stored])
    for service in ("review-api", "labeler", "router", "metrics"):
        assert count(data / f"{service}.db", "SELECT COUNT(*) FROM _outbox") == 0, f"{service} kept unpublished events"
    assert count(data / "bus.db", "SELECT COUNT(*) FROM records WHERE topic LIKE '%.dlq'") == 0, "dead letters"

    # The metrics service counted each event once, across both crashes.
    counted = {name: scraped(metrics_text, name, PROJECT) for name in expected}
    assert counted == expected, f"{run}: {counted}"
    # Decisions: one per item at least; more than the router made would be an event counted twice.
    assert N_ITEMS <= scraped(metrics_text, "labelgate_router_decisions_total", PROJECT) <= len(decisions)
