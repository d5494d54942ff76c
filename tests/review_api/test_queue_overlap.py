"""Overlapped review over REST: k reviewers per task, consensus as the final label, and human-vs-human
agreement per project and label."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from labelgate_core.bus.memory import MemoryBus
from labelgate_core.events import LabelFinalized, ReviewSubmitted
from labelgate_core.topics import LABEL_FINALIZED, REVIEW_SUBMITTED
from labelgate_review_api.settings import ReviewApiSettings

from .helpers import create_project, published, queue_items, wait_published

pytestmark = pytest.mark.integration

LEASE = "/v1/projects/news/queue/lease"


@pytest.fixture
def settings() -> ReviewApiSettings:
    return ReviewApiSettings(
        queue_depth_refresh_s=0.5, agreement_min_support=2, dawid_skene_min_answers=6, overlap_max_extra=1
    )


async def lease(api: httpx.AsyncClient, reviewer: str) -> dict[str, Any] | None:
    response = await api.post(LEASE, json={"reviewer_id": reviewer})
    if response.status_code == 204:
        return None
    assert response.status_code == 200, response.text
    task: dict[str, Any] = response.json()
    return task


async def answer(api: httpx.AsyncClient, reviewer: str, labels: list[str]) -> dict[str, Any]:
    task = await lease(api, reviewer)
    assert task is not None, f"{reviewer} got nothing to review"
    response = await api.post(
        f"/v1/projects/news/tasks/{task['task_id']}/review",
        json={"lease_token": task["lease_token"], "reviewer_id": reviewer, "labels": labels},
    )
    assert response.status_code == 201, response.text
    return task


async def item(api: httpx.AsyncClient, item_id: str) -> dict[str, Any]:
    body: dict[str, Any] = (await api.get(f"/v1/projects/news/items/{item_id}")).json()
    return body


async def overlapped_project(api: httpx.AsyncClient, k: int = 2, **routing: Any) -> None:
    await create_project(api, routing={"overlap_rate": 1.0, "overlap_k": k, **routing})


async def test_an_overlapped_task_is_answered_by_k_different_reviewers(api: httpx.AsyncClient, bus: MemoryBus) -> None:
    await overlapped_project(api)
    [item_id] = await queue_items(api, bus, "news", "The match ended 2-1")

    first = await answer(api, "ana", ["sports"])
    again = await lease(api, "ana")
    middle = await item(api, item_id)
    second = await answer(api, "bob", ["sports"])

    assert again is None, "one reviewer must never answer the same overlapped task twice"
    assert middle["state"] == "queued"
    assert middle["final"] is None
    assert first["item_id"] == second["item_id"] == item_id
    done = await item(api, item_id)
    assert done["state"] == "final"
    assert done["final"]["labels"] == ["sports"]
    assert done["final"]["consensus"] == {"method": "majority", "support": 1.0, "tied": False, "answers": 2}
    assert [r["reviewer_id"] for r in done["reviews"]] == ["ana", "bob"]
    reviews = await wait_published(bus, REVIEW_SUBMITTED, 2)
    assert {r.reviewer_id for r in reviews if isinstance(r, ReviewSubmitted)} == {"ana", "bob"}
    await wait_published(bus, LABEL_FINALIZED, 1)
    assert await lease(api, "carl") is None


async def test_a_reviewer_holding_one_slot_cannot_lease_another(api: httpx.AsyncClient, bus: MemoryBus) -> None:
    await overlapped_project(api)
    await queue_items(api, bus, "news", "The match ended 2-1")

    held = await lease(api, "ana")
    second = await lease(api, "ana")
    other = await lease(api, "bob")

    assert held is not None
    assert second is None
    assert other is not None
    assert other["task_id"] != held["task_id"]


async def test_the_majority_decides_and_is_announced_last(api: httpx.AsyncClient, bus: MemoryBus) -> None:
    await overlapped_project(api, k=3)
    [item_id] = await queue_items(api, bus, "news", "Ministers discuss the football budget")

    await answer(api, "ana", ["politics"])
    await answer(api, "bob", ["politics"])
    await answer(api, "carl", ["sports"])

    done = await item(api, item_id)
    assert done["final"]["labels"] == ["politics"]
    reviews = [r for r in await wait_published(bus, REVIEW_SUBMITTED, 3) if isinstance(r, ReviewSubmitted)]
    # A reader keeping one label per item (the labeler's examples, the router's outcomes) keeps the last one.
    assert reviews[-1].labels == ("politics",)
    [final] = await wait_published(bus, LABEL_FINALIZED, 1)
    assert isinstance(final, LabelFinalized)
    assert final.labels == ("politics",)


async def test_a_tie_asks_one_more_reviewer(api: httpx.AsyncClient, bus: MemoryBus) -> None:
    await overlapped_project(api)
    [item_id] = await queue_items(api, bus, "news", "Ministers discuss the football budget")

    await answer(api, "ana", ["politics"])
    await answer(api, "bob", ["sports"])
    tied = await item(api, item_id)
    announced_while_tied = await published(bus, REVIEW_SUBMITTED)
    await answer(api, "carl", ["sports"])

    assert tied["state"] == "queued", "a tie must not become final"
    assert announced_while_tied == []
    done = await item(api, item_id)
    assert done["final"]["labels"] == ["sports"]
    assert done["final"]["consensus"]["answers"] == 3
    assert done["final"]["consensus"]["tied"] is False


async def test_a_tie_that_persists_past_the_extra_reviewers_is_broken_and_flagged(
    api: httpx.AsyncClient, bus: MemoryBus
) -> None:
    await overlapped_project(api)
    [item_id] = await queue_items(api, bus, "news", "Ministers discuss the football budget")

    await answer(api, "ana", ["politics"])
    await answer(api, "bob", ["sports"])
    await answer(api, "carl", ["tech"])  # overlap_max_extra=1: no fourth reviewer

    done = await item(api, item_id)
    assert done["state"] == "final"
    assert done["final"]["consensus"]["tied"] is True
    assert done["final"]["labels"] in (["politics"], ["sports"], ["tech"])
    assert await lease(api, "dora") is None


async def test_dawid_skene_follows_the_reliable_reviewer_once_there_is_data(
    api: httpx.AsyncClient, bus: MemoryBus
) -> None:
    await overlapped_project(api, k=3, consensus="dawid_skene")
    # (truth, bob, carl): ana is always right, bob and carl err in turn and never together.
    history = [
        ("sports", "sports", "politics"),
        ("politics", "politics", "sports"),
        ("tech", "sports", "tech"),
        ("sports", "tech", "sports"),
        ("politics", "tech", "politics"),
        ("tech", "tech", "sports"),
        ("sports", "sports", "tech"),
        ("politics", "sports", "politics"),
        ("tech", "politics", "tech"),
    ]
    ids = await queue_items(api, bus, "news", *[f"history {i}" for i in range(len(history))])
    plan = {
        reviewer: {item_id: row[column] for item_id, row in zip(ids, history, strict=True)}
        for reviewer, column in (("ana", 0), ("bob", 1), ("carl", 2))
    }
    for reviewer, answers in plan.items():
        while (task := await lease(api, reviewer)) is not None:
            await review_as(api, task, reviewer, answers[task["item_id"]])
    [last] = await queue_items(api, bus, "news", "Who wins the election?")
    await answer(api, "ana", ["politics"])
    await answer(api, "bob", ["sports"])
    await answer(api, "carl", ["sports"])

    done = await item(api, last)
    assert done["final"]["consensus"]["method"] == "dawid_skene"
    assert done["final"]["labels"] == ["politics"], "majority vote would have said sports"


async def review_as(api: httpx.AsyncClient, task: dict[str, Any], reviewer: str, label: str) -> None:
    response = await api.post(
        f"/v1/projects/news/tasks/{task['task_id']}/review",
        json={"lease_token": task["lease_token"], "reviewer_id": reviewer, "labels": [label]},
    )
    assert response.status_code == 201, response.text


async def lease_and_answer(api: httpx.AsyncClient, reviewer: str, label: str) -> dict[str, Any] | None:
    task = await lease(api, reviewer)
    if task is None:
        return None
    response = await api.post(
        f"/v1/projects/news/tasks/{task['task_id']}/review",
        json={"lease_token": task["lease_token"], "reviewer_id": reviewer, "labels": [label]},
    )
    assert response.status_code == 201, response.text
    return task


async def test_agreement_is_reported_per_project_and_label_with_ambiguous_labels(
    api: httpx.AsyncClient, bus: MemoryBus
) -> None:
    await overlapped_project(api)
    texts = [f"item {i}" for i in range(6)]
    await queue_items(api, bus, "news", *texts)
    # Both agree on sports, and on tech; politics is read differently every time (bob says tech).
    plan = {
        "ana": ["sports", "sports", "tech", "tech", "politics", "politics"],
        "bob": ["sports", "sports", "tech", "tech", "tech", "tech"],
    }
    order: list[str] = []
    for label in plan["ana"]:
        task = await lease_and_answer(api, "ana", label)
        assert task is not None
        order.append(task["item_id"])
    answers = dict(zip(order, plan["bob"], strict=True))
    while (task := await lease(api, "bob")) is not None:
        response = await api.post(
            f"/v1/projects/news/tasks/{task['task_id']}/review",
            json={"lease_token": task["lease_token"], "reviewer_id": "bob", "labels": [answers[task["item_id"]]]},
        )
        assert response.status_code == 201, response.text

    response = await api.get("/v1/projects/news/agreement")

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["overlapped_items"] == 6
    assert body["answers"] == 12
    assert 0.0 < body["cohen_kappa"] < 1.0
    assert body["fleiss_kappa"] is not None
    assert body["krippendorff_alpha"] is not None
    labels = {entry["label"]: entry for entry in body["labels"]}
    assert labels["sports"]["specific_agreement"] == 1.0
    assert labels["politics"]["specific_agreement"] == 0.0
    assert body["ambiguous_labels"] == ["politics"]
    assert (await api.get("/v1/projects/nope/agreement")).status_code == 404


async def test_agreement_without_overlap_is_empty(api: httpx.AsyncClient) -> None:
    await create_project(api)

    body = (await api.get("/v1/projects/news/agreement")).json()

    assert body["overlapped_items"] == 0
    assert body["cohen_kappa"] is None
    assert body["ambiguous_labels"] == []


async def test_no_overlap_by_default(api: httpx.AsyncClient, bus: MemoryBus) -> None:
    await create_project(api)
    [item_id] = await queue_items(api, bus, "news", "The match ended 2-1")

    await answer(api, "ana", ["sports"])

    done = await item(api, item_id)
    assert done["state"] == "final"
    assert done["final"]["consensus"] is None


@pytest.mark.parametrize(
    ("routing", "field"),
    [
        ({"overlap_k": 1}, "overlap_k"),
        ({"overlap_k": 11}, "overlap_k"),
        ({"overlap_rate": 1.5}, "overlap_rate"),
        ({"consensus": "loudest"}, "consensus"),
    ],
)
async def test_bad_overlap_settings_are_422(api: httpx.AsyncClient, routing: dict[str, Any], field: str) -> None:
    await create_project(api)

    created = await api.post(
        "/v1/projects", json={"id": "other", "name": "x", "task": {"labels": [{"name": "a"}]}, "routing": routing}
    )
    patched = await api.patch("/v1/projects/news/routing", json=routing)

    for response in (created, patched):
        assert response.status_code == 422
        assert field in response.json()["error"]["message"]


async def test_overlap_settings_can_be_changed(api: httpx.AsyncClient) -> None:
    await create_project(api)

    response = await api.patch(
        "/v1/projects/news/routing", json={"overlap_rate": 0.1, "overlap_k": 3, "consensus": "dawid_skene"}
    )

    assert response.status_code == 200, response.text
    routing = response.json()["routing"]
    assert (routing["overlap_rate"], routing["overlap_k"], routing["consensus"]) == (0.1, 3, "dawid_skene")
