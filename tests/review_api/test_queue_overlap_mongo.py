"""Overlapped review on MongoDB, where transactions run side by side under snapshot isolation: answers to one
round that commit at the same moment still settle it exactly once."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from labelgate_core.bus.memory import MemoryBus
from labelgate_core.consumer import RetryPolicy
from labelgate_core.events import LabelFinalized
from labelgate_core.store.mongo import MongoStore
from labelgate_core.topics import LABEL_FINALIZED
from labelgate_review_api.main import build_api, build_review_api
from labelgate_review_api.settings import ReviewApiSettings

from .helpers import Clock, create_project, queue_items, wait_published

pytestmark = pytest.mark.integration

LEASE = "/v1/projects/news/queue/lease"


@pytest.fixture
async def on_mongo(mongo_url: str) -> AsyncIterator[tuple[httpx.AsyncClient, MemoryBus]]:
    bus = MemoryBus(partitions=2)
    await bus.start()
    store = MongoStore(mongo_url, f"overlap-{uuid.uuid4().hex[:8]}")
    service = build_review_api(
        bus, store, ReviewApiSettings(), retry=RetryPolicy(max_attempts=5, backoff_initial_s=0.001), clock=Clock()
    )
    await service.start()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_api(service)), base_url="http://r") as api:
        yield api, bus
    await service.stop(grace_s=5)
    await bus.stop()


async def lease(api: httpx.AsyncClient, reviewer: str) -> dict[str, Any]:
    response = await api.post(LEASE, json={"reviewer_id": reviewer})
    assert response.status_code == 200, response.text
    task: dict[str, Any] = response.json()
    return task


async def test_answers_committing_together_settle_the_round_once(
    on_mongo: tuple[httpx.AsyncClient, MemoryBus],
) -> None:
    api, bus = on_mongo
    await create_project(api, routing={"overlap_rate": 1.0, "overlap_k": 3})
    ids = await queue_items(api, bus, "news", *[f"item {i}" for i in range(4)])

    # Every reviewer takes one slot of every item (never two of one), then all answers arrive at once.
    leased = [(await lease(api, reviewer), reviewer) for reviewer in ("ana", "bob", "carl") for _ in ids]
    for reviewer in ("ana", "bob", "carl"):
        assert sorted(t["item_id"] for t, r in leased if r == reviewer) == sorted(ids)
    responses = await asyncio.gather(
        *(
            api.post(
                f"/v1/projects/news/tasks/{task['task_id']}/review",
                json={"lease_token": task["lease_token"], "reviewer_id": reviewer, "labels": ["sports"]},
            )
            for task, reviewer in leased
        )
    )
    assert {r.status_code for r in responses} == {201}, [r.text for r in responses]

    for item_id in ids:
        body = (await api.get(f"/v1/projects/news/items/{item_id}")).json()
        assert body["state"] == "final", body
        assert body["final"]["consensus"]["answers"] == 3
    finals = await wait_published(bus, LABEL_FINALIZED, len(ids))
    assert sorted(e.item_id for e in finals if isinstance(e, LabelFinalized)) == sorted(ids)
