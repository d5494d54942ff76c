"""Submitting items over REST: batches, idempotency, validation, and reading items back."""

from __future__ import annotations

import httpx
import pytest

from labelgate_core.bus.memory import MemoryBus
from labelgate_core.events import DecisionOutcome, ItemSubmitted, RoutingReason
from labelgate_core.topics import ITEM_SUBMITTED

from .helpers import (
    auto_final,
    create_project,
    decision,
    publish,
    published,
    queue_items,
    submit,
    wait_published,
    wait_state,
)

pytestmark = pytest.mark.integration


async def items_count(api: httpx.AsyncClient, project_id: str = "news") -> int:
    count: int = (await api.get(f"/v1/projects/{project_id}/stats")).json()["items"]
    return count


async def test_submit_returns_ids_in_input_order_and_announces_each_item(
    api: httpx.AsyncClient, bus: MemoryBus
) -> None:
    await create_project(api)

    response = await api.post(
        "/v1/projects/news/items",
        json={"items": [
            {"text": "The match ended 2-1", "idempotency_key": "a", "metadata": {"source": "feed"}},
            {"text": "Parliament votes today", "idempotency_key": "b"},
        ]},
    )

    assert response.status_code == 202
    body = response.json()
    assert (body["accepted"], body["duplicates"]) == (2, 0)
    assert [(i["idempotency_key"], i["created"]) for i in body["items"]] == [("a", True), ("b", True)]
    ids = [i["item_id"] for i in body["items"]]
    events = await wait_published(bus, ITEM_SUBMITTED, 2)
    by_id = {e.item_id: e for e in events if isinstance(e, ItemSubmitted)}
    first = by_id[ids[0]]
    assert (first.text, first.metadata, first.project_id, first.producer) == (
        "The match ended 2-1", {"source": "feed"}, "news", "review-api"
    )
    assert first.task.label_names == ("sports", "politics", "tech")
    assert (first.routing.threshold, first.routing.audit_rate, first.guideline_version) == (0.9, 0.05, 1)


async def test_retried_submission_creates_nothing_and_returns_the_same_ids(
    api: httpx.AsyncClient, bus: MemoryBus
) -> None:
    await create_project(api)
    batch = {"items": [{"text": f"item {n}", "idempotency_key": f"key-{n}"} for n in range(5)]}

    first = (await api.post("/v1/projects/news/items", json=batch)).json()
    second = await api.post("/v1/projects/news/items", json=batch)

    assert second.status_code == 202
    again = second.json()
    assert (again["accepted"], again["duplicates"]) == (0, 5)
    assert [i["item_id"] for i in again["items"]] == [i["item_id"] for i in first["items"]]
    assert all(not i["created"] for i in again["items"])
    assert await items_count(api) == 5
    await wait_published(bus, ITEM_SUBMITTED, 5)


async def test_a_partly_known_batch_creates_only_the_new_items(api: httpx.AsyncClient) -> None:
    await create_project(api)
    [known] = await submit(api, "news", "known")

    response = await api.post(
        "/v1/projects/news/items",
        json={"items": [{"text": "new", "idempotency_key": "k-new"}, {"text": "known", "idempotency_key": "k-known"}]},
    )

    body = response.json()
    assert (body["accepted"], body["duplicates"]) == (1, 1)
    assert body["items"][1] == {"item_id": known, "idempotency_key": "k-known", "created": False}
    assert await items_count(api) == 2


async def test_duplicate_keys_inside_one_batch_resolve_to_the_first(api: httpx.AsyncClient) -> None:
    await create_project(api)

    body = (await api.post(
        "/v1/projects/news/items",
        json={"items": [
            {"text": "first", "idempotency_key": "same"},
            {"text": "other", "idempotency_key": "other"},
            {"text": "second", "idempotency_key": "same"},
        ]},
    )).json()

    assert (body["accepted"], body["duplicates"]) == (2, 1)
    assert body["items"][2]["item_id"] == body["items"][0]["item_id"]
    assert body["items"][2]["created"] is False
    item = (await api.get(f"/v1/projects/news/items/{body['items'][0]['item_id']}")).json()
    assert item["text"] == "first"


async def test_items_without_a_key_get_one_and_are_not_deduplicated(api: httpx.AsyncClient) -> None:
    await create_project(api)

    first = (await api.post("/v1/projects/news/items", json={"items": [{"text": "same text"}]})).json()
    second = (await api.post("/v1/projects/news/items", json={"items": [{"text": "same text"}]})).json()

    assert first["items"][0]["idempotency_key"]
    assert first["items"][0]["idempotency_key"] != second["items"][0]["idempotency_key"]
    assert second["accepted"] == 1
    assert await items_count(api) == 2


async def test_keys_are_scoped_to_their_project(api: httpx.AsyncClient) -> None:
    await create_project(api)
    await create_project(api, id="other")

    [in_news] = await submit(api, "news", "x")
    [in_other] = await submit(api, "other", "x")

    assert in_news != in_other
    assert (await api.get(f"/v1/projects/other/items/{in_news}")).status_code == 404


@pytest.mark.parametrize(
    ("items", "words"),
    [
        ([{"text": "ok"}, {"text": "   \n"}], "items[1].text: text is empty"),
        ([{"text": ""}], "items[0].text: text is empty"),
        ([{"text": "ok"}, {"text": "ok", "idempotency_key": "k" * 201}], "items[1].idempotency_key"),
        ([{"text": "ok", "idempotency_key": ""}], "items[0].idempotency_key"),
        ([{"text": "ok", "colour": "red"}], "items[0].colour: Extra inputs are not permitted"),
        ([{"text": 42}], "items[0].text"),
        ([{"text": "ok", "metadata": "not a dict"}], "items[0].metadata"),
        ([], "items: List should have at least 1 item"),
    ],
)
async def test_a_bad_item_rejects_the_whole_batch(
    api: httpx.AsyncClient, bus: MemoryBus, items: list[object], words: str
) -> None:
    await create_project(api)
    good = [{"text": f"good {n}", "idempotency_key": f"g{n}"} for n in range(3)]

    response = await api.post("/v1/projects/news/items", json={"items": [*good, *items]} if items else {"items": []})

    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    shifted = words.replace("items[1]", "items[4]").replace("items[0]", "items[3]")
    assert shifted in error["message"]
    assert await items_count(api) == 0
    assert await published(bus, ITEM_SUBMITTED) == []


async def test_a_full_batch_is_accepted(api: httpx.AsyncClient, bus: MemoryBus) -> None:
    await create_project(api)
    items = [{"text": f"item number {n}", "idempotency_key": f"k{n}"} for n in range(10_000)]

    response = await api.post("/v1/projects/news/items", json={"items": items})

    assert response.status_code == 202, response.text
    body = response.json()
    assert body["accepted"] == 10_000
    assert len({i["item_id"] for i in body["items"]}) == 10_000
    assert await items_count(api) == 10_000
    retried = (await api.post("/v1/projects/news/items", json={"items": items})).json()
    assert (retried["accepted"], retried["duplicates"]) == (0, 10_000)
    assert [i["item_id"] for i in retried["items"]] == [i["item_id"] for i in body["items"]]
    assert len(await wait_published(bus, ITEM_SUBMITTED, 10_000)) == 10_000


async def test_a_batch_over_the_limit_is_rejected_whole(api: httpx.AsyncClient, bus: MemoryBus) -> None:
    await create_project(api)
    items = [{"text": f"item {n}"} for n in range(10_001)]

    response = await api.post("/v1/projects/news/items", json={"items": items})

    assert response.status_code == 413
    assert response.json()["error"] == {
        "code": "batch_too_large",
        "message": "batch of 10001 items exceeds the limit of 10000",
        "details": {"limit": 10000},
    }
    assert await items_count(api) == 0


async def test_item_shows_its_whole_history(api: httpx.AsyncClient, bus: MemoryBus) -> None:
    await create_project(api)
    [item_id] = await queue_items(api, bus, "news", "The match ended 2-1", confidences=[0.42])

    fresh = (await api.get(f"/v1/projects/news/items/{item_id}")).json()
    assert fresh["state"] == "queued"
    assert fresh["decision"]["outcome"] == "needs_review"
    assert fresh["decision"]["reasons"] == ["low_confidence"]
    assert fresh["decision"]["proposal"]["labels"] == ["sports"]
    assert fresh["decision"]["proposal"]["confidence"] == 0.42
    assert fresh["reviews"] == []
    assert fresh["final"] is None

    task = (await api.post("/v1/projects/news/queue/lease", json={"reviewer_id": "ana"})).json()
    await api.post(
        f"/v1/projects/news/tasks/{task['task_id']}/review",
        json={"lease_token": task["lease_token"], "reviewer_id": "ana", "labels": ["politics"], "duration_s": 12.5},
    )

    item = (await api.get(f"/v1/projects/news/items/{item_id}")).json()
    assert item["text"] == "The match ended 2-1"
    assert item["idempotency_key"] == "k-The match ended 2-1"
    assert item["state"] == "final"
    assert item["guideline_version"] == 1
    assert item["submitted_at"]
    [review] = item["reviews"]
    assert (review["reviewer_id"], review["action"], review["labels"], review["duration_s"]) == (
        "ana", "correct", ["politics"], 12.5
    )
    assert item["final"]["labels"] == ["politics"]
    assert item["final"]["source"] == "review"


async def test_auto_accepted_item_shows_decision_and_final(api: httpx.AsyncClient, bus: MemoryBus) -> None:
    await create_project(api)
    [item_id] = await submit(api, "news", "Goal!")

    await publish(
        bus,
        decision("news", item_id, outcome=DecisionOutcome.auto_accepted, confidence=0.97,
                 reasons=[RoutingReason.confident]),
        auto_final("news", item_id),
    )
    await wait_state(api, "news", item_id, "final")

    item = (await api.get(f"/v1/projects/news/items/{item_id}")).json()
    assert item["final"]["source"] == "auto"
    assert item["final"]["labels"] == ["sports"]
    assert item["reviews"] == []


async def test_unknown_item_is_404(api: httpx.AsyncClient) -> None:
    await create_project(api)

    response = await api.get("/v1/projects/news/items/nope")

    assert response.status_code == 404
    assert response.json()["error"]["message"] == "item 'nope' not found in project 'news'"


async def test_list_items_pages_through_everything_in_order(api: httpx.AsyncClient) -> None:
    await create_project(api)
    ids = await submit(api, "news", *[f"t{n}" for n in range(7)])

    seen: list[str] = []
    after = None
    while True:
        params = {"limit": 3, **({"after": after} if after else {})}
        page = (await api.get("/v1/projects/news/items", params=params)).json()
        seen += [item["item_id"] for item in page["items"]]
        after = page["next_after"]
        if after is None:
            break

    assert seen == ids


async def test_list_items_filters_by_state(api: httpx.AsyncClient, bus: MemoryBus) -> None:
    await create_project(api)
    [waiting] = await submit(api, "news", "waiting")
    queued = await queue_items(api, bus, "news", "q1", "q2")

    page = (await api.get("/v1/projects/news/items", params={"state": "queued"})).json()
    assert sorted(item["item_id"] for item in page["items"]) == sorted(queued)
    page = (await api.get("/v1/projects/news/items", params={"state": "submitted"})).json()
    assert [item["item_id"] for item in page["items"]] == [waiting]


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"limit": 1001}, "query parameter limit"),
        ({"limit": 0}, "query parameter limit"),
        ({"state": "lost"}, "query parameter state"),
    ],
)
async def test_bad_list_parameters_are_rejected(
    api: httpx.AsyncClient, params: dict[str, int | str], words: str
) -> None:
    await create_project(api)

    response = await api.get("/v1/projects/news/items", params=params)

    assert response.status_code == 422
    assert words in response.json()["error"]["message"]


async def test_stats_count_items_by_state_and_source(api: httpx.AsyncClient, bus: MemoryBus) -> None:
    await create_project(api)
    [auto_item] = await submit(api, "news", "auto")
    await submit(api, "news", "waiting")
    reviewed, leased, _open = await queue_items(api, bus, "news", "reviewed", "leased", "open",
                                                confidences=[0.1, 0.2, 0.3])
    await publish(bus, auto_final("news", auto_item))
    await wait_state(api, "news", auto_item, "final")
    first = (await api.post("/v1/projects/news/queue/lease", json={"reviewer_id": "ana"})).json()
    assert first["item_id"] == reviewed
    await api.post(
        f"/v1/projects/news/tasks/{first['task_id']}/review",
        json={"lease_token": first["lease_token"], "reviewer_id": "ana", "labels": ["tech"]},
    )
    second = (await api.post("/v1/projects/news/queue/lease", json={"reviewer_id": "ana"})).json()
    assert second["item_id"] == leased

    stats = (await api.get("/v1/projects/news/stats")).json()

    assert stats == {
        "items": 5,
        "submitted": 1,
        "queued": 2,
        "in_review": 1,
        "final": 2,
        "final_by_source": {"auto": 1, "review": 1},
        "reviews": 1,
        "queue_depth": 2,
    }
