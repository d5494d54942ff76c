"""Label issues end to end, through the REST API of a real embedded pipeline: a reviewer's slips that the model
confidently contradicts are found among the final labels, sent back to the queue once, and corrected."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from labelgate.embedded import build_pipeline, embedded_settings, serve_in_background
from labelgate_client import LabelgateAPIError, LabelgateClient
from labelgate_labeler.settings import LabelerSettings

from .synthetic import make_items
from .test_pipeline import model_version, settled

pytestmark = [pytest.mark.e2e]

PROJECT = "slips"


@pytest.fixture
async def url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[str]:
    monkeypatch.setenv("LABELGATE_ROUTER_LABEL_ISSUE_INTERVAL_S", "0.5")
    monkeypatch.setenv("LABELGATE_ROUTER_LABEL_ISSUE_MIN_FINALS", "60")
    labeler = LabelerSettings(retrain_every_reviews=1000, retrain_interval_s=1, min_train_examples=20)
    pipeline = build_pipeline(embedded_settings(tmp_path), labeler)
    async with serve_in_background(pipeline.app) as base_url:
        yield base_url


async def review(client: LabelgateClient, task_id: str, token: str, label: str) -> None:
    try:
        await client.review(PROJECT, task_id, token, "rita", [label])
    except LabelgateAPIError as exc:
        if exc.code != "task_closed":  # finalized while in hand: nothing to do
            raise


async def test_a_reviewers_slips_go_back_to_review_once_and_get_corrected(url: str) -> None:
    async with LabelgateClient(url) as client:
        # Every item goes to a person (audit rate 1), so every final label is a reviewer's.
        await client.create_project(PROJECT, name="Slips", labels=["spam", "ham"], threshold=0.5, audit_rate=1.0)
        corpus = make_items(160, seed=4)
        truth: dict[str, str] = {}
        first = await client.submit_items(
            PROJECT, [{"text": it["text"], "idempotency_key": it["id"]} for it in corpus[:40]]
        )
        truth |= {s.item_id: corpus[i]["label"] for i, s in enumerate(first.items)}
        await settled(client, PROJECT)
        while (task := await client.lease(PROJECT, reviewer_id="rita")) is not None:
            await review(client, task.task_id, task.lease_token, truth[task.item_id])
        deadline = time.monotonic() + 60
        while await model_version(url, PROJECT) < 1:
            assert time.monotonic() < deadline, "the labeler never trained"
            await asyncio.sleep(0.1)

        second = await client.submit_items(
            PROJECT, [{"text": it["text"], "idempotency_key": it["id"]} for it in corpus[40:]]
        )
        truth |= {s.item_id: corpus[40 + i]["label"] for i, s in enumerate(second.items)}
        await settled(client, PROJECT)
        slips: set[str] = set()
        questioned: list[str] = []  # items sent back as label issues (the search runs every half second)
        while (task := await client.lease(PROJECT, reviewer_id="rita")) is not None:
            label = truth[task.item_id]
            if task.reasons == ["label_issue"]:
                questioned.append(task.item_id)
                await review(client, task.task_id, task.lease_token, label)
                continue
            proposal = task.proposal
            confident = proposal is not None and (proposal.confidence or 0) >= 0.9 and proposal.labels == [label]
            if confident and len(slips) < 3:  # the model is sure and right; the reviewer clicks the wrong class
                slips.add(task.item_id)
                label = "ham" if label == "spam" else "spam"
            await review(client, task.task_id, task.lease_token, label)
        assert len(slips) == 3

        # The router's periodic search sends the slips back; the reviewer now gets them right.
        deadline = time.monotonic() + 60
        while not slips <= set(questioned):
            assert time.monotonic() < deadline, f"only {questioned} came back of {sorted(slips)}"
            task = await client.lease(PROJECT, reviewer_id="rita")
            if task is None:
                await asyncio.sleep(0.2)
                continue
            assert task.reasons == ["label_issue"]
            questioned.append(task.item_id)
            await review(client, task.task_id, task.lease_token, truth[task.item_id])
        for item_id in slips:
            item = await client.get_item(PROJECT, item_id)
            assert item.final is not None
            assert item.final.labels == [truth[item_id]]

        # Several more searches: a final the reviewer gave with the flag in view is not questioned again.
        await asyncio.sleep(2.0)
        again = await client.lease(PROJECT, reviewer_id="rita")
        assert again is None or again.item_id not in questioned
        assert len(questioned) == len(set(questioned))
