"""Exporting final labels as JSON lines."""

from __future__ import annotations

import json

import httpx
import pytest

from labelgate_core.bus.memory import MemoryBus
from labelgate_review_api.settings import ReviewApiSettings

from .helpers import auto_final, create_project, publish, queue_items, submit, wait_state

pytestmark = pytest.mark.integration


@pytest.fixture
def settings() -> ReviewApiSettings:
    return ReviewApiSettings(export_batch_size=7, queue_depth_refresh_s=0.5)


async def test_export_streams_every_final_label(api: httpx.AsyncClient, bus: MemoryBus) -> None:
    await create_project(api)
    [reviewed] = await queue_items(api, bus, "news", "Budget passes")
    task = (await api.post("/v1/projects/news/queue/lease", json={"reviewer_id": "ana"})).json()
    await api.post(
        f"/v1/projects/news/tasks/{task['task_id']}/review",
        json={"lease_token": task["lease_token"], "reviewer_id": "ana", "labels": ["politics"]},
    )
    auto_ids = await submit(api, "news", *[f"auto {n}" for n in range(20)])
    await publish(bus, *(auto_final("news", item_id) for item_id in auto_ids))
    await submit(api, "news", "still waiting")
    await wait_state(api, "news", auto_ids[-1], "final")

    response = await api.get("/v1/projects/news/export.jsonl")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert len(lines) == 21
    assert [line["item_id"] for line in lines] == sorted([reviewed, *auto_ids])
    by_id = {line["item_id"]: line for line in lines}
    assert by_id[reviewed] == {
        "item_id": reviewed,
        "idempotency_key": "k-Budget passes",
        "text": "Budget passes",
        "image": None,
        "labels": ["politics"],
        "spans": [],
        "boxes": [],
        "source": "review",
        "guideline_version": 1,
        "metadata": {},
        "finalized_at": by_id[reviewed]["finalized_at"],
        "gold": False,
        "data_owner": None,
        "license": None,
    }
    assert by_id[auto_ids[0]]["source"] == "auto"
    assert by_id[auto_ids[0]]["labels"] == ["sports"]


async def test_export_of_a_project_without_finals_is_empty(api: httpx.AsyncClient) -> None:
    await create_project(api)
    await submit(api, "news", "waiting")

    response = await api.get("/v1/projects/news/export.jsonl")

    assert response.status_code == 200
    assert response.text == ""


async def test_export_holds_only_the_projects_own_labels(api: httpx.AsyncClient, bus: MemoryBus) -> None:
    await create_project(api)
    await create_project(api, id="other")
    [mine] = await submit(api, "news", "mine")
    [theirs] = await submit(api, "other", "theirs")
    await publish(bus, auto_final("news", mine), auto_final("other", theirs))
    await wait_state(api, "other", theirs, "final")
    await wait_state(api, "news", mine, "final")

    lines = (await api.get("/v1/projects/news/export.jsonl")).text.splitlines()

    assert [json.loads(line)["item_id"] for line in lines] == [mine]
