"""Gold items over REST: a hidden known answer, scored reviews, the known answer as final label."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from labelgate_core.bus.memory import MemoryBus
from labelgate_core.events import DecisionOutcome, ItemSubmitted, LabelFinalized, ReviewSubmitted, RoutingReason
from labelgate_core.topics import ITEM_SUBMITTED, LABEL_FINALIZED, REVIEW_SUBMITTED, encode

from .helpers import (
    auto_final,
    create_project,
    decision,
    eventually,
    publish,
    wait_published,
    wait_state,
)

pytestmark = pytest.mark.integration

ITEMS = "/v1/projects/news/items"
LEASE = "/v1/projects/news/queue/lease"


async def submit_gold(api: httpx.AsyncClient, text: str, labels: list[str], **extra: Any) -> str:
    response = await api.post(
        ITEMS, json={"items": [{"text": text, "idempotency_key": f"k-{text}", "gold": {"labels": labels}, **extra}]}
    )
    assert response.status_code == 202, response.text
    item_id: str = response.json()["items"][0]["item_id"]
    return item_id


async def lease(api: httpx.AsyncClient, reviewer: str) -> dict[str, Any] | None:
    response = await api.post(LEASE, json={"reviewer_id": reviewer})
    if response.status_code == 204:
        return None
    assert response.status_code == 200, response.text
    task: dict[str, Any] = response.json()
    return task


async def review(api: httpx.AsyncClient, task: dict[str, Any], reviewer: str, labels: list[str]) -> None:
    response = await api.post(
        f"/v1/projects/news/tasks/{task['task_id']}/review",
        json={"lease_token": task["lease_token"], "reviewer_id": reviewer, "labels": labels},
    )
    assert response.status_code == 201, response.text


async def route_gold(bus: MemoryBus, item_id: str, proposed: str = "sports") -> None:
    await publish(bus, decision("news", item_id, labels=(proposed,), reasons=(RoutingReason.gold,)))


async def test_a_gold_answer_outside_the_schema_is_422_naming_the_item(api: httpx.AsyncClient) -> None:
    await create_project(api)

    unknown = await api.post(ITEMS, json={"items": [{"text": "a"}, {"text": "b", "gold": {"labels": ["weather"]}}]})
    two = await api.post(ITEMS, json={"items": [{"text": "c", "gold": {"labels": ["sports", "tech"]}}]})
    shape = await api.post(ITEMS, json={"items": [{"text": "d", "gold": ["sports"]}]})

    assert unknown.status_code == 422
    assert "items[1].gold" in unknown.json()["error"]["message"]
    assert "'weather'" in unknown.json()["error"]["message"]
    assert two.status_code == 422
    assert "exactly one label" in two.json()["error"]["message"]
    assert shape.status_code == 422
    assert "gold" in shape.json()["error"]["message"]
    stats = (await api.get("/v1/projects/news/stats")).json()
    assert stats["items"] == 0, "a rejected batch must create nothing"


async def test_the_known_answer_never_leaves_the_review_api(api: httpx.AsyncClient, bus: MemoryBus) -> None:
    await create_project(api)
    item_id = await submit_gold(api, "Parliament passed the bill", ["tech"])

    [event] = await wait_published(bus, ITEM_SUBMITTED, 1)
    item = (await api.get(f"/v1/projects/news/items/{item_id}")).json()

    assert isinstance(event, ItemSubmitted)
    assert event.gold is True
    payload = json.loads(encode(event))
    del payload["task"]  # the project's label set, where every label appears
    assert "tech" not in str(payload)
    assert item["gold"] is True
    assert "tech" not in str(item)


async def test_a_gold_task_looks_like_any_other_and_its_final_label_is_the_known_answer(
    api: httpx.AsyncClient, bus: MemoryBus
) -> None:
    await create_project(api)
    item_id = await submit_gold(api, "The match ended 2-1", ["sports"])
    await route_gold(bus, item_id, proposed="politics")
    await wait_state(api, "news", item_id, "queued")

    task = await lease(api, "ana")
    assert task is not None
    assert task["reasons"] == ["audit"]
    assert "gold" not in task
    assert "sports" not in str({key: value for key, value in task.items() if key != "task"})
    await review(api, task, "ana", ["tech"])  # wrong

    item = (await api.get(f"/v1/projects/news/items/{item_id}")).json()
    assert item["state"] == "final"
    assert item["final"]["labels"] == ["sports"]
    [submitted] = await wait_published(bus, REVIEW_SUBMITTED, 1)
    assert isinstance(submitted, ReviewSubmitted)
    assert submitted.gold is True, "the labeler must be able to keep gold reviews out of its training data"
    assert submitted.labels == ("tech",)
    [final] = await wait_published(bus, LABEL_FINALIZED, 1)
    assert isinstance(final, LabelFinalized)
    assert (final.labels, final.gold) == (("sports",), True)


async def test_reviewers_report_their_accuracy_on_gold_items(api: httpx.AsyncClient, bus: MemoryBus) -> None:
    await create_project(api)
    gold = [await submit_gold(api, f"gold {i}", ["sports"]) for i in range(3)]
    plain = (await api.post(ITEMS, json={"items": [{"text": "plain", "idempotency_key": "plain"}]})).json()
    plain_id = plain["items"][0]["item_id"]
    for item_id in gold:
        await route_gold(bus, item_id)
    await publish(bus, decision("news", plain_id))
    for item_id in [*gold, plain_id]:
        await wait_state(api, "news", item_id, "queued")

    answers = {"ana": ["sports"], "bob": ["politics"]}
    reviewer = "ana"
    while (task := await lease(api, reviewer)) is not None:
        await review(api, task, reviewer, answers[reviewer])
        reviewer = "bob" if reviewer == "ana" else "ana"

    response = await api.get("/v1/projects/news/reviewers")
    assert response.status_code == 200, response.text
    by_id = {r["reviewer_id"]: r for r in response.json()}
    assert sum(r["reviews"] for r in by_id.values()) == 4
    assert sum(r["gold_reviews"] for r in by_id.values()) == 3
    for name, stats in by_id.items():
        if stats["gold_reviews"]:
            expected = 1.0 if name == "ana" else 0.0
            assert stats["gold_accuracy"] == expected
            assert stats["gold_correct"] == (stats["gold_reviews"] if name == "ana" else 0)
            assert stats["gold_accuracy_lower_bound"] <= expected
    missing = await api.get("/v1/projects/nope/reviewers")
    assert missing.status_code == 404


async def test_a_gold_item_goes_to_review_even_if_a_router_auto_accepts_it(
    api: httpx.AsyncClient, bus: MemoryBus
) -> None:
    await create_project(api)
    item_id = await submit_gold(api, "A new phone was announced", ["tech"])

    await publish(
        bus,
        decision("news", item_id, outcome=DecisionOutcome.auto_accepted, reasons=(RoutingReason.confident,)),
        auto_final("news", item_id, labels=("sports",)),
    )

    await wait_state(api, "news", item_id, "queued")
    task = await lease(api, "ana")
    assert task is not None
    assert task["item_id"] == item_id
    item = (await api.get(f"/v1/projects/news/items/{item_id}")).json()
    assert item["final"] is None, "an auto-accepted label must never become a gold item's final label"


async def test_a_redelivered_gold_decision_queues_one_task(api: httpx.AsyncClient, bus: MemoryBus) -> None:
    await create_project(api)
    item_id = await submit_gold(api, "Election results are in", ["politics"])
    routed = decision("news", item_id, reasons=(RoutingReason.gold,))

    await publish(bus, routed, routed, decision("news", item_id, reasons=(RoutingReason.gold,)))
    await wait_state(api, "news", item_id, "queued")

    async def depth_is_one() -> bool:
        return bool((await api.get("/v1/projects/news/stats")).json()["queue_depth"] == 1)

    await eventually(depth_is_one)
    assert await lease(api, "ana") is not None
    assert await lease(api, "bob") is None


async def test_gold_items_stay_out_of_the_training_exports(api: httpx.AsyncClient, bus: MemoryBus) -> None:
    await create_project(api)
    gold_id = await submit_gold(api, "cup final", ["sports"])
    await route_gold(bus, gold_id)
    await wait_state(api, "news", gold_id, "queued")
    task = await lease(api, "ana")
    assert task is not None
    await review(api, task, "ana", ["sports"])
    plain = await api.post(ITEMS, json={"items": [{"text": "chip launch", "idempotency_key": "k-chip"}]})
    plain_id = plain.json()["items"][0]["item_id"]
    await publish(bus, auto_final("news", plain_id, ("tech",)))
    await wait_state(api, "news", gold_id, "final")
    await wait_state(api, "news", plain_id, "final")

    own = [json.loads(line) for line in (await api.get("/v1/projects/news/export?format=jsonl")).text.splitlines()]
    for training in ("hf", "openai"):
        rows = (await api.get(f"/v1/projects/news/export?format={training}")).text.splitlines()
        assert len(rows) == 1, training
        assert "chip launch" in rows[0]
        assert "cup final" not in rows[0]

    assert {line["item_id"]: line["gold"] for line in own} == {gold_id: True, plain_id: False}
