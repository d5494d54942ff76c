"""Reviewer skills over REST: items that require a skill are leased only to reviewers who declare it; tasks
queued before skills existed need none."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from labelgate_core.bus.memory import MemoryBus
from labelgate_review_api.documents import task_id_for
from labelgate_review_api.service import ReviewApiService

from .helpers import create_project, decision, publish, submit, wait_state

pytestmark = pytest.mark.integration

ITEMS = "/v1/projects/news/items"
LEASE = "/v1/projects/news/queue/lease"


async def lease(api: httpx.AsyncClient, reviewer: str, skills: list[str] | None = None) -> dict[str, Any] | None:
    body: dict[str, Any] = {"reviewer_id": reviewer}
    if skills is not None:
        body["skills"] = skills
    response = await api.post(LEASE, json=body)
    if response.status_code == 204:
        return None
    assert response.status_code == 200, response.text
    task: dict[str, Any] = response.json()
    return task


async def queue(api: httpx.AsyncClient, bus: MemoryBus, items: list[dict[str, Any]]) -> list[str]:
    response = await api.post(ITEMS, json={"items": items})
    assert response.status_code == 202, response.text
    ids = [entry["item_id"] for entry in response.json()["items"]]
    # The expert item is the most uncertain, so it would come first to anyone.
    confidences = [0.1 if item.get("required_skill") else 0.6 for item in items]
    await publish(bus, *(decision("news", i, confidence=c) for i, c in zip(ids, confidences, strict=True)))
    for item_id in ids:
        await wait_state(api, "news", item_id, "queued")
    return ids


async def test_a_task_that_needs_a_skill_goes_only_to_a_reviewer_who_has_it(
    api: httpx.AsyncClient, bus: MemoryBus
) -> None:
    await create_project(api)
    expert, plain = await queue(
        api, bus, [{"text": "Dosage for a child", "required_skill": "medical"}, {"text": "A football match"}]
    )

    first = await lease(api, "ana")
    nothing_left = await lease(api, "ana", skills=["legal"])
    doctor = await lease(api, "dora", skills=["legal", "medical"])

    assert first is not None
    assert first["item_id"] == plain
    assert first["required_skill"] is None
    assert nothing_left is None, "a reviewer without the skill must not get the expert task"
    assert doctor is not None
    assert doctor["item_id"] == expert
    assert doctor["required_skill"] == "medical"
    item = (await api.get(f"/v1/projects/news/items/{expert}")).json()
    assert item["required_skill"] == "medical"


async def test_a_reviewer_with_skills_still_gets_tasks_that_need_none(api: httpx.AsyncClient, bus: MemoryBus) -> None:
    await create_project(api)
    [plain] = await queue(api, bus, [{"text": "A football match"}])

    task = await lease(api, "dora", skills=["medical"])

    assert task is not None
    assert task["item_id"] == plain


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"reviewer_id": "ana", "skills": [""]}, "skills[0]"),
        ({"reviewer_id": "ana", "skills": ["has space"]}, "skills[0]"),
        ({"reviewer_id": "ana", "skills": "medical"}, "skills"),
    ],
)
async def test_bad_skills_in_a_lease_request_are_422(api: httpx.AsyncClient, body: dict[str, Any], field: str) -> None:
    await create_project(api)

    response = await api.post(LEASE, json=body)

    assert response.status_code == 422
    assert field in response.json()["error"]["message"]


async def test_a_bad_required_skill_is_422_naming_the_item(api: httpx.AsyncClient) -> None:
    await create_project(api)

    response = await api.post(ITEMS, json={"items": [{"text": "a"}, {"text": "b", "required_skill": "x y"}]})

    assert response.status_code == 422
    assert "items[1].required_skill" in response.json()["error"]["message"]


async def test_a_task_queued_before_skills_existed_is_leased_and_reviewed(
    api: httpx.AsyncClient, service: ReviewApiService
) -> None:
    await create_project(api)
    [item_id] = await submit(api, "news", "An old queued item")
    task_id = task_id_for("news", item_id)
    async with service.store.transaction() as tx:  # a task as the review API stored it before skills and rounds
        await tx.insert(
            "tasks",
            {
                "_id": task_id,
                "project_id": "news",
                "item_id": item_id,
                "done": False,
                "priority": -0.5,
                "review_value": 0.5,
                "queued_at": "2025-01-01T00:00:00+00:00",
                "queued_ts": 0.0,
                "available_at": 0.0,
                "lease_token": None,
                "reviewer_id": None,
                "lease_count": 0,
                "proposal": None,
                "reasons": ["low_confidence"],
                "decision_event_id": None,
                "trace_id": None,
                "review_id": None,
                "closed_reason": None,
            },
        )
        await tx.update_one("items", {"_id": item_id}, set={"state": "queued"})

    await service.setup()  # what a restart runs
    task = await lease(api, "ana")

    assert task is not None
    assert task["task_id"] == task_id
    response = await api.post(
        f"/v1/projects/news/tasks/{task_id}/review",
        json={"lease_token": task["lease_token"], "reviewer_id": "ana", "labels": ["tech"]},
    )
    assert response.status_code == 201, response.text
    item = (await api.get(f"/v1/projects/news/items/{item_id}")).json()
    assert item["final"]["labels"] == ["tech"]
