"""The labeler over a real in-process bus and SQLite store: cold start, learning from reviews, restarts."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from labelgate_core.bus.memory import MemoryBus
from labelgate_core.bus.port import Consumer, OutgoingMessage, TopicPartition
from labelgate_core.events import (
    Event,
    GuidelineChanged,
    ItemSubmitted,
    LabelDef,
    LabelScored,
    ModelUpdated,
    ReviewAction,
    ReviewSubmitted,
    RoutingPolicy,
    RoutingReason,
    Span,
    TaskSpec,
    TaskType,
    utcnow,
)
from labelgate_core.store.sqlite import SqliteStore
from labelgate_core.topics import LABEL_SCORED, MODEL_UPDATED, decode, encode, headers_for
from labelgate_labeler.main import build_labeler
from labelgate_labeler.service import LabelerService
from labelgate_labeler.settings import LabelerSettings

from .ner_data import ENTITY_TASK, entity_set

pytestmark = pytest.mark.integration

PROJECT = "acme-support"
TASK = TaskSpec(labels=(LabelDef(name="billing"), LabelDef(name="shipping")))
MULTI_TASK = TaskSpec(type=TaskType.multi_label, labels=TASK.labels)
ROUTING = RoutingPolicy(threshold=0.8, audit_rate=0.0)
WORDS = {
    "billing": ["invoice", "refund", "charge", "payment", "card", "overcharged", "receipt", "billing", "price"],
    "shipping": ["parcel", "delivery", "courier", "tracking", "shipped", "arrived", "package", "late", "warehouse"],
}
FILLER = ["the", "a", "my", "of", "and", "to", "in", "for", "on", "with", "is", "was", "please", "hello", "thanks"]
PARTITIONS = 4
_ids = itertools.count()


def text_about(topics: tuple[str, ...], rng: random.Random) -> str:
    pool = [w for t in topics for w in WORDS[t]] + FILLER
    return " ".join(rng.choice(pool) for _ in range(16))


def item(text: str, task: TaskSpec = TASK, item_id: str | None = None) -> ItemSubmitted:
    return ItemSubmitted(
        producer="review-api",
        project_id=PROJECT,
        item_id=item_id or f"item-{next(_ids)}",
        text=text,
        task=task,
        routing=ROUTING,
        guideline_version=3,
    )


def review(
    labels: tuple[str, ...], text: str, *, item_id: str | None = None, task: TaskSpec = TASK
) -> ReviewSubmitted:
    return ReviewSubmitted(
        producer="review-api",
        project_id=PROJECT,
        item_id=item_id or f"reviewed-{next(_ids)}",
        review_id=f"review-{next(_ids)}",
        reviewer_id="ana",
        action=ReviewAction.correct,
        labels=labels,
        ai_labels=(),
        decision_reasons=(RoutingReason.no_confidence,),
        text=text,
        task=task,
        guideline_version=3,
        queued_at=utcnow(),
    )


def reviews(n: int, seed: int = 0, task: TaskSpec = TASK) -> list[ReviewSubmitted]:
    rng = random.Random(seed)
    out: list[ReviewSubmitted] = []
    for i in range(n):
        if task.type is TaskType.multi_label:
            topics = [("billing",), ("shipping",), ("billing", "shipping")][i % 3]
        else:
            topics = (("billing",), ("shipping",))[i % 2]
        out.append(review(topics, text_about(topics, rng), task=task))
    return out


async def publish(bus: MemoryBus, *events: Event) -> None:
    await bus.publish([OutgoingMessage(e.topic, e.key, encode(e), tuple(headers_for(e))) for e in events])


async def until(condition: Callable[[], Awaitable[bool]], what: str, timeout_s: float = 20.0) -> None:
    """Wait for ``condition``; the timeout only turns a hang into a readable failure."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


class Reader:
    """Collects what the labeler publishes on one topic, as a downstream service would read it."""

    def __init__(self, bus: MemoryBus, topic: str) -> None:
        self._consumer: Consumer = bus.consumer(f"test.{topic}.{next(_ids)}", [topic])
        self.events: list[Event] = []

    async def start(self) -> None:
        await self._consumer.start()

    async def take(self, n: int) -> list[Event]:
        """The next ``n`` events (waiting for them)."""
        seen = len(self.events)

        async def arrived() -> bool:
            self.events += [decode(r.topic, r.value) for r in await self._consumer.poll(timeout_s=0.05)]
            return len(self.events) >= seen + n

        await until(arrived, f"{n} event(s)")
        return self.events[seen : seen + n]

    async def drain(self) -> list[Event]:
        self.events += [decode(r.topic, r.value) for r in await self._consumer.poll(timeout_s=0.05)]
        return self.events


@pytest.fixture
def settings() -> LabelerSettings:
    return LabelerSettings(
        min_train_examples=20, retrain_every_reviews=1000, retrain_interval_s=3600, retrain_check_s=0.05
    )


class Harness:
    def __init__(self, bus: MemoryBus, path: Path, settings: LabelerSettings) -> None:
        self.bus = bus
        self.path = path
        self.settings = settings
        self.running: list[LabelerService] = []

    async def start(self) -> LabelerService:
        service = build_labeler(self.bus, SqliteStore(self.path), self.settings)
        await service.start()
        self.running.append(service)
        return service

    async def stop(self, service: LabelerService) -> None:
        self.running.remove(service)
        await service.stop()

    async def reader(self, topic: str) -> Reader:
        reader = Reader(self.bus, topic)
        await reader.start()
        return reader


@pytest.fixture
async def harness(tmp_path: Path, settings: LabelerSettings) -> AsyncIterator[Harness]:
    bus = MemoryBus(partitions=PARTITIONS)
    h = Harness(bus, tmp_path / "labeler.db", settings)
    yield h
    for service in list(h.running):
        await h.stop(service)


async def idle(service: LabelerService, bus: MemoryBus) -> None:
    """Wait until the labeler has committed everything published so far, and published its outbox."""

    async def caught_up() -> bool:
        for group, handlers in service.subscriptions().items():
            committed = bus.committed(group)
            for topic in handlers:
                for partition in range(PARTITIONS):
                    tp = TopicPartition(topic, partition)
                    if committed.get(tp, 0) < bus.end_offset(tp):
                        return False
        return not await service.store.outbox_pending(1)

    await until(caught_up, "the labeler to catch up")


async def test_cold_start_proposal_has_no_confidence(harness: Harness) -> None:
    scored = await harness.reader(LABEL_SCORED)
    await harness.start()
    submitted = item("my invoice shows a double charge")

    await publish(harness.bus, submitted)
    [event] = await scored.take(1)

    assert isinstance(event, LabelScored)
    assert event.producer == "labeler"
    assert (event.project_id, event.item_id) == (PROJECT, submitted.item_id)
    assert event.causation_id == submitted.event_id
    assert event.trace_id == submitted.trace_id
    assert (event.task, event.routing, event.guideline_version) == (TASK, ROUTING, 3)
    assert event.submitted_at == submitted.occurred_at
    proposal = event.proposal
    assert (proposal.model_id, proposal.model_version) == ("local-tfidf-linear", 0)
    assert proposal.labels == ()
    assert proposal.confidence is None
    assert proposal.cost_usd == 0.0
    assert proposal.latency_ms >= 0.0


async def test_reviews_train_a_version_and_later_items_get_confident_labels(harness: Harness) -> None:
    scored = await harness.reader(LABEL_SCORED)
    updates = await harness.reader(MODEL_UPDATED)
    service = await harness.start()

    await publish(harness.bus, *reviews(19))
    await idle(service, harness.bus)
    assert await service.retrain_due() == {}  # 19 < min_train_examples: still cold
    await publish(harness.bus, *reviews(1, seed=1))
    [update] = await updates.take(1)

    assert isinstance(update, ModelUpdated)
    assert (update.project_id, update.item_id) == (PROJECT, PROJECT)
    assert (update.model_id, update.model_version, update.trained_on) == ("local-tfidf-linear", 1, 20)
    assert update.train_seconds > 0
    [version] = await service.store.find("model_versions", {"project_id": PROJECT})
    assert version["version"] == 1
    assert version["trained_on"] == 20
    assert set(version["labels"]) == {"billing", "shipping"}
    assert "holdout_accuracy" in version
    assert version["trained_at"]

    refund = item("refund the overcharged payment on my card invoice")
    courier = item("the courier lost my parcel, tracking says late delivery")
    await publish(harness.bus, refund)
    await publish(harness.bus, courier)
    # Two items on two partitions: their proposals may come out in either order.
    by_item = {e.item_id: e for e in await scored.take(2) if isinstance(e, LabelScored)}
    first, second = by_item[refund.item_id], by_item[courier.item_id]
    assert first.proposal.model_version == second.proposal.model_version == 1
    assert first.proposal.labels == ("billing",)
    assert second.proposal.labels == ("shipping",)
    for event in (first, second):
        assert event.proposal.confidence is not None
        assert event.proposal.confidence > 0.5
        assert set(event.proposal.scores) == {"billing", "shipping"}


async def test_more_reviews_make_a_new_version_on_schedule(harness: Harness) -> None:
    harness.settings = LabelerSettings(
        min_train_examples=20, retrain_every_reviews=5, retrain_interval_s=3600, retrain_check_s=0.05
    )
    updates = await harness.reader(MODEL_UPDATED)
    service = await harness.start()
    await publish(harness.bus, *reviews(20))
    await updates.take(1)

    await publish(harness.bus, *reviews(5, seed=2))
    [update] = await updates.take(1)

    assert isinstance(update, ModelUpdated)
    assert (update.model_version, update.trained_on) == (2, 25)
    assert [v["version"] for v in await service.store.find("model_versions", {}, sort=[("version", 1)])] == [1, 2]


async def test_a_young_model_is_refitted_as_soon_as_its_reviews_grow_by_a_quarter(harness: Harness) -> None:
    # No tick and no count would retrain within the test: only a review waking the schedule, and the growth rule.
    harness.settings = LabelerSettings(
        min_train_examples=20, retrain_every_reviews=1000, retrain_interval_s=3600, retrain_check_s=60,
        retrain_growth=0.25,
    )
    updates = await harness.reader(MODEL_UPDATED)
    service = await harness.start()
    await publish(harness.bus, *reviews(20))
    [first] = await updates.take(1)
    await publish(harness.bus, *reviews(4, seed=2))
    await idle(service, harness.bus)
    assert await service.retrain_due() == {}  # 4 new reviews < 25% of 20 examples
    await publish(harness.bus, *reviews(1, seed=3))
    [second] = await updates.take(1)

    assert isinstance(first, ModelUpdated)
    assert isinstance(second, ModelUpdated)
    assert (first.model_version, first.trained_on) == (1, 20)
    assert (second.model_version, second.trained_on) == (2, 25)
    [project] = await service.store.find("projects", {"_id": PROJECT})
    assert project["trained_on"] == 25


async def test_a_redelivered_review_is_not_counted_twice(harness: Harness) -> None:
    harness.settings = LabelerSettings(
        min_train_examples=20, retrain_every_reviews=5, retrain_interval_s=3600, retrain_check_s=0.05
    )
    updates = await harness.reader(MODEL_UPDATED)
    service = await harness.start()
    await publish(harness.bus, *reviews(20))
    await updates.take(1)

    four = reviews(4, seed=3)
    await publish(harness.bus, *four, four[0])  # five deliveries, four reviews
    await idle(service, harness.bus)
    await service.retrain_due()
    assert [v["version"] for v in await service.store.find("model_versions", {})] == [1]

    await publish(harness.bus, *reviews(1, seed=4))
    [update] = await updates.take(1)
    assert isinstance(update, ModelUpdated)
    assert (update.model_version, update.trained_on) == (2, 25)


async def test_a_later_review_of_an_item_replaces_its_label(harness: Harness) -> None:
    service = await harness.start()
    first = review(("billing",), "parcel arrived late", item_id="item-x")
    correction = review(("shipping",), "parcel arrived late", item_id="item-x")

    await publish(harness.bus, first, correction)
    await idle(service, harness.bus)

    [example] = await service.store.find("examples", {"project_id": PROJECT})
    assert example["item_id"] == "item-x"
    assert example["labels"] == ["shipping"]


async def test_an_older_review_arriving_late_does_not_overwrite_a_newer_one(harness: Harness) -> None:
    service = await harness.start()
    older = review(("billing",), "parcel arrived late", item_id="item-y")
    newer = review(("shipping",), "parcel arrived late", item_id="item-y")

    await publish(harness.bus, newer, older)
    await idle(service, harness.bus)

    [example] = await service.store.find("examples", {"project_id": PROJECT})
    assert example["labels"] == ["shipping"]


async def test_a_restart_keeps_the_model_and_its_version(harness: Harness) -> None:
    updates = await harness.reader(MODEL_UPDATED)
    service = await harness.start()
    await publish(harness.bus, *reviews(20))
    await updates.take(1)
    await harness.stop(service)

    scored = await harness.reader(LABEL_SCORED)
    restarted = await harness.start()
    await publish(harness.bus, item("refund the overcharged payment on my card invoice"))
    [event] = await scored.take(1)

    assert isinstance(event, LabelScored)
    assert event.proposal.model_version == 1  # same examples, same model: the same version
    assert event.proposal.labels == ("billing",)
    assert event.proposal.confidence is not None
    assert await restarted.store.count("examples", {"project_id": PROJECT}) == 20
    assert [e.model_version for e in await updates.drain() if isinstance(e, ModelUpdated)] == [1]


async def test_a_restart_after_new_reviews_makes_a_new_version(harness: Harness) -> None:
    updates = await harness.reader(MODEL_UPDATED)
    service = await harness.start()
    await publish(harness.bus, *reviews(20))
    await updates.take(1)
    await publish(harness.bus, *reviews(3, seed=5))  # below the schedule: not trained on yet
    await idle(service, harness.bus)
    await harness.stop(service)

    scored = await harness.reader(LABEL_SCORED)
    await harness.start()
    [update] = await updates.take(1)
    await publish(harness.bus, item("the courier lost my parcel, tracking says late delivery"))
    [event] = await scored.take(1)

    assert isinstance(update, ModelUpdated)
    assert (update.model_version, update.trained_on) == (2, 23)
    assert isinstance(event, LabelScored)
    assert event.proposal.model_version == 2
    assert event.proposal.labels == ("shipping",)


async def test_multi_label_items_get_label_sets_with_confidence(harness: Harness) -> None:
    scored = await harness.reader(LABEL_SCORED)
    updates = await harness.reader(MODEL_UPDATED)
    await harness.start()
    await publish(harness.bus, *reviews(30, task=MULTI_TASK))
    await updates.take(1)

    await publish(harness.bus, item("refund the invoice payment charge on my card", task=MULTI_TASK))
    [event] = await scored.take(1)

    assert isinstance(event, LabelScored)
    assert event.proposal.model_version == 1
    assert "billing" in event.proposal.labels
    assert event.proposal.confidence is not None
    assert event.proposal.confidence == pytest.approx(
        min(max(p, 1 - p) for p in event.proposal.scores.values())
    )


async def test_an_item_of_a_task_type_the_model_was_not_trained_for_goes_cold(harness: Harness) -> None:
    scored = await harness.reader(LABEL_SCORED)
    updates = await harness.reader(MODEL_UPDATED)
    await harness.start()
    await publish(harness.bus, *reviews(20))
    await updates.take(1)

    await publish(harness.bus, item("refund the invoice payment", task=MULTI_TASK))
    [event] = await scored.take(1)

    assert isinstance(event, LabelScored)
    assert event.proposal.confidence is None
    assert event.proposal.labels == ()


async def test_a_guideline_change_records_the_projects_task(harness: Harness) -> None:
    service = await harness.start()
    change = GuidelineChanged(
        producer="review-api",
        project_id=PROJECT,
        item_id=PROJECT,
        version=4,
        text="Label the customer's main concern.",
        task=MULTI_TASK,
        routing=ROUTING,
    )

    await publish(harness.bus, change)
    await idle(service, harness.bus)

    project = await service.store.find_one("projects", {"_id": PROJECT})
    assert project is not None
    assert project["guideline_version"] == 4
    assert TaskSpec.model_validate(project["task"]) == MULTI_TASK


async def scored_for(scored: Reader, item_id: str) -> Event:
    """The next label.scored of one item (others, such as cold-start items scored again, are passed over)."""
    while True:
        [event] = await scored.take(1)
        if event.item_id == item_id:
            return event


def entity_review(text: str, spans: tuple[Span, ...]) -> ReviewSubmitted:
    return review(tuple(dict.fromkeys(s.label for s in spans)), text, task=ENTITY_TASK).model_copy(
        update={"spans": spans}
    )


async def test_entity_items_go_unscored_until_enough_reviews_then_get_spans_with_confidence(
    harness: Harness,
) -> None:
    scored = await harness.reader(LABEL_SCORED)
    updates = await harness.reader(MODEL_UPDATED)
    await harness.start()
    await publish(harness.bus, item("Alice Smith flew to Paris yesterday.", task=ENTITY_TASK))
    [cold] = await scored.take(1)
    assert isinstance(cold, LabelScored)
    assert cold.proposal.confidence is None
    assert cold.proposal.spans == ()

    texts, spans = entity_set(20)  # exactly the minimum: the first version is trained on all of them
    await publish(harness.bus, *(entity_review(t, s) for t, s in zip(texts, spans, strict=True)))
    [update] = await updates.take(1)
    text = "Zoe Martin flew to Dublin yesterday."
    await publish(harness.bus, item(text, task=ENTITY_TASK, item_id="entity-new"))
    event = await scored_for(scored, "entity-new")

    assert isinstance(update, ModelUpdated)
    assert (update.model_id, update.model_version, update.trained_on) == ("local-crf", 1, 20)
    assert isinstance(event, LabelScored)
    proposal = event.proposal
    assert (proposal.model_id, proposal.model_version, proposal.method) == ("local-crf", 1, "local_model")
    assert [(s.text, s.label) for s in proposal.spans] == [("Zoe Martin", "PER"), ("Dublin", "LOC")]
    assert all(text[s.start : s.end] == s.text and s.confidence is not None for s in proposal.spans)
    assert proposal.labels == ("PER", "LOC")
    assert proposal.confidence is not None
    assert proposal.confidence <= min(s.confidence or 0.0 for s in proposal.spans) + 1e-9


async def test_a_restarted_labeler_rebuilds_the_entity_model_under_the_same_version(harness: Harness) -> None:
    scored = await harness.reader(LABEL_SCORED)
    updates = await harness.reader(MODEL_UPDATED)
    first = await harness.start()
    texts, spans = entity_set(20, seed=4)
    await publish(harness.bus, *(entity_review(t, s) for t, s in zip(texts, spans, strict=True)))
    await updates.take(1)
    await harness.stop(first)

    await harness.start()
    await publish(harness.bus, item("Bob Jones lives in Oslo now", task=ENTITY_TASK, item_id="entity-later"))
    event = await scored_for(scored, "entity-later")

    assert isinstance(event, LabelScored)
    assert event.proposal.model_version == 1
    assert [s.text for s in event.proposal.spans] == ["Bob Jones", "Oslo"]
    assert await updates.drain() == updates.events[:1]
