"""Leaked gold items over REST: a gold item whose proposal duplicates a training item is reviewed and finalized as
usual, but no longer scores reviewers."""

from __future__ import annotations

from typing import Any, Literal

import httpx
import pytest

from labelgate_core.bus.memory import MemoryBus
from labelgate_core.events import DecisionMade, DecisionOutcome, RoutingReason

from .helpers import create_project, decision, eventually, publish, wait_state

pytestmark = pytest.mark.integration

ITEMS = "/v1/projects/news/items"


async def submit_gold(api: httpx.AsyncClient, text: str, labels: list[str]) -> str:
    response = await api.post(
        ITEMS, json={"items": [{"text": text, "idempotency_key": f"k-{text}", "gold": {"labels": labels}}]}
    )
    assert response.status_code == 202, response.text
    item_id: str = response.json()["items"][0]["item_id"]
    return item_id


def gold_decision(
    item_id: str,
    leakage: Literal["exact", "near"] | None,
    *,
    outcome: DecisionOutcome = DecisionOutcome.needs_review,
) -> DecisionMade:
    event = decision("news", item_id, outcome=outcome, reasons=(RoutingReason.gold,))
    return event.model_copy(update={"proposal": event.proposal.model_copy(update={"leakage": leakage})})


async def answer(api: httpx.AsyncClient, reviewer: str, answers: dict[str, str]) -> str:
    """Lease one task and answer it by its item id; the item id."""
    response = await api.post("/v1/projects/news/queue/lease", json={"reviewer_id": reviewer})
    assert response.status_code == 200, response.text
    task: dict[str, Any] = response.json()
    review = await api.post(
        f"/v1/projects/news/tasks/{task['task_id']}/review",
        json={"lease_token": task["lease_token"], "reviewer_id": reviewer, "labels": [answers[task["item_id"]]]},
    )
    assert review.status_code == 201, review.text
    item_id: str = task["item_id"]
    return item_id


async def get_item(api: httpx.AsyncClient, item_id: str) -> dict[str, Any]:
    response = await api.get(f"{ITEMS}/{item_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def reviewers(api: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    response = await api.get("/v1/projects/news/reviewers")
    assert response.status_code == 200, response.text
    return {r["reviewer_id"]: r for r in response.json()}


async def test_a_leaked_gold_item_is_reviewed_and_finalized_but_does_not_score_reviewers(
    api: httpx.AsyncClient, bus: MemoryBus
) -> None:
    await create_project(api)
    leaked = await submit_gold(api, "Leaked match report", ["sports"])
    clean = await submit_gold(api, "Clean match report", ["sports"])
    # A repeated decision (redelivery, or the router deciding again) marks the item once.
    await publish(bus, gold_decision(leaked, "exact"), gold_decision(clean, None), gold_decision(leaked, "exact"))
    await wait_state(api, "news", leaked, "queued")
    await wait_state(api, "news", clean, "queued")

    # ana gets the leaked item wrong and the clean one right.
    answers = {leaked: "tech", clean: "sports"}
    assert {await answer(api, "ana", answers), await answer(api, "ana", answers)} == {leaked, clean}

    leaked_item = await get_item(api, leaked)
    assert leaked_item["gold"] is True
    assert leaked_item["gold_leaked"] is True
    assert leaked_item["state"] == "final"
    assert leaked_item["final"]["labels"] == ["sports"], "the known answer is still the final label"
    assert (await get_item(api, clean))["gold_leaked"] is False
    ana = (await reviewers(api))["ana"]
    assert ana["reviews"] == 2
    assert ana["gold_reviews"] == 1
    assert ana["gold_correct"] == 1
    assert ana["gold_accuracy"] == 1.0
    assert ana["leaked_gold_items"] == 1


async def test_leakage_found_after_the_review_takes_the_item_out_of_the_score(
    api: httpx.AsyncClient, bus: MemoryBus
) -> None:
    await create_project(api)
    item_id = await submit_gold(api, "A new phone was announced", ["tech"])
    await publish(bus, gold_decision(item_id, None))
    await wait_state(api, "news", item_id, "queued")
    await answer(api, "bob", {item_id: "sports"})
    assert (await reviewers(api))["bob"]["gold_accuracy"] == 0.0

    # The labeler, retrained, finds the item near a training item; the router decides again.
    await publish(bus, gold_decision(item_id, "near", outcome=DecisionOutcome.auto_accepted))

    async def marked() -> bool:
        return bool((await get_item(api, item_id))["gold_leaked"])

    await eventually(marked)
    bob = (await reviewers(api))["bob"]
    assert bob["gold_reviews"] == 0
    assert bob["gold_accuracy"] is None
    assert bob["leaked_gold_items"] == 1
    item = await get_item(api, item_id)
    assert item["state"] == "final"
    assert item["final"]["labels"] == ["tech"]
    assert len(item["reviews"]) == 1, "a final gold item is not queued again"


async def test_leakage_on_an_ordinary_item_marks_nothing(api: httpx.AsyncClient, bus: MemoryBus) -> None:
    await create_project(api)
    response = await api.post(ITEMS, json={"items": [{"text": "plain", "idempotency_key": "k-plain"}]})
    assert response.status_code == 202, response.text
    item_id = response.json()["items"][0]["item_id"]
    event = decision("news", item_id)
    await publish(bus, event.model_copy(update={"proposal": event.proposal.model_copy(update={"leakage": "exact"})}))
    await wait_state(api, "news", item_id, "queued")

    item = await get_item(api, item_id)
    assert item["gold"] is False
    assert item["gold_leaked"] is False
