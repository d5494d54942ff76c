"""A project asks the router to send labels the AI is consistently wrong on to review: the setting is stored,
shown, changed, and carried by the items submitted under it."""

from __future__ import annotations

import httpx
import pytest

from labelgate_core.bus.memory import MemoryBus
from labelgate_core.events import ItemSubmitted
from labelgate_core.topics import ITEM_SUBMITTED

from .helpers import create_project, submit, wait_published

pytestmark = pytest.mark.integration


async def test_exclude_unreliable_labels_is_set_shown_and_carried_by_new_items(
    api: httpx.AsyncClient, bus: MemoryBus
) -> None:
    created = await create_project(api, routing={"threshold": 0.9, "exclude_unreliable_labels": True})
    assert created["routing"]["exclude_unreliable_labels"] is True
    [strict] = await submit(api, "news", "first")
    relaxed = await api.patch("/v1/projects/news/routing", json={"exclude_unreliable_labels": False})
    assert relaxed.status_code == 200
    assert relaxed.json()["routing"]["exclude_unreliable_labels"] is False
    [lenient] = await submit(api, "news", "second")
    bad = await api.patch("/v1/projects/news/routing", json={"exclude_unreliable_labels": "sometimes"})
    assert bad.status_code == 422
    assert "exclude_unreliable_labels" in bad.json()["error"]["message"]

    events = await wait_published(bus, ITEM_SUBMITTED, 2)
    by_item = {e.item_id: e for e in events if isinstance(e, ItemSubmitted)}
    assert by_item[strict].routing.exclude_unreliable_labels is True
    assert by_item[lenient].routing.exclude_unreliable_labels is False
