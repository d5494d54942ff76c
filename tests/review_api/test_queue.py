"""The review queue over REST: lease order and exclusivity, expiry, heartbeats, releases and reviews."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import httpx
import pytest

from labelgate_core.bus.memory import MemoryBus
from labelgate_core.events import LabelDef, LabelFinalized, ReviewSubmitted, TaskSpec, TaskType
from labelgate_core.topics import LABEL_FINALIZED, REVIEW_SUBMITTED
from labelgate_review_api.errors import InvalidLabelsError
from labelgate_review_api.queue import check_labels

from .helpers import (
    Clock,
    auto_final,
    create_project,
    decision,
    publish,
    queue_items,
    submit,
    wait_published,
    wait_state,
)

LEASE = "/v1/projects/news/queue/lease"


async def lease(api: httpx.AsyncClient, reviewer: str = "ana", **extra: Any) -> dict[str, Any] | None:
    response = await api.post(LEASE, json={"reviewer_id": reviewer, **extra})
    if response.status_code == 204:
        return None
    assert response.status_code == 200, response.text
    task: dict[str, Any] = response.json()
    return task


async def review(api: httpx.AsyncClient, task: dict[str, Any], labels: list[str], **extra: Any) -> httpx.Response:
    body = {"lease_token": task["lease_token"], "reviewer_id": "ana", "labels": labels, **extra}
    return await api.post(f"/v1/projects/news/tasks/{task['task_id']}/review", json=body)


@pytest.mark.integration
async def test_nothing_to_review_is_204(api: httpx.AsyncClient) -> None:
    await create_project(api)

    response = await api.post(LEASE, json={"reviewer_id": "ana"})

    assert response.status_code == 204
    assert response.content == b""


@pytest.mark.integration
async def test_leased_task_carries_what_the_reviewer_needs(
    api: httpx.AsyncClient, bus: MemoryBus, clock: Clock
) -> None:
    await create_project(api)
    [item_id] = await queue_items(api, bus, "news", "The match ended 2-1", confidences=[0.4])

    task = await lease(api, lease_seconds=60)

    assert task is not None
    assert task["item_id"] == item_id
    assert task["text"] == "The match ended 2-1"
    assert task["proposal"]["labels"] == ["sports"]
    assert task["proposal"]["confidence"] == 0.4
    assert task["reasons"] == ["low_confidence"]
    assert [label["name"] for label in task["task"]["labels"]] == ["sports", "politics", "tech"]
    assert task["lease_token"]
    assert task["guideline_version"] == 1
    expires = datetime.fromisoformat(task["lease_expires_at"])
    assert abs(expires.timestamp() - (clock.now + 60)) < 1e-3


@pytest.mark.integration
async def test_least_confident_first_then_oldest(api: httpx.AsyncClient, bus: MemoryBus, clock: Clock) -> None:
    await create_project(api)
    sure = await queue_items(api, bus, "news", "sure", confidences=[0.8])
    clock.advance(1)
    unsure_old = await queue_items(api, bus, "news", "unsure old", confidences=[0.3])
    clock.advance(1)
    unsure_new = await queue_items(api, bus, "news", "unsure new", confidences=[0.3])
    cold = await queue_items(api, bus, "news", "cold start", confidences=[None])

    order = []
    while (task := await lease(api)) is not None:
        order.append(task["item_id"])

    assert order == [*cold, *unsure_old, *unsure_new, *sure]


@pytest.mark.integration
async def test_calibrated_confidence_and_class_rarity_order_the_queue(api: httpx.AsyncClient, bus: MemoryBus) -> None:
    await create_project(api)
    finals = await submit(api, "news", "final 1", "final 2", "final 3")
    await publish(bus, *(auto_final("news", item_id, ["sports"]) for item_id in finals))
    for item_id in finals:
        await wait_state(api, "news", item_id, "final")
    overconfident, reliable, common, rare = await submit(api, "news", "over", "reliable", "common", "rare")
    await publish(
        bus,
        # A raw 0.95 that calibration says is right half the time beats a raw 0.6 that is right 90% of it.
        decision("news", overconfident, confidence=0.95).model_copy(update={"calibrated_confidence": 0.5}),
        decision("news", reliable, confidence=0.6).model_copy(update={"calibrated_confidence": 0.9}),
        # Same confidence: the class with no final label yet first.
        decision("news", common, confidence=0.7, labels=["sports"]),
        decision("news", rare, confidence=0.7, labels=["tech"]),
    )
    for item_id in (overconfident, reliable, common, rare):
        await wait_state(api, "news", item_id, "queued")

    order = []
    while (task := await lease(api)) is not None:
        order.append(task["item_id"])

    assert order == [overconfident, rare, common, reliable]


@pytest.mark.integration
async def test_two_reviewers_never_get_the_same_task(api: httpx.AsyncClient, bus: MemoryBus) -> None:
    await create_project(api)
    ids = await queue_items(api, bus, "news", *[f"item {n}" for n in range(6)])

    tasks = await asyncio.gather(*(lease(api, f"reviewer-{n}") for n in range(10)))

    leased = [task["item_id"] for task in tasks if task is not None]
    assert sorted(leased) == sorted(ids)
    assert sum(task is None for task in tasks) == 4


@pytest.mark.integration
async def test_an_expired_lease_is_leasable_again(api: httpx.AsyncClient, bus: MemoryBus, clock: Clock) -> None:
    await create_project(api)
    await queue_items(api, bus, "news", "only one")
    first = await lease(api, "ana", lease_seconds=30)
    assert first is not None
    assert await lease(api, "bob") is None

    clock.advance(31)
    second = await lease(api, "bob")

    assert second is not None
    assert second["task_id"] == first["task_id"]
    assert second["lease_token"] != first["lease_token"]
    late = await review(api, first, ["sports"])
    assert late.status_code == 409
    assert late.json()["error"]["code"] == "lease_lost"


@pytest.mark.integration
async def test_heartbeat_extends_the_lease(api: httpx.AsyncClient, bus: MemoryBus, clock: Clock) -> None:
    await create_project(api)
    await queue_items(api, bus, "news", "long read")
    task = await lease(api, lease_seconds=30)
    assert task is not None

    for _ in range(3):
        clock.advance(20)
        response = await api.post(
            f"/v1/projects/news/tasks/{task['task_id']}/heartbeat",
            json={"lease_token": task["lease_token"], "lease_seconds": 30},
        )
        assert response.status_code == 200, response.text
        assert response.json()["task_id"] == task["task_id"]

    assert await lease(api, "bob") is None
    assert (await review(api, task, ["sports"])).status_code == 201


@pytest.mark.integration
async def test_heartbeat_after_the_lease_is_lost_is_409(api: httpx.AsyncClient, bus: MemoryBus, clock: Clock) -> None:
    await create_project(api)
    await queue_items(api, bus, "news", "x")
    task = await lease(api, lease_seconds=10)
    assert task is not None
    clock.advance(11)

    response = await api.post(
        f"/v1/projects/news/tasks/{task['task_id']}/heartbeat", json={"lease_token": task["lease_token"]}
    )

    assert response.status_code == 409
    assert "expired" in response.json()["error"]["message"]
    wrong = await api.post(f"/v1/projects/news/tasks/{task['task_id']}/heartbeat", json={"lease_token": "forged"})
    assert wrong.status_code == 409


@pytest.mark.integration
async def test_release_puts_the_task_back_at_once(api: httpx.AsyncClient, bus: MemoryBus) -> None:
    await create_project(api)
    await queue_items(api, bus, "news", "x")
    task = await lease(api, "ana")
    assert task is not None

    response = await api.post(
        f"/v1/projects/news/tasks/{task['task_id']}/release", json={"lease_token": task["lease_token"]}
    )

    assert response.status_code == 204
    again = await lease(api, "bob")
    assert again is not None
    assert again["task_id"] == task["task_id"]
    stale = await api.post(
        f"/v1/projects/news/tasks/{task['task_id']}/release", json={"lease_token": task["lease_token"]}
    )
    assert stale.status_code == 409


@pytest.mark.integration
async def test_review_confirming_the_proposal(api: httpx.AsyncClient, bus: MemoryBus) -> None:
    await create_project(api)
    [item_id] = await queue_items(api, bus, "news", "Goal!", confidences=[0.6])
    task = await lease(api)
    assert task is not None

    response = await review(api, task, ["sports"], duration_s=4.0)

    assert response.status_code == 201
    body = response.json()
    assert (body["item_id"], body["task_id"], body["action"], body["labels"]) == (
        item_id, task["task_id"], "confirm", ["sports"]
    )
    assert await lease(api, "bob") is None


@pytest.mark.integration
async def test_review_announces_the_review_and_the_final_label(api: httpx.AsyncClient, bus: MemoryBus) -> None:
    await create_project(api)
    [item_id] = await queue_items(api, bus, "news", "Budget passes", confidences=[0.55])
    task = await lease(api)
    assert task is not None

    body = (await review(api, task, ["politics"], duration_s=7.5)).json()

    [submitted] = await wait_published(bus, REVIEW_SUBMITTED, 1)
    assert isinstance(submitted, ReviewSubmitted)
    assert (submitted.review_id, submitted.item_id, submitted.project_id) == (body["review_id"], item_id, "news")
    assert (submitted.action, submitted.labels, submitted.ai_labels) == ("correct", ("politics",), ("sports",))
    assert (submitted.ai_confidence, submitted.duration_s, submitted.reviewer_id) == (0.55, 7.5, "ana")
    assert submitted.decision_reasons == ("low_confidence",)
    assert submitted.text == "Budget passes"
    assert submitted.task.label_names == ("sports", "politics", "tech")
    assert submitted.producer == "review-api"
    [final] = await wait_published(bus, LABEL_FINALIZED, 1)
    assert isinstance(final, LabelFinalized)
    assert (final.item_id, final.labels, final.source, final.producer) == (
        item_id, ("politics",), "review", "review-api"
    )
    assert final.causation_id == submitted.event_id
    assert final.trace_id == submitted.trace_id


@pytest.mark.integration
async def test_a_retried_review_returns_the_first_and_creates_nothing(
    api: httpx.AsyncClient, bus: MemoryBus
) -> None:
    await create_project(api)
    [item_id] = await queue_items(api, bus, "news", "x")
    task = await lease(api)
    assert task is not None

    first = await review(api, task, ["tech"])
    retry = await review(api, task, ["tech"])

    assert (first.status_code, retry.status_code) == (201, 200)
    assert retry.json() == first.json()
    item = (await api.get(f"/v1/projects/news/items/{item_id}")).json()
    assert len(item["reviews"]) == 1
    assert (await api.get("/v1/projects/news/stats")).json()["reviews"] == 1
    await wait_published(bus, REVIEW_SUBMITTED, 1)
    different = await review(api, task, ["sports"])
    assert different.status_code == 409
    assert "already been reviewed" in different.json()["error"]["message"]


@pytest.mark.integration
async def test_review_with_a_label_outside_the_schema_is_422_naming_it(
    api: httpx.AsyncClient, bus: MemoryBus
) -> None:
    await create_project(api)
    await queue_items(api, bus, "news", "x")
    task = await lease(api)
    assert task is not None

    response = await review(api, task, ["weather"])

    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_labels"
    assert "'weather'" in error["message"]
    assert "'sports', 'politics', 'tech'" in error["message"]
    assert (await review(api, task, ["sports"])).status_code == 201


@pytest.mark.integration
async def test_classification_review_needs_exactly_one_label(api: httpx.AsyncClient, bus: MemoryBus) -> None:
    await create_project(api)
    await queue_items(api, bus, "news", "x")
    task = await lease(api)
    assert task is not None

    for labels in ([], ["sports", "tech"]):
        response = await review(api, task, labels)
        assert response.status_code == 422
        assert "exactly one label" in response.json()["error"]["message"]


@pytest.mark.integration
async def test_multi_label_review_takes_any_subset(api: httpx.AsyncClient, bus: MemoryBus) -> None:
    await create_project(
        api, task={"type": "multi_label", "labels": [{"name": "sports"}, {"name": "politics"}, {"name": "tech"}]}
    )
    await queue_items(api, bus, "news", "a", "b")

    first, second = await lease(api), await lease(api)
    assert first is not None
    assert second is not None
    both = await review(api, first, ["politics", "sports"])
    none = await review(api, second, [])

    assert both.status_code == 201
    assert both.json()["action"] == "correct"
    assert none.status_code == 201
    assert none.json()["labels"] == []


@pytest.mark.integration
async def test_review_with_a_wrong_token_or_reviewer_is_409(api: httpx.AsyncClient, bus: MemoryBus) -> None:
    await create_project(api)
    await queue_items(api, bus, "news", "x")
    task = await lease(api, "ana")
    assert task is not None

    forged = await review(api, {**task, "lease_token": "forged"}, ["sports"])
    other = await api.post(
        f"/v1/projects/news/tasks/{task['task_id']}/review",
        json={"lease_token": task["lease_token"], "reviewer_id": "bob", "labels": ["sports"]},
    )

    assert forged.status_code == 409
    assert other.status_code == 409
    assert (await review(api, task, ["sports"])).status_code == 201


@pytest.mark.integration
async def test_unknown_task_is_404(api: httpx.AsyncClient) -> None:
    await create_project(api)

    for action, body in [
        ("review", {"lease_token": "t", "reviewer_id": "ana", "labels": ["sports"]}),
        ("heartbeat", {"lease_token": "t"}),
        ("release", {"lease_token": "t"}),
    ]:
        response = await api.post(f"/v1/projects/news/tasks/nope/{action}", json=body)
        assert response.status_code == 404, action
        assert response.json()["error"]["message"] == "task 'nope' not found in project 'news'"


@pytest.mark.integration
async def test_a_task_of_another_project_is_404(api: httpx.AsyncClient, bus: MemoryBus) -> None:
    await create_project(api)
    await create_project(api, id="other")
    await queue_items(api, bus, "news", "x")
    task = await lease(api)
    assert task is not None

    response = await api.post(
        f"/v1/projects/other/tasks/{task['task_id']}/review",
        json={"lease_token": task["lease_token"], "reviewer_id": "ana", "labels": ["sports"]},
    )

    assert response.status_code == 404
    assert (await api.post("/v1/projects/other/queue/lease", json={"reviewer_id": "ana"})).status_code == 204


@pytest.mark.integration
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"reviewer_id": ""}, "reviewer_id"),
        ({"reviewer_id": "ana", "lease_seconds": 0}, "lease_seconds"),
        ({"reviewer_id": "ana", "lease_seconds": 3601}, "lease_seconds"),
        ({}, "reviewer_id"),
    ],
)
async def test_bad_lease_requests_are_rejected(api: httpx.AsyncClient, body: dict[str, Any], field: str) -> None:
    await create_project(api)

    response = await api.post(LEASE, json=body)

    assert response.status_code == 422
    assert field in response.json()["error"]["message"]


SINGLE = TaskSpec(labels=(LabelDef(name="a"), LabelDef(name="b")))
MULTI = TaskSpec(type=TaskType.multi_label, labels=(LabelDef(name="a"), LabelDef(name="b")))


@pytest.mark.unit
def test_labels_are_checked_against_the_schema() -> None:
    assert check_labels(SINGLE, ["b"]) == ("b",)
    assert check_labels(MULTI, ["b", "a", "b"]) == ("b", "a")
    assert check_labels(MULTI, []) == ()
    with pytest.raises(InvalidLabelsError, match="label 'c' is not in the project's labels"):
        check_labels(MULTI, ["a", "c"])
    with pytest.raises(InvalidLabelsError, match="exactly one"):
        check_labels(SINGLE, ["a", "b"])
