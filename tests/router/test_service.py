"""The router service over a real in-process bus and SQLite store: decisions, auto-final labels, exactly once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from labelgate_core.bus.memory import MemoryBus
from labelgate_core.bus.port import OutgoingMessage
from labelgate_core.events import (
    DecisionMade,
    Event,
    LabelDef,
    LabelFinalized,
    LabelScored,
    Proposal,
    RoutingPolicy,
    TaskSpec,
    utcnow,
)
from labelgate_core.store.sqlite import SqliteStore
from labelgate_core.topics import DECISION_MADE, LABEL_FINALIZED, decode, encode, headers_for
from labelgate_router.main import build_router

pytestmark = pytest.mark.integration

TASK = TaskSpec(labels=(LabelDef(name="spam"), LabelDef(name="ham")))


def scored(item_id: str, confidence: float | None) -> LabelScored:
    return LabelScored(
        producer="labeler",
        project_id="p",
        item_id=item_id,
        proposal=Proposal(model_id="m", model_version=1, labels=("spam",) if confidence else (), confidence=confidence),
        task=TASK,
        routing=RoutingPolicy(threshold=0.9, audit_rate=0.0),
        guideline_version=1,
        submitted_at=utcnow(),
    )


async def publish(bus: MemoryBus, *events: Event) -> None:
    await bus.publish([OutgoingMessage(e.topic, e.key, encode(e), tuple(headers_for(e))) for e in events])


async def read_all(bus: MemoryBus, topic: str, expected: int) -> list[Event]:
    consumer = bus.consumer(f"reader-{topic}", [topic])
    await consumer.start()
    out: list[Event] = []
    for _ in range(100):
        out += [decode(r.topic, r.value) for r in await consumer.poll(timeout_s=0.1)]
        if len(out) >= expected:
            break
    await asyncio.sleep(0.2)
    out += [decode(r.topic, r.value) for r in await consumer.poll(timeout_s=0.1)]
    await consumer.stop()
    return out


async def test_router_decides_and_finalizes_confident_labels_once(tmp_path: Path) -> None:
    bus = MemoryBus()
    router = build_router(bus, SqliteStore(tmp_path / "router.db"))
    await router.start()
    try:
        confident, unsure, cold = scored("a", 0.97), scored("b", 0.5), scored("c", None)
        await publish(bus, confident, unsure, cold, confident)  # the last one is a redelivery
        decisions = await read_all(bus, DECISION_MADE, 3)
        finals = await read_all(bus, LABEL_FINALIZED, 1)
    finally:
        await router.stop()
    by_item = {d.item_id: d for d in decisions if isinstance(d, DecisionMade)}
    assert len(decisions) == 3
    assert by_item["a"].outcome == "auto_accepted"
    assert by_item["b"].reasons == ("low_confidence",)
    assert by_item["c"].reasons == ("no_confidence",)
    assert [f.item_id for f in finals] == ["a"]
    final = finals[0]
    assert isinstance(final, LabelFinalized)
    assert final.labels == ("spam",)
    assert final.source == "auto"
    assert final.causation_id == by_item["a"].event_id
