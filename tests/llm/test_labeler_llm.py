"""The labeler with a language-model provider (over the OpenAI test double): items are labeled outside the
store transaction, learn from reviews and guidelines, survive a spell of faults, and respect a daily budget."""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from labelgate_core.bus.memory import MemoryBus
from labelgate_core.bus.port import OutgoingMessage, TopicPartition
from labelgate_core.events import (
    Event,
    GuidelineChanged,
    ImageRef,
    ItemSubmitted,
    LabelDef,
    LabelScored,
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
from labelgate_core.topics import ITEM_SUBMITTED, LABEL_SCORED, decode, dlq_topic, encode, headers_for
from labelgate_labeler.llm.budget import SPEND
from labelgate_labeler.llm.config import LLMProviderConfig
from labelgate_labeler.llm.jobs import JOBS
from labelgate_labeler.main import build_labeler
from labelgate_labeler.service import LabelerService
from labelgate_labeler.settings import LabelerSettings
from labelgate_router.policy import decide

from .helpers import PRICE, TASK
from .openai_double import DoubleConfig, OpenAIDouble, ServedDouble

pytestmark = pytest.mark.integration

PROJECT = "acme"
PARTITIONS = 4
ROUTING = RoutingPolicy(threshold=0.5, audit_rate=0.0)
_ids = itertools.count()


def item(text: str) -> ItemSubmitted:
    return ItemSubmitted(producer="review-api", project_id=PROJECT, item_id=f"item-{next(_ids)}", text=text,
                         task=TASK, routing=ROUTING, guideline_version=1)


def review(text: str, label: str, action: ReviewAction = ReviewAction.confirm) -> ReviewSubmitted:
    return ReviewSubmitted(
        producer="review-api", project_id=PROJECT, item_id=f"reviewed-{next(_ids)}", review_id=f"r-{next(_ids)}",
        reviewer_id="ana", action=action, labels=(label,), ai_labels=(), decision_reasons=(RoutingReason.audit,),
        text=text, task=TASK, guideline_version=1, queued_at=utcnow(),
    )


def llm_settings(base_url: str, **fields: object) -> LabelerSettings:
    llm = LLMProviderConfig(base_url=base_url, model="double-1", price=PRICE, backoff_initial_s=0.01,
                            backoff_max_s=0.05, timeout_s=0.5, max_attempts=3)
    base: dict[str, object] = {"provider": "openai", "llm": llm, "llm_job_backoff_s": 0.05,
                               "llm_job_backoff_max_s": 0.2, "retrain_check_s": 60}
    return LabelerSettings.model_validate(base | fields)


async def publish(bus: MemoryBus, *events: Event) -> None:
    await bus.publish([OutgoingMessage(e.topic, e.key, encode(e), tuple(headers_for(e))) for e in events])


async def until(condition: Callable[[], Awaitable[bool]], what: str, timeout_s: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


class Scored:
    def __init__(self, bus: MemoryBus) -> None:
        self._consumer = bus.consumer(f"test.scored.{next(_ids)}", [LABEL_SCORED])
        self.events: list[LabelScored] = []

    async def take(self, n: int) -> list[LabelScored]:
        async def arrived() -> bool:
            for record in await self._consumer.poll(timeout_s=0.05):
                event = decode(record.topic, record.value)
                assert isinstance(event, LabelScored)
                self.events.append(event)
            return len(self.events) >= n

        await until(arrived, f"{n} label.scored event(s)")
        return self.events


@pytest.fixture
async def bus() -> MemoryBus:
    return MemoryBus(partitions=PARTITIONS)


@pytest.fixture
async def scored(bus: MemoryBus) -> Scored:
    reader = Scored(bus)
    await reader._consumer.start()
    return reader


async def started(bus: MemoryBus, path: Path, settings: LabelerSettings) -> LabelerService:
    service = build_labeler(bus, SqliteStore(path), settings)
    await service.start()
    return service


def dead_letters(bus: MemoryBus) -> int:
    return sum(bus.end_offset(TopicPartition(dlq_topic(ITEM_SUBMITTED), p)) for p in range(PARTITIONS))


async def test_items_are_labeled_with_guidelines_and_the_most_similar_reviews_as_examples(
    bus: MemoryBus, scored: Scored, served: ServedDouble, tmp_path: Path
) -> None:
    service = await started(bus, tmp_path / "l.db", llm_settings(served.base_url))
    try:
        await publish(bus, GuidelineChanged(producer="review-api", project_id=PROJECT, item_id=PROJECT, version=4,
                                            text="Refunds count as billing.", task=TASK, routing=ROUTING))
        await publish(bus, review("my parcel never arrived", "shipping"),
                      review("refund my card payment", "billing", ReviewAction.correct),
                      review("the weather is nice", "other"))
        await until(lambda: _count(service, "examples", 3), "reviews stored")
        await publish(bus, item("I need a refund for my card payment"))
        [event] = await scored.take(1)
    finally:
        await service.stop()
    assert event.proposal.labels == ("billing",)
    assert event.proposal.method == "logprobs"
    assert event.proposal.guideline_version == 4
    assert event.proposal.cost_usd > 0
    messages = served.double.requests[-1]["messages"]
    assert "Refunds count as billing." in messages[0]["content"]
    examples = [m["content"] for m in messages[1:-1] if m["role"] == "user"]
    assert "refund my card payment" in examples[0]  # most similar (and a correction) first
    assert len(examples) == 3


async def _count(service: LabelerService, collection: str, n: int) -> bool:
    return await service.store.count(collection, {}) >= n


async def test_no_store_transaction_is_held_while_the_model_is_called(
    bus: MemoryBus, scored: Scored, double: OpenAIDouble, tmp_path: Path
) -> None:
    double.gate = threading.Event()
    with ServedDouble(double) as served:
        service = await started(bus, tmp_path / "l.db", llm_settings(served.base_url))
        try:
            await publish(bus, item("shipping delay"))
            async def calling() -> bool:
                return len(double.requests) > 0

            await until(calling, "the call to start")
            # The call is in flight: the labeler's store must still accept a write at once.
            async def write() -> None:
                async with service.store.transaction() as tx:
                    await tx.insert("probe", {"_id": "x"})

            await asyncio.wait_for(write(), timeout=5)
            double.gate.set()
            [event] = await scored.take(1)
        finally:
            double.gate.set()
            await service.stop()
    assert event.proposal.labels == ("shipping",)


@pytest.mark.chaos
@pytest.mark.slow
async def test_a_spell_of_faults_loses_no_item_and_bills_exactly_the_answered_calls(
    bus: MemoryBus, scored: Scored, tmp_path: Path
) -> None:
    n = 40
    double = OpenAIDouble(DoubleConfig(fault_rate=0.3, fault_requests=80, retry_after_s=0.01, stall_s=0.8, seed=3))
    with ServedDouble(double) as served:
        service = await started(bus, tmp_path / "l.db", llm_settings(served.base_url, llm_job_max_rounds=10))
        try:
            texts = [("billing refund", "shipping parcel", "other thing")[i % 3] + f" #{i}" for i in range(n)]
            await publish(bus, *(item(t) for t in texts))
            events = await scored.take(n)
            ledger = sum(float(d["usd"]) for d in await service.store.find(SPEND, {}))
        finally:
            await service.stop()
    assert sum(o != "ok" for o in double.outcomes) > 0, "the spell injected no fault"
    assert len({e.item_id for e in events}) == n
    assert len(events) == n
    assert dead_letters(bus) == 0
    assert all(e.proposal.labels and not e.proposal.invalid for e in events)
    # Attempts are bounded: per item at most max_attempts calls per round, max_rounds rounds.
    assert all(1 <= e.proposal.attempts <= 3 for e in events)
    assert len(double.requests) <= n * 3 * 10
    billed = sum((b.input_tokens * PRICE.input + b.output_tokens * PRICE.output) / 1e6 for b in double.billed)
    assert sum(e.proposal.cost_usd for e in events) == pytest.approx(billed)
    assert ledger == pytest.approx(billed)


async def test_a_spent_daily_budget_makes_items_wait_and_a_higher_one_releases_them(
    bus: MemoryBus, scored: Scored, served: ServedDouble, tmp_path: Path
) -> None:
    path = tmp_path / "l.db"
    tight = llm_settings(served.base_url, llm_budget_usd_per_day=1e-9, llm_workers=1)
    service = await started(bus, path, tight)
    try:
        await publish(bus, *(item(f"billing question {i}") for i in range(5)))
        await scored.take(1)  # the first call spends the whole (tiny) budget
        async def waiting() -> bool:
            return await service.store.count(JOBS, {"status": "waiting_budget"}) >= 1

        await until(waiting, "items to wait")
        gauge = REGISTRY.get_sample_value("labelgate_llm_budget_waiting_items", {"project_id": PROJECT})
        assert gauge is not None
        assert gauge >= 1
        await asyncio.sleep(0.3)
        assert len(scored.events) < 5
    finally:
        await service.stop()
    service = await started(bus, path, llm_settings(served.base_url, llm_budget_usd_per_day=10.0))
    try:
        events = await scored.take(5)
    finally:
        await service.stop()
    assert len({e.item_id for e in events}) == 5
    assert dead_letters(bus) == 0


async def test_an_ensemble_records_every_member_and_its_disagreement_goes_to_review(
    bus: MemoryBus, scored: Scored, double: OpenAIDouble, tmp_path: Path
) -> None:
    double.config.per_model_choice["contrarian"] = "last"
    with ServedDouble(double) as served:
        other = LLMProviderConfig(name="second", base_url=served.base_url, model="contrarian", price=PRICE)
        settings = llm_settings(served.base_url, provider="ensemble", llm_extra=(other,), ensemble=("openai", "second"))
        service = await started(bus, tmp_path / "l.db", settings)
        try:
            await publish(bus, item("billing refund"), item("billing refund, and the shipping was late"))
            events = await scored.take(2)
        finally:
            await service.stop()
    agree = next(e for e in events if e.agreement == 1.0)
    split = next(e for e in events if e.agreement == 0.5)
    assert [m.model_id for m in agree.members] == ["double-1", "contrarian"]
    assert decide(agree.proposal, TASK, ROUTING, draw=0.99).auto_accepted
    assert {m.labels for m in split.members} == {("billing",), ("shipping",)}
    assert decide(split.proposal, TASK, ROUTING, draw=0.99).reasons == (RoutingReason.disagreement,)
    assert split.proposal.cost_usd == pytest.approx(sum(m.cost_usd for m in split.members))


async def test_entity_and_boxes_items_are_labeled_through_the_job_queue_and_a_project_uses_its_own_endpoint(
    bus: MemoryBus, scored: Scored, tmp_path: Path
) -> None:
    entities = TaskSpec(type=TaskType.entities, labels=(LabelDef(name="PER"), LabelDef(name="LOC")))
    boxes = TaskSpec(type=TaskType.boxes, labels=(LabelDef(name="cat"), LabelDef(name="dog")))
    image = ImageRef(url="https://images.example/pets.png", width=640, height=480)
    with ServedDouble(OpenAIDouble()) as shared, ServedDouble(OpenAIDouble()) as own:
        settings = llm_settings(
            shared.base_url,
            llm_projects={"vision": {"base_url": own.base_url, "api_key": "sk-vision", "model": "vision-1"}},
        )
        service = await started(bus, tmp_path / "l.db", settings)
        try:
            await publish(
                bus,
                item("Alice Smith moved to Oslo.").model_copy(update={"task": entities, "item_id": "text-1"}),
                item("").model_copy(update={"task": boxes, "image": image, "project_id": "vision",
                                            "item_id": "image-1"}),
            )
            events = {e.item_id: e for e in await scored.take(2)}
        finally:
            await service.stop()
    text, picture = events["text-1"].proposal, events["image-1"].proposal
    assert [(s.text, s.label) for s in text.spans] == [("Alice Smith", "PER"), ("Oslo", "LOC")]
    assert all(s.confidence is not None for s in text.spans)
    assert text.confidence is not None
    assert [b.label for b in picture.boxes] == ["cat", "dog"]
    assert picture.model_id == "vision-1"
    assert [b["model"] for b in own.double.requests] == ["vision-1"]
    assert own.double.headers[0]["authorization"] == "Bearer sk-vision"
    assert all(b["model"] == "double-1" for b in shared.double.requests)
    assert "sk-vision" not in events["image-1"].model_dump_json()


async def test_reviewed_spans_are_shown_as_the_answers_of_entity_examples(
    bus: MemoryBus, scored: Scored, served: ServedDouble, tmp_path: Path
) -> None:
    entities = TaskSpec(type=TaskType.entities, labels=(LabelDef(name="PER"), LabelDef(name="LOC")))
    reviewed = review("Bob Jones lives in Oslo", "PER").model_copy(update={
        "task": entities, "labels": ("PER", "LOC"),
        "spans": (Span(start=0, end=9, label="PER", text="Bob Jones"),
                  Span(start=19, end=23, label="LOC", text="Oslo")),
    })
    service = await started(bus, tmp_path / "l.db", llm_settings(served.base_url))
    try:
        await publish(bus, reviewed)
        await until(lambda: _count(service, "examples", 1), "the review stored")
        await publish(bus, item("Alice Smith lives in Paris").model_copy(update={"task": entities}))
        await scored.take(1)
    finally:
        await service.stop()
    messages = served.double.requests[-1]["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert json.loads(messages[2]["content"]) == {"entities": [
        {"text": "Bob Jones", "start": 0, "end": 9, "type": "PER"},
        {"text": "Oslo", "start": 19, "end": 23, "type": "LOC"},
    ]}


async def test_a_copy_of_a_reviewed_item_labeled_by_the_language_model_is_flagged_as_a_leak(
    bus: MemoryBus, scored: Scored, served: ServedDouble, tmp_path: Path
) -> None:
    # Reviewed items are the few-shot pool: the model may have seen the very answer in its prompt.
    service = await started(bus, tmp_path / "l.db", llm_settings(served.base_url))
    try:
        await publish(bus, review("please refund the double charge on my card", "billing"),
                      review("my parcel never arrived at the warehouse", "shipping"))
        await until(lambda: _count(service, "examples", 2), "reviews stored")
        copy = item("PLEASE REFUND THE DOUBLE CHARGE ON MY CARD")
        fresh = item("which courier carries parcels abroad and what does it cost")
        await publish(bus, copy, fresh)
        events = await scored.take(2)
    finally:
        await service.stop()
    by_item = {e.item_id: e.proposal for e in events}
    assert by_item[copy.item_id].confidence is not None
    assert by_item[copy.item_id].leakage == "exact"
    assert by_item[fresh.item_id].leakage is None
