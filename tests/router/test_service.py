"""The router service over a real in-process bus and SQLite store: decisions, auto-final labels, exactly once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from labelgate_core.bus.memory import MemoryBus
from labelgate_core.bus.port import OutgoingMessage
from labelgate_core.events import (
    DecisionMade,
    Event,
    LabelDef,
    LabelFinalized,
    LabelScored,
    Proposal,
    ReviewAction,
    ReviewSubmitted,
    RoutingPolicy,
    RoutingReason,
    TaskSpec,
    utcnow,
)
from labelgate_core.store.sqlite import SqliteStore
from labelgate_core.topics import DECISION_MADE, LABEL_FINALIZED, decode, encode, headers_for
from labelgate_router.main import build_router
from labelgate_router.settings import RouterSettings

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


def reviewed(project_id: str, item_id: str, confidence: float | None, correct: bool) -> ReviewSubmitted:
    return ReviewSubmitted(
        producer="review-api",
        project_id=project_id,
        item_id=item_id,
        review_id=f"r-{item_id}",
        reviewer_id="ana",
        action=ReviewAction.confirm if correct else ReviewAction.correct,
        labels=("spam",) if correct else ("ham",),
        ai_labels=("spam",) if confidence is not None else (),
        ai_confidence=confidence,
        decision_reasons=(RoutingReason.low_confidence,),
        text="text",
        task=TASK,
        guideline_version=1,
        queued_at=utcnow(),
    )


def scored_for(item_id: str, confidence: float, routing: RoutingPolicy, project_id: str = "p") -> LabelScored:
    return scored(item_id, confidence).model_copy(update={"routing": routing, "project_id": project_id})


async def eventually(check: Callable[[], bool], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_router_calibrates_from_outcomes_and_routes_on_a_target_precision(tmp_path: Path) -> None:
    bus = MemoryBus()
    settings = RouterSettings(calibration_every_outcomes=200, calibration_growth=0, calibration_interval_s=600)
    router = build_router(bus, SqliteStore(tmp_path / "router.db"), settings)
    target = RoutingPolicy(threshold=0.5, audit_rate=0.0, target_precision=0.95)
    await router.start()
    try:
        # Above 0.9 the model is always right; between 0.5 and 0.7 it is a coin toss; cold start says nothing.
        outcomes = [reviewed("p", f"hi-{i}", 0.9 + i / 1000, True) for i in range(100)]
        outcomes += [reviewed("p", f"lo-{i}", 0.5 + i / 500, i % 2 == 0) for i in range(95)]
        outcomes += [reviewed("p", f"cold-{i}", None, True) for i in range(5)]
        await publish(bus, *outcomes)
        await eventually(lambda: router.calibration("p") is not None)
        stored = await router.store.find_one("calibrations", {"_id": "p"})
        assert stored is not None
        assert (stored["version"], stored["n_outcomes"], stored["n_scored"]) == (1, 200, 195)
        assert stored["ece_raw"] is not None
        assert sum(b["count"] for b in stored["reliability"]["raw"]) == 195
        assert REGISTRY.get_sample_value("labelgate_router_calibration_ece", {"project": "p"}) == pytest.approx(
            stored["ece_calibrated"]
        )

        # Fitted without a target: the first item asking for one goes to review, and the target is fitted.
        await publish(bus, scored_for("first", 0.98, target))
        await eventually(lambda: (router.calibration("p") or (0,))[0] == 2)
        await publish(bus, scored_for("sure", 0.98, target), scored_for("unsure", 0.6, target),
                      scored_for("elsewhere", 0.99, target, project_id="no-outcomes"))
        decisions = await read_all(bus, DECISION_MADE, 4)
    finally:
        await router.stop()
    by_item = {d.item_id: d for d in decisions if isinstance(d, DecisionMade)}
    assert by_item["first"].reasons == ("low_confidence",)
    assert by_item["first"].calibration_version == 1
    sure = by_item["sure"]
    assert sure.outcome == "auto_accepted"
    assert sure.calibration_version == 2
    assert sure.threshold is not None
    assert sure.calibrated_confidence is not None
    assert sure.calibrated_confidence >= sure.threshold > 0.7
    assert by_item["unsure"].reasons == ("low_confidence",)
    assert by_item["elsewhere"].reasons == ("low_confidence",)
    assert by_item["elsewhere"].threshold is None


async def test_a_young_calibration_is_refitted_after_a_quarter_more_outcomes(tmp_path: Path) -> None:
    bus = MemoryBus()
    settings = RouterSettings(
        calibration_every_outcomes=1000, calibration_growth=0.25, calibration_interval_s=600, calibration_min_samples=30
    )
    router = build_router(bus, SqliteStore(tmp_path / "router.db"), settings)
    await router.start()
    try:
        # Below the minimum sample (30) a quarter of it, 8 new outcomes, is due; neither the count (1000) nor the
        # interval (600 s) would refit within the test.
        await publish(bus, *(reviewed("p", f"a-{i}", 0.6 + i / 100, i % 4 != 0) for i in range(10)))
        await eventually(lambda: (router.calibration("p") or (0,))[0] == 1)
        await publish(bus, *(reviewed("p", f"b-{i}", 0.7 + i / 100, True) for i in range(7)))
        await eventually(lambda: router._new_outcomes.get("p") == 7)
        await asyncio.sleep(0.3)
        assert (router.calibration("p") or (0,))[0] == 1  # 7 < 8: not yet
        await publish(bus, reviewed("p", "c-0", 0.9, True))
        await eventually(lambda: (router.calibration("p") or (0,))[0] == 2)
        fits = await router.store.find("calibration_history", {"project_id": "p"}, sort=[("version", 1)])
    finally:
        await router.stop()
    assert [f["n_outcomes"] for f in fits] == [10, 18]


async def test_a_restarted_router_uses_its_stored_calibration(tmp_path: Path) -> None:
    bus = MemoryBus()
    settings = RouterSettings(calibration_every_outcomes=60, calibration_growth=0, calibration_interval_s=600)
    router = build_router(bus, SqliteStore(tmp_path / "router.db"), settings)
    await router.start()
    try:
        await publish(bus, *(reviewed("p", f"i-{i}", 0.95, i % 3 != 0) for i in range(60)))
        await eventually(lambda: router.calibration("p") is not None)
    finally:
        await router.stop()
    again = build_router(bus, SqliteStore(tmp_path / "router.db"), settings)
    await again.start()
    try:
        current = again.calibration("p")
    finally:
        await again.stop()
    assert current is not None
    assert current[0] == 1
    # Right two times in three at a raw 0.95: that is what the restored calibration says.
    assert current[1].calibrate(0.95) == pytest.approx(2 / 3, abs=0.02)
