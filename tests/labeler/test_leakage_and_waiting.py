"""The labeler flags items that duplicate its training items, never learns from gold items, and scores the
items that arrived before its first model once that model exists."""

from __future__ import annotations

import random

import pytest

from labelgate_core.events import LabelScored
from labelgate_core.topics import LABEL_SCORED
from labelgate_labeler.settings import LabelerSettings

from .test_service import Harness, harness, idle, item, publish, review, reviews, text_about

__all__ = ["harness"]  # the fixture, shared with the labeler service tests


@pytest.fixture
def settings() -> LabelerSettings:
    """Training only when a test asks for it (versions are numbered as the test expects); waiting items are
    scored by a new model."""
    return LabelerSettings(
        min_train_examples=20,
        retrain_every_reviews=1000,
        retrain_interval_s=3600,
        retrain_check_s=60,
        retrain_on_review=False,
        score_waiting_items=True,
    )


pytestmark = pytest.mark.integration


async def test_a_copy_of_a_training_item_is_flagged_exact_or_near_on_its_proposal(harness: Harness) -> None:
    scored = await harness.reader(LABEL_SCORED)
    labeler = await harness.start()
    train = reviews(30)
    await publish(harness.bus, *train)
    await idle(labeler, harness.bus)
    assert await labeler.retrain("acme-support") == 1
    copy = train[4].text
    edited = copy.rsplit(" ", 1)[0] + " thanks"
    fresh = text_about(("billing",), random.Random(99))
    await publish(
        harness.bus, item(copy.upper(), item_id="copy"), item(edited, item_id="edited"), item(fresh, item_id="fresh")
    )
    events = [e for e in await scored.take(3) if isinstance(e, LabelScored)]
    by_item = {e.item_id: e.proposal for e in events}
    assert by_item["copy"].leakage == "exact"
    assert by_item["edited"].leakage == "near"
    assert by_item["fresh"].leakage is None
    assert all(p.confidence is not None for p in by_item.values())


async def test_reviews_of_gold_items_are_not_training_data(harness: Harness) -> None:
    labeler = await harness.start()
    gold = review(("billing",), "invoice refund charge", item_id="gold-1").model_copy(update={"gold": True})
    plain = review(("shipping",), "parcel courier late", item_id="plain-1")
    await publish(harness.bus, gold, plain)
    await idle(labeler, harness.bus)
    stored = {doc["item_id"] for doc in await labeler.store.find("examples", {})}
    assert stored == {"plain-1"}


async def test_items_waiting_unscored_are_scored_by_the_first_model_unless_reviewed_first(harness: Harness) -> None:
    scored = await harness.reader(LABEL_SCORED)
    labeler = await harness.start()
    rng = random.Random(5)
    waiting = [item(text_about(("billing",), rng), item_id=f"waiting-{i}") for i in range(3)]
    await publish(harness.bus, *waiting)
    cold = [e for e in await scored.take(3) if isinstance(e, LabelScored)]
    assert all(e.proposal.confidence is None for e in cold)
    # One waiting item is reviewed (its human label stands), then enough others for a first model.
    await publish(harness.bus, review(("billing",), waiting[0].text, item_id="waiting-0"), *reviews(30))
    await idle(labeler, harness.bus)
    assert await labeler.retrain("acme-support") == 1
    rescored = [e for e in await scored.take(2) if isinstance(e, LabelScored)]
    assert sorted(e.item_id for e in rescored) == ["waiting-1", "waiting-2"]
    assert all(e.proposal.confidence is not None and e.proposal.model_version == 1 for e in rescored)
    assert all(
        e.causation_id == w.event_id
        for e, w in zip(sorted(rescored, key=lambda e: e.item_id), waiting[1:], strict=True)
    )
    # Scored once: the next version finds nothing waiting.
    await publish(harness.bus, *reviews(10, seed=3))
    await idle(labeler, harness.bus)
    assert await labeler.retrain("acme-support") == 2
    await idle(labeler, harness.bus)
    assert [e for e in await scored.drain() if e.item_id.startswith("waiting")] == [*cold, *rescored]
