"""The router's quality loop over a real in-process bus and SQLite store: labels the AI gets wrong are routed
to review on request and reported by the read API; leaked items stay out of calibration; likely wrong final
labels go back to review once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from labelgate_core.bus.memory import MemoryBus
from labelgate_core.events import (
    DecisionMade,
    FinalSource,
    ItemSubmitted,
    LabelFinalized,
    LabelScored,
    Proposal,
    RoutingPolicy,
    RoutingReason,
    utcnow,
)
from labelgate_core.store.sqlite import SqliteStore
from labelgate_core.topics import DECISION_MADE
from labelgate_router.endpoints import router_api
from labelgate_router.main import build_router
from labelgate_router.settings import RouterSettings

from .test_service import TASK, eventually, publish, read_all, reviewed, scored_for

pytestmark = pytest.mark.integration

STRICT = RoutingPolicy(threshold=0.9, audit_rate=0.0, exclude_unreliable_labels=True)
LENIENT = RoutingPolicy(threshold=0.9, audit_rate=0.0)


def submitted(item_id: str, source: str) -> ItemSubmitted:
    return ItemSubmitted(
        producer="review-api",
        project_id="p",
        item_id=item_id,
        text="text",
        metadata={"source": source, "score": 0.5},
        task=TASK,
        routing=LENIENT,
        guideline_version=1,
    )


async def test_a_label_the_ai_gets_wrong_is_reported_and_routed_to_review_on_request(tmp_path: Path) -> None:
    bus = MemoryBus()
    settings = RouterSettings(
        calibration_every_outcomes=60, calibration_growth=0, calibration_interval_s=600, unreliable_min_support=20
    )
    router = build_router(bus, SqliteStore(tmp_path / "router.db"), settings)
    app = FastAPI()
    app.include_router(router_api(router))
    await router.start()
    try:
        # The AI says spam at 0.95: right on mail, wrong on every forum post.
        await publish(bus, *(submitted(f"i{i}", "forum" if i < 30 else "mail") for i in range(60)))
        await publish(bus, *(reviewed("p", f"i{i}", 0.95, correct=i >= 30) for i in range(60)))
        await eventually(lambda: router.unreliable_labels("p") == frozenset({"spam"}))
        await publish(bus, scored_for("strict", 0.99, STRICT), scored_for("lenient", 0.99, LENIENT))
        decisions = await read_all(bus, DECISION_MADE, 2)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://router") as client:
            report = (await client.get("/v1/projects/p/systematic-errors")).json()
            missing = await client.get("/v1/projects/nobody/systematic-errors")
    finally:
        await router.stop()
    by_item = {d.item_id: d for d in decisions if isinstance(d, DecisionMade)}
    assert by_item["strict"].reasons == (RoutingReason.unreliable_label,)
    # Without the option, the label's own calibration decides (and, here, is not confident either).
    assert by_item["lenient"].reasons == (RoutingReason.low_confidence,)
    assert report["unreliable_labels"] == ["spam"]
    assert report["labels"][0]["label"] == "spam"
    assert report["labels"][0]["support"] == 60
    assert report["labels"][0]["mistaken_for"] == {"ham": 30}
    forum = [s for s in report["slices"] if s["slice_field"] == "source" and s["slice_value"] == "forum"]
    assert forum[0]["accuracy"] == 0.0
    assert not [s for s in report["slices"] if s["slice_field"] == "score"]  # floats are not slices
    assert report["confusion"] == {"classes": ["ham", "spam"], "matrix": [[0, 30], [0, 30]]}
    assert missing.status_code == 404
    assert "nobody" in missing.json()["detail"]


async def test_items_that_duplicate_training_items_stay_out_of_calibration(tmp_path: Path) -> None:
    bus = MemoryBus()
    settings = RouterSettings(calibration_every_outcomes=40, calibration_growth=0, calibration_interval_s=600)
    router = build_router(bus, SqliteStore(tmp_path / "router.db"), settings)
    await router.start()
    try:
        leaked = [
            scored_for(f"dup{i}", 0.99, LENIENT).model_copy(
                update={
                    "proposal": Proposal(
                        model_id="m", model_version=1, labels=("spam",), confidence=0.99, leakage="exact"
                    )
                }
            )
            for i in range(5)
        ]
        await publish(bus, *leaked)
        await read_all(bus, DECISION_MADE, 5)
        await publish(bus, *(reviewed("p", f"dup{i}", 0.99, True) for i in range(5)))
        await publish(bus, *(reviewed("p", f"i{i}", 0.95, i % 4 != 0) for i in range(35)))
        await eventually(lambda: router.calibration("p") is not None)
        stored = await router.store.find_one("calibrations", {"_id": "p"})
        report = await router.systematic_errors("p")
    finally:
        await router.stop()
    assert stored is not None
    assert (stored["n_outcomes"], stored["n_scored"], stored["leaked"]) == (40, 35, 5)
    assert report.leaked == 5
    assert report.reviewed == 35


def scored_with_scores(item_id: str, p_spam: float) -> LabelScored:
    label = "spam" if p_spam >= 0.5 else "ham"
    proposal = Proposal(
        model_id="m",
        model_version=1,
        labels=(label,),
        confidence=max(p_spam, 1 - p_spam),
        scores={"spam": p_spam, "ham": 1 - p_spam},
    )
    return scored_for(item_id, 0.97, LENIENT).model_copy(update={"proposal": proposal})


async def test_likely_wrong_final_labels_go_back_to_review_once(tmp_path: Path) -> None:
    bus = MemoryBus()
    settings = RouterSettings(calibration_interval_s=600, label_issue_min_finals=50, label_issue_max_per_run=2)
    router = build_router(bus, SqliteStore(tmp_path / "router.db"), settings)
    await router.start()
    try:
        # 120 items scored with confidence, all auto-accepted; then reviewers overrule the model on three.
        await publish(bus, *(scored_with_scores(f"i{i}", 0.97 if i % 2 else 0.03) for i in range(120)))
        await read_all(bus, DECISION_MADE, 120)
        await publish(
            bus,
            *(
                LabelFinalized(
                    producer="review-api",
                    project_id="p",
                    item_id=f"i{i}",
                    labels=("ham",),
                    source=FinalSource.review,
                    guideline_version=1,
                    submitted_at=utcnow(),
                )
                for i in (1, 3, 5)
            ),
        )
        for _ in range(400):  # the router's own auto-finals and the three reviewed ones, all recorded
            if await router.store.count("finals", {"project_id": "p", "source": "review"}) == 3:
                break
            await asyncio.sleep(0.05)
        first = await router.find_label_issues("p")
        second = await router.find_label_issues("p")
        third = await router.find_label_issues("p")
        issues = [
            d
            for d in await read_all(bus, DECISION_MADE, 123)
            if isinstance(d, DecisionMade) and RoutingReason.label_issue in d.reasons
        ]
    finally:
        await router.stop()
    assert len(first) == 2  # bounded per run
    assert len(second) == 1
    assert third == []  # each final is sent back once
    assert sorted(d.item_id for d in issues) == ["i1", "i3", "i5"]
    assert all(d.outcome == "needs_review" for d in issues)
    assert all(d.proposal.labels == ("spam",) for d in issues)  # the model's answer, for the reviewer to weigh
