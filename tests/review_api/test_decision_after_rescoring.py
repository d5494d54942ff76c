"""An item queued unscored (no model yet) and auto-accepted once a model scored it: the item shows the decision
that made it final, whichever of its two events the review API reads first."""

from __future__ import annotations

import httpx
import pytest

from labelgate_core.bus.memory import MemoryBus
from labelgate_core.events import DecisionOutcome, RoutingReason

from .helpers import auto_final, create_project, decision, eventually, publish, queue_items, wait_state

pytestmark = pytest.mark.integration


async def shown_decision(api: httpx.AsyncClient, item_id: str) -> dict[str, object]:
    item = (await api.get(f"/v1/projects/news/items/{item_id}")).json()
    shown: dict[str, object] = item["decision"]
    return shown


async def test_the_decision_that_auto_accepted_a_queued_item_replaces_the_earlier_one(
    api: httpx.AsyncClient, bus: MemoryBus
) -> None:
    await create_project(api)
    [item_id] = await queue_items(api, bus, "news", "x")
    accepted = decision(
        "news", item_id, outcome=DecisionOutcome.auto_accepted, confidence=0.97, reasons=[RoutingReason.confident]
    )

    # The final label travels on its own topic and arrives before the decision that made it.
    await publish(bus, auto_final("news", item_id))
    await wait_state(api, "news", item_id, "final")
    await publish(bus, accepted)

    async def replaced() -> bool:
        return (await shown_decision(api, item_id))["outcome"] == "auto_accepted"

    await eventually(replaced)
    shown = await shown_decision(api, item_id)
    assert shown["proposal"]["confidence"] == 0.97  # type: ignore[index]


async def test_a_late_auto_decision_does_not_replace_the_decision_of_a_reviewed_item(
    api: httpx.AsyncClient, bus: MemoryBus
) -> None:
    await create_project(api)
    [item_id] = await queue_items(api, bus, "news", "x")
    task = (await api.post("/v1/projects/news/queue/lease", json={"reviewer_id": "ana"})).json()
    reviewed = await api.post(
        f"/v1/projects/news/tasks/{task['task_id']}/review",
        json={"lease_token": task["lease_token"], "reviewer_id": "ana", "labels": ["sports"]},
    )
    assert reviewed.status_code == 201, reviewed.text
    await wait_state(api, "news", item_id, "final")

    late = decision(
        "news", item_id, outcome=DecisionOutcome.auto_accepted, confidence=0.97, reasons=[RoutingReason.confident]
    )
    await publish(bus, late)
    [marker] = await queue_items(api, bus, "news", "marker")  # read after the late decision
    assert marker

    assert (await shown_decision(api, item_id))["outcome"] == "needs_review"
