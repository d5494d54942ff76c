"""Gold items, skills and guideline re-queueing through a real embedded pipeline (review API, labeler, router
and metrics in one process, over REST): the router sends gold items to review, reviewers are scored on them,
and a re-queued final comes back as a new final."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from labelgate.embedded import build_pipeline, embedded_settings, serve_in_background
from labelgate_labeler.settings import LabelerSettings

pytestmark = [pytest.mark.e2e]

PROJECT = "inbox"


@pytest.fixture
async def http(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    pipeline = build_pipeline(embedded_settings(tmp_path), LabelerSettings())
    async with serve_in_background(pipeline.app) as base_url, httpx.AsyncClient(base_url=base_url) as client:
        yield client


async def until_queued(http: httpx.AsyncClient, count: int, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while (await http.get(f"/v1/projects/{PROJECT}/stats")).json()["queue_depth"] < count:
        assert time.monotonic() < deadline, "items were not routed to review in time"
        await asyncio.sleep(0.05)


async def lease(http: httpx.AsyncClient, reviewer: str, skills: list[str] | None = None) -> dict[str, Any] | None:
    response = await http.post(
        f"/v1/projects/{PROJECT}/queue/lease", json={"reviewer_id": reviewer, "skills": skills or []}
    )
    if response.status_code == 204:
        return None
    assert response.status_code == 200, response.text
    task: dict[str, Any] = response.json()
    return task


async def review(http: httpx.AsyncClient, task: dict[str, Any], reviewer: str, label: str) -> None:
    response = await http.post(
        f"/v1/projects/{PROJECT}/tasks/{task['task_id']}/review",
        json={"lease_token": task["lease_token"], "reviewer_id": reviewer, "labels": [label]},
    )
    assert response.status_code == 201, response.text


async def test_gold_items_are_routed_to_review_and_score_reviewers(http: httpx.AsyncClient) -> None:
    created = await http.post(
        "/v1/projects",
        json={"id": PROJECT, "name": "Inbox", "task": {"labels": [{"name": "spam"}, {"name": "ham"}]}},
    )
    assert created.status_code == 201, created.text
    items = [
        {"text": "WIN a FREE cruise now", "idempotency_key": "g1", "gold": {"labels": ["spam"]}},
        {"text": "Lunch at noon?", "idempotency_key": "g2", "gold": {"labels": ["ham"]}},
        {"text": "Your invoice, doctor's notes attached", "idempotency_key": "x1", "required_skill": "medical"},
        {"text": "Meeting moved to 3pm", "idempotency_key": "p1"},
    ]
    submitted = await http.post(f"/v1/projects/{PROJECT}/items", json={"items": items})
    assert submitted.status_code == 202, submitted.text
    ids = {entry["idempotency_key"]: entry["item_id"] for entry in submitted.json()["items"]}
    await until_queued(http, 4)

    for key in ("g1", "g2"):
        item = (await http.get(f"/v1/projects/{PROJECT}/items/{ids[key]}")).json()
        assert item["decision"]["reasons"] == ["gold"], "the router must route gold items to review as gold"
    # rita has no skills: she gets the three other tasks, never the one for a medical reviewer, and answers
    # "spam" to everything (right on g1, wrong on g2).
    seen = []
    while (task := await lease(http, "rita")) is not None:
        assert "gold" not in task["reasons"]
        seen.append(task["item_id"])
        await review(http, task, "rita", "spam")
    assert sorted(seen) == sorted([ids["g1"], ids["g2"], ids["p1"]])
    expert = await lease(http, "mo", skills=["medical"])
    assert expert is not None
    assert expert["item_id"] == ids["x1"]
    await review(http, expert, "mo", "ham")

    g2 = (await http.get(f"/v1/projects/{PROJECT}/items/{ids['g2']}")).json()
    assert g2["final"]["labels"] == ["ham"], "a gold item's final label is its known answer"
    reviewers = {r["reviewer_id"]: r for r in (await http.get(f"/v1/projects/{PROJECT}/reviewers")).json()}
    assert (reviewers["rita"]["reviews"], reviewers["rita"]["gold_reviews"]) == (3, 2)
    assert reviewers["rita"]["gold_accuracy"] == 0.5
    assert reviewers["mo"]["gold_accuracy"] is None

    # A guideline change re-queues the finals labelled spam; the re-review's answer becomes the final.
    changed = await http.put(f"/v1/projects/{PROJECT}/guidelines", json={"text": "Ads are spam.", "requeue": ["spam"]})
    assert changed.status_code == 200, changed.text
    assert changed.json()["requeued"] == 1  # p1; g1 is gold, and its final (spam) is its known answer
    task = await lease(http, "rita")
    assert task is not None
    assert task["reasons"] == ["guideline_change"]
    await review(http, task, "rita", "ham")
    p1 = (await http.get(f"/v1/projects/{PROJECT}/items/{task['item_id']}")).json()
    assert p1["final"]["labels"] == ["ham"]
    assert [f["labels"] for f in p1["earlier_finals"]] == [["spam"]]
