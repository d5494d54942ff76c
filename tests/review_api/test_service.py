"""The review API's consumers: decisions queue items exactly once, auto-final labels close them, bad events
go to the dead-letter topic without stopping the rest; the queue-depth gauge follows."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client import REGISTRY

from labelgate_core.bus.memory import MemoryBus
from labelgate_core.events import DecisionOutcome, FinalSource, LabelFinalized, RoutingReason, utcnow
from labelgate_core.topics import DECISION_MADE, dlq_topic
from labelgate_review_api.main import build_api
from labelgate_review_api.service import ReviewApiService

from .helpers import (
    auto_final,
    create_project,
    decision,
    eventually,
    item_state,
    publish,
    published,
    queue_items,
    submit,
    wait_state,
)

pytestmark = pytest.mark.integration


async def stats(api: httpx.AsyncClient) -> dict[str, object]:
    body: dict[str, object] = (await api.get("/v1/projects/news/stats")).json()
    return body


async def test_a_repeated_decision_never_queues_an_item_twice(api: httpx.AsyncClient, bus: MemoryBus) -> None:
    await create_project(api)
    [item_id] = await submit(api, "news", "x")
    first = decision("news", item_id, confidence=0.4)

    await publish(bus, first, first, decision("news", item_id, confidence=0.2))
    [marker] = await queue_items(api, bus, "news", "marker")  # processed after the three decisions

    assert await item_state(api, "news", item_id) == "queued"
    assert (await stats(api))["queue_depth"] == 2
    leased = []
    for reviewer in ("ana", "bob", "eve"):
        response = await api.post("/v1/projects/news/queue/lease", json={"reviewer_id": reviewer})
        if response.status_code == 200:
            leased.append(response.json()["item_id"])
    assert sorted(leased) == sorted([item_id, marker])
    item = (await api.get(f"/v1/projects/news/items/{item_id}")).json()
    assert item["decision"]["proposal"]["confidence"] == 0.4


async def test_auto_accepted_decision_is_recorded_without_queueing(api: httpx.AsyncClient, bus: MemoryBus) -> None:
    await create_project(api)
    [item_id] = await submit(api, "news", "x")

    await publish(bus, decision("news", item_id, outcome=DecisionOutcome.auto_accepted, confidence=0.95,
                                reasons=[RoutingReason.confident]))

    async def decided() -> bool:
        item = (await api.get(f"/v1/projects/news/items/{item_id}")).json()
        return item["decision"] is not None

    await eventually(decided)
    assert await item_state(api, "news", item_id) == "submitted"
    assert (await stats(api))["queue_depth"] == 0


async def test_auto_final_label_makes_the_item_final(api: httpx.AsyncClient, bus: MemoryBus) -> None:
    await create_project(api)
    [item_id] = await submit(api, "news", "x")

    await publish(bus, auto_final("news", item_id, ["tech"]))
    await wait_state(api, "news", item_id, "final")

    item = (await api.get(f"/v1/projects/news/items/{item_id}")).json()
    assert item["final"]["labels"] == ["tech"]
    assert item["final"]["source"] == "auto"
    assert (await stats(api))["final_by_source"] == {"auto": 1, "review": 0}


async def test_auto_final_closes_an_open_task(api: httpx.AsyncClient, bus: MemoryBus) -> None:
    await create_project(api)
    [item_id] = await queue_items(api, bus, "news", "x")

    await publish(bus, auto_final("news", item_id))
    await wait_state(api, "news", item_id, "final")

    assert (await api.post("/v1/projects/news/queue/lease", json={"reviewer_id": "ana"})).status_code == 204
    assert (await stats(api))["queue_depth"] == 0


async def test_final_labels_announced_by_the_review_api_itself_are_ignored(
    api: httpx.AsyncClient, bus: MemoryBus
) -> None:
    await create_project(api)
    [item_id] = await queue_items(api, bus, "news", "x")
    own = LabelFinalized(
        producer="review-api", project_id="news", item_id=item_id, labels=("sports",),
        source=FinalSource.review, guideline_version=1, submitted_at=utcnow(),
    )

    await publish(bus, own)
    await queue_items(api, bus, "news", "marker")

    assert await item_state(api, "news", item_id) == "queued"


async def test_a_decision_for_an_unknown_item_is_dead_lettered_and_the_rest_goes_on(
    api: httpx.AsyncClient, bus: MemoryBus
) -> None:
    await create_project(api)
    [item_id] = await submit(api, "news", "x")
    stray = decision("news", "no-such-item")

    await publish(bus, stray, decision("news", item_id))
    await wait_state(api, "news", item_id, "queued")

    dead = await eventually(lambda: published(bus, dlq_topic(DECISION_MADE)))
    assert [event.event_id for event in dead] == [stray.event_id]


async def test_a_decision_naming_another_project_is_dead_lettered(api: httpx.AsyncClient, bus: MemoryBus) -> None:
    await create_project(api)
    await create_project(api, id="other")
    [item_id] = await submit(api, "news", "x")
    misplaced = decision("other", item_id)

    await publish(bus, misplaced)

    dead = await eventually(lambda: published(bus, dlq_topic(DECISION_MADE)))
    assert [event.event_id for event in dead] == [misplaced.event_id]
    assert await item_state(api, "news", item_id) == "submitted"


def depth(project: str) -> float | None:
    return REGISTRY.get_sample_value("labelgate_review_queue_depth", {"project": project})


async def test_queue_depth_gauge_follows_the_queue(
    api: httpx.AsyncClient, bus: MemoryBus, service: ReviewApiService
) -> None:
    await create_project(api, id="gauge")
    ids = await submit(api, "gauge", "a", "b", "c")
    await publish(bus, *(decision("gauge", item_id) for item_id in ids))

    async def depth_is(value: float) -> bool:
        return depth("gauge") == value

    await eventually(lambda: depth_is(3))
    task = (await api.post("/v1/projects/gauge/queue/lease", json={"reviewer_id": "ana"})).json()
    await api.post(
        f"/v1/projects/gauge/tasks/{task['task_id']}/review",
        json={"lease_token": task["lease_token"], "reviewer_id": "ana", "labels": ["sports"]},
    )
    await eventually(lambda: depth_is(2))


async def test_state_survives_a_restart(api: httpx.AsyncClient, bus: MemoryBus, service: ReviewApiService) -> None:
    await create_project(api)
    [item_id] = await queue_items(api, bus, "news", "x")
    store = service.store

    await service.stop(grace_s=5)
    restarted = ReviewApiService(bus=bus, store=store, settings=service.settings, clock=service.clock)
    await restarted.start()
    try:
        app = build_api(restarted)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://r") as again:
            assert await item_state(again, "news", item_id) == "queued"
            response = await again.post("/v1/projects/news/queue/lease", json={"reviewer_id": "ana"})
            assert response.json()["item_id"] == item_id
    finally:
        await restarted.stop(grace_s=5)
