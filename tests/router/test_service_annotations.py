"""The router on entity and box tasks, over a real in-process bus and SQLite store: auto-accepted finals carry
the proposal's spans and boxes, and reviewed outcomes judge the AI by its spans and boxes."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from labelgate_core.bus.memory import MemoryBus
from labelgate_core.events import (
    Box,
    LabelDef,
    LabelFinalized,
    LabelScored,
    Proposal,
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
from labelgate_core.topics import LABEL_FINALIZED
from labelgate_router.main import build_router

from .test_service import publish, read_all

pytestmark = pytest.mark.integration

ENTITIES = TaskSpec(type=TaskType.entities, labels=(LabelDef(name="PER"), LabelDef(name="ORG")))
BOXES = TaskSpec(type=TaskType.boxes, labels=(LabelDef(name="cat"), LabelDef(name="dog")))
TEXT = "Ada Lovelace met Babbage"
SPANS = (
    Span(start=0, end=12, label="PER", text="Ada Lovelace", confidence=0.97),
    Span(start=17, end=24, label="PER", text="Babbage", confidence=0.95),
)
BOX = Box(label="cat", x=10, y=10, width=100, height=80, confidence=0.96)


def scored(item_id: str, task: TaskSpec, **proposal: object) -> LabelScored:
    return LabelScored(
        producer="labeler",
        project_id="p",
        item_id=item_id,
        proposal=Proposal.model_validate({"model_id": "m", "model_version": 1, "confidence": 0.97, **proposal}),
        task=task,
        routing=RoutingPolicy(threshold=0.9, audit_rate=0.0),
        guideline_version=1,
        submitted_at=utcnow(),
    )


def reviewed(item_id: str, task: TaskSpec, **answer: object) -> ReviewSubmitted:
    return ReviewSubmitted.model_validate(
        {
            "producer": "review-api",
            "project_id": "p",
            "item_id": item_id,
            "review_id": f"r-{item_id}",
            "reviewer_id": "ana",
            "action": ReviewAction.correct,
            "ai_confidence": 0.6,
            "decision_reasons": (RoutingReason.low_confidence,),
            "text": TEXT,
            "task": task,
            "guideline_version": 1,
            "queued_at": utcnow(),
            "labels": (),
            "ai_labels": (),
            **answer,
        }
    )


async def test_auto_accepted_entities_and_boxes_are_finalized_with_the_proposal(tmp_path: Path) -> None:
    bus = MemoryBus()
    router = build_router(bus, SqliteStore(tmp_path / "router.db"))
    await router.start()
    try:
        await publish(
            bus,
            scored("ents", ENTITIES, labels=("PER",), spans=SPANS),
            scored("box", BOXES, labels=("cat",), boxes=(BOX,)),
        )
        finals = await read_all(bus, LABEL_FINALIZED, 2)
    finally:
        await router.stop()
    by_item = {f.item_id: f for f in finals if isinstance(f, LabelFinalized)}
    assert set(by_item) == {"ents", "box"}
    assert by_item["ents"].spans == SPANS
    assert by_item["ents"].labels == ("PER",)
    assert by_item["ents"].boxes == ()
    assert by_item["box"].boxes == (BOX,)
    assert by_item["box"].source == "auto"


async def test_outcomes_judge_the_ai_by_its_spans_and_boxes(tmp_path: Path) -> None:
    bus = MemoryBus()
    router = build_router(bus, SqliteStore(tmp_path / "router.db"))
    await router.start()
    moved = (SPANS[0], Span(start=17, end=20, label="PER", text="Bab"))
    try:
        await publish(
            bus,
            reviewed("same-spans", ENTITIES, ai_spans=SPANS, spans=SPANS[::-1], ai_labels=("PER",), labels=("PER",)),
            # The labels agree, yet one span's boundary moved: the AI was wrong.
            reviewed("moved-span", ENTITIES, ai_spans=SPANS, spans=moved, ai_labels=("PER",), labels=("PER",)),
            reviewed(
                "nudged-box",
                BOXES,
                ai_boxes=(BOX,),
                boxes=(BOX.model_copy(update={"x": 15.0}),),
                ai_labels=("cat",),
                labels=("cat",),
            ),
            reviewed(
                "other-box",
                BOXES,
                ai_boxes=(BOX,),
                boxes=(BOX.model_copy(update={"x": 90.0}),),
                ai_labels=("cat",),
                labels=("cat",),
            ),
        )
        deadline = time.monotonic() + 20
        while await router.store.count("outcomes", {"project_id": "p"}) < 4:
            assert time.monotonic() < deadline, "outcomes not recorded in time"
            await asyncio.sleep(0.05)
        docs = {d["item_id"]: d for d in await router.store.find("outcomes", {"project_id": "p"})}
    finally:
        await router.stop()
    assert {item: doc["correct"] for item, doc in docs.items()} == {
        "same-spans": True,
        "moved-span": False,
        "nudged-box": True,
        "other-box": False,
    }
