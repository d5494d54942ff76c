"""The whole loop through the REST API of a real embedded pipeline (uvicorn on a free port): cold start to
review, retraining, auto-accept, audits, retried POSTs and every kind of bad input a client can send."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from labelgate.embedded import build_pipeline, embedded_settings, serve_in_background
from labelgate.replay import GoldItem, ReplayOptions, all_items, replay
from labelgate_client import LabelgateAPIError, LabelgateClient
from labelgate_client.models import Stats
from labelgate_labeler.settings import LabelerSettings

from .synthetic import make_items

pytestmark = [pytest.mark.e2e]

PROJECT = "inbox"


@pytest.fixture
async def url(tmp_path: Path) -> AsyncIterator[str]:
    labeler = LabelerSettings(retrain_every_reviews=20, retrain_interval_s=1, min_train_examples=20)
    pipeline = build_pipeline(embedded_settings(tmp_path), labeler)
    async with serve_in_background(pipeline.app) as base_url:
        yield base_url


@pytest.fixture
async def client(url: str) -> AsyncIterator[LabelgateClient]:
    async with LabelgateClient(url) as c:
        yield c


async def settled(client: LabelgateClient, project: str, timeout_s: float = 60) -> Stats:
    deadline = time.monotonic() + timeout_s
    while True:
        stats = await client.stats(project)
        if stats.submitted == 0:
            return stats
        assert time.monotonic() < deadline, f"items still undecided: {stats}"
        await asyncio.sleep(0.05)


async def review_all(client: LabelgateClient, project: str, gold: dict[str, str]) -> int:
    reviewed = 0
    while (task := await client.lease(project, reviewer_id="rita")) is not None:
        await client.review(project, task.task_id, task.lease_token, "rita", [gold[task.item_id]])
        reviewed += 1
    return reviewed


async def model_version(url: str, project: str) -> int:
    async with httpx.AsyncClient(base_url=url) as http:
        body = (await http.get(f"/v1/projects/{project}/metrics")).json()
    return int(body.get("model_version") or 0)


async def test_cold_start_review_retrain_auto_accept_and_audit(client: LabelgateClient, url: str) -> None:
    await client.create_project(PROJECT, name="Inbox", labels=["spam", "ham"], threshold=0.8, audit_rate=0.2)
    corpus = make_items(260)
    payload = [{"text": it["text"], "idempotency_key": it["id"]} for it in corpus]

    # Cold start: no model yet, so every item goes to a person.
    first = await client.submit_items(PROJECT, payload[:60])
    gold = {s.item_id: corpus[i]["label"] for i, s in enumerate(first.items)}
    stats = await settled(client, PROJECT)
    assert stats.queue_depth == 60
    assert stats.final == 0
    cold = await client.get_item(PROJECT, first.items[0].item_id)
    assert cold.decision is not None
    assert cold.decision.reasons == ["no_confidence"]
    assert cold.decision.proposal.confidence is None

    # A retried POST (the client never saw the answer) creates nothing twice and returns the same ids.
    again = await client.submit_items(PROJECT, payload[:60])
    assert again.accepted == 0
    assert again.duplicates == 60
    assert [s.item_id for s in again.items] == [s.item_id for s in first.items]

    assert await review_all(client, PROJECT, gold) == 60
    deadline = time.monotonic() + 60
    while await model_version(url, PROJECT) < 1:
        assert time.monotonic() < deadline, "the labeler never trained on the 60 reviews"
        await asyncio.sleep(0.1)

    # With a model, confident labels are auto-accepted; a share of those is audited by a person.
    second = await client.submit_items(PROJECT, payload[60:])
    gold |= {s.item_id: corpus[60 + i]["label"] for i, s in enumerate(second.items)}
    stats = await settled(client, PROJECT)
    items = [await client.get_item(PROJECT, s.item_id) for s in second.items]
    decisions = [it.decision for it in items if it.decision]
    assert len(decisions) == 200
    auto = [it for it in items if it.final and it.final.source == "auto"]
    audited = [it for it in items if it.decision and "audit" in it.decision.reasons]
    assert len(auto) >= 40, f"only {len(auto)} of 200 auto-accepted after training on 60 reviews"
    assert audited, "no confident label was audited at audit_rate 0.2"
    assert all(it.decision and it.decision.outcome == "auto_accepted" for it in auto)
    assert all(it.final and it.final.labels == [gold[it.item_id]] for it in auto), "auto-accepted a wrong label"
    assert stats.final_by_source.auto == len(auto)

    # Reviewers finish the rest; an audit that disagrees with the AI is a correction.
    await review_all(client, PROJECT, gold)
    stats = await client.stats(PROJECT)
    assert stats.final == 260
    assert stats.queue_depth == 0
    audited_item = await client.get_item(PROJECT, audited[0].item_id)
    assert audited_item.final is not None
    assert audited_item.final.source == "review"
    assert len(audited_item.reviews) == 1

    exported = [line async for line in client.export(PROJECT)]
    assert len(exported) == 260
    assert len({e.item_id for e in exported}) == 260
    assert all(e.labels == [gold[e.item_id]] for e in exported)


async def test_bad_input_gets_a_clear_4xx_and_loses_nothing(client: LabelgateClient, url: str) -> None:
    await client.create_project(PROJECT, name="Inbox", labels=["spam", "ham"])
    kept = await client.submit_items(PROJECT, [{"text": "lunch meeting agenda", "idempotency_key": "k1"}])

    async with httpx.AsyncClient(base_url=url) as http:
        cases = {
            "unknown project": (
                await http.post("/v1/projects/nope/items", json={"items": [{"text": "x"}]}), 404, "nope"),
            "empty text": (
                await http.post(f"/v1/projects/{PROJECT}/items", json={"items": [{"text": "ok"}, {"text": "  "}]}),
                422, "text"),
            "batch too large": (
                await http.post(f"/v1/projects/{PROJECT}/items", json={"items": [{"text": "x"}] * 10_001}),
                413, "10000"),
            "malformed JSON": (
                await http.post(f"/v1/projects/{PROJECT}/items", content=b'{"items": [',
                                headers={"content-type": "application/json"}),
                400, "JSON"),
        }
        for name, (response, status, needle) in cases.items():
            assert response.status_code == status, f"{name}: {response.status_code} {response.text}"
            message = response.json()["error"]["message"]
            assert needle in message, f"{name}: the message does not say what is wrong: {message!r}"

    await settled(client, PROJECT)
    task = await client.lease(PROJECT, reviewer_id="rita")
    assert task is not None
    with pytest.raises(LabelgateAPIError) as bad_label:
        await client.review(PROJECT, task.task_id, task.lease_token, "rita", ["eggs"])
    assert bad_label.value.status == 422
    assert "eggs" in bad_label.value.message

    # Nothing of the rejected requests was kept, and the accepted item is still there and still reviewable.
    stats = await client.stats(PROJECT)
    assert stats.items == 1
    await client.review(PROJECT, task.task_id, task.lease_token, "rita", ["ham"])
    item = await client.get_item(PROJECT, kept.items[0].item_id)
    assert item.final is not None
    assert item.final.labels == ["ham"]


async def test_replay_with_a_target_precision_auto_accepts_only_against_a_derived_threshold(
    client: LabelgateClient,
) -> None:
    corpus = make_items(400, seed=5)
    items = [GoldItem(it["id"], it["text"], (it["label"],), {}) for it in corpus]
    options = ReplayOptions(project_id="target", target_precision=0.95, audit_rate=0.1, batch=100, reviewers=2)

    report = await replay(client, items, options)

    assert report.target_precision == 0.95
    assert report.final_accuracy == 1.0
    assert report.ece["raw"] is not None
    assert report.ece["calibrated"] is not None
    assert (await client.get_project("target")).routing.target_precision == 0.95
    auto = [it async for it in all_items(client, "target") if it.final and it.final.source == "auto"]
    assert auto, "nothing was auto-accepted once enough reviewed outcomes showed the target was reached"
    for item in auto:
        decision = item.decision
        assert decision is not None
        assert decision.calibration_version is not None, "auto-accepted before any calibration was fitted"
        assert decision.threshold is not None
        assert decision.calibrated_confidence is not None
        assert decision.calibrated_confidence >= decision.threshold
