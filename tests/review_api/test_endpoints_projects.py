"""Projects over REST: creation, reads, guideline versions and routing changes."""

from __future__ import annotations

import httpx
import pytest

from labelgate_core.bus.memory import MemoryBus
from labelgate_core.events import GuidelineChanged, ItemSubmitted
from labelgate_core.topics import GUIDELINE_CHANGED, ITEM_SUBMITTED

from .helpers import PROJECT, create_project, submit, wait_published

OVERLAP_DEFAULTS = {
    "overlap_rate": 0.0, "overlap_k": 2, "consensus": "majority", "exclude_unreliable_labels": False,
}
"""Routing settings for overlapped review (and unreliable labels), as every project has them unless it sets them."""

pytestmark = pytest.mark.integration


async def test_create_project_returns_it_with_guideline_version_1(api: httpx.AsyncClient) -> None:
    body = await create_project(api)

    assert body["id"] == "news"
    assert body["guideline_version"] == 1
    assert body["routing"] == {
        "threshold": 0.9, "audit_rate": 0.05, "target_precision": None, **OVERLAP_DEFAULTS
    }
    assert [label["name"] for label in body["task"]["labels"]] == ["sports", "politics", "tech"]
    assert body["task"]["type"] == "classification"
    assert body["task"]["subjective"] is False


async def test_create_project_announces_guideline_version_1(api: httpx.AsyncClient, bus: MemoryBus) -> None:
    await create_project(api, routing={"threshold": 0.8, "audit_rate": 0.1})

    [event] = await wait_published(bus, GUIDELINE_CHANGED, 1)
    assert isinstance(event, GuidelineChanged)
    assert (event.project_id, event.item_id, event.version, event.producer) == ("news", "news", 1, "review-api")
    assert event.text == "Pick the main topic."
    assert event.task.label_names == ("sports", "politics", "tech")
    assert event.routing.threshold == 0.8


async def test_creating_an_existing_project_is_a_conflict(api: httpx.AsyncClient, bus: MemoryBus) -> None:
    await create_project(api)

    response = await api.post("/v1/projects", json={**PROJECT, "name": "Other"})

    assert response.status_code == 409
    assert response.json()["error"]["message"] == "project 'news' already exists"
    assert (await api.get("/v1/projects/news")).json()["name"] == "News topics"


async def test_get_and_list_projects(api: httpx.AsyncClient) -> None:
    await create_project(api)
    await create_project(api, id="reviews", name="Product reviews")

    assert (await api.get("/v1/projects/reviews")).json()["name"] == "Product reviews"
    listed = (await api.get("/v1/projects")).json()
    assert [project["id"] for project in listed] == ["news", "reviews"]


async def test_unknown_project_is_404_naming_it(api: httpx.AsyncClient) -> None:
    for method, path in [
        ("GET", "/v1/projects/nope"),
        ("GET", "/v1/projects/nope/stats"),
        ("GET", "/v1/projects/nope/items"),
        ("GET", "/v1/projects/nope/export.jsonl"),
        ("PUT", "/v1/projects/nope/guidelines"),
        ("PATCH", "/v1/projects/nope/routing"),
        ("POST", "/v1/projects/nope/items"),
        ("POST", "/v1/projects/nope/queue/lease"),
    ]:
        body = {
            "PUT": {"text": "x"},
            "PATCH": {"threshold": 0.5},
            "POST": {"items": [{"text": "x"}]} if path.endswith("items") else {"reviewer_id": "r"},
        }.get(method)
        response = await api.request(method, path, json=body)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json() == {
            "error": {"code": "not_found", "message": "project 'nope' not found", "details": None}
        }


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"id": "Has Spaces"}, "id", "pattern"),
        ({"id": "-leading-dash"}, "id", "pattern"),
        ({"id": "x" * 64}, "id", "pattern"),
        ({"name": ""}, "name", "at least 1"),
        ({"task": {"labels": []}}, "task.labels", "at least 1"),
        ({"task": {"labels": [{"name": "a"}] * 501}}, "task.labels", "at most 500"),
        ({"task": {"labels": [{"name": "a"}, {"name": "b"}, {"name": "a"}]}}, "task.labels", "label 'a'"),
        ({"task": {"type": "poetry", "labels": [{"name": "a"}]}}, "task.type", "classification"),
        ({"routing": {"threshold": 1.5}}, "routing.threshold", "less than or equal to 1"),
        ({"routing": {"audit_rate": -0.1}}, "routing.audit_rate", "greater than or equal to 0"),
        ({"owner": "me"}, "owner", "not permitted"),
    ],
)
async def test_invalid_project_is_rejected_naming_the_field(
    api: httpx.AsyncClient, change: dict[str, object], field: str, words: str
) -> None:
    response = await api.post("/v1/projects", json={**PROJECT, **change})

    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert field in error["message"]
    assert words in error["message"]
    assert (await api.get("/v1/projects")).json() == []


async def test_slug_rules_allow_digits_dashes_and_underscores(api: httpx.AsyncClient) -> None:
    body = await create_project(api, id="0-news_v2" + "x" * 54)
    assert len(body["id"]) == 63


async def test_new_guidelines_bump_the_version_and_are_announced(api: httpx.AsyncClient, bus: MemoryBus) -> None:
    await create_project(api)

    first = await api.put("/v1/projects/news/guidelines", json={"text": "Pick the main topic. Sports wins ties."})
    second = await api.put("/v1/projects/news/guidelines", json={"text": ""})

    assert first.status_code == 200
    assert first.json()["guideline_version"] == 2
    assert second.json()["guideline_version"] == 3
    assert (await api.get("/v1/projects/news")).json()["guidelines"] == ""
    events = await wait_published(bus, GUIDELINE_CHANGED, 3)
    assert [(e.version, e.text) for e in events if isinstance(e, GuidelineChanged)] == [
        (1, "Pick the main topic."),
        (2, "Pick the main topic. Sports wins ties."),
        (3, ""),
    ]


async def test_items_carry_the_guideline_version_and_routing_of_their_submission(
    api: httpx.AsyncClient, bus: MemoryBus
) -> None:
    await create_project(api)
    [before] = await submit(api, "news", "first")
    await api.put("/v1/projects/news/guidelines", json={"text": "v2"})
    response = await api.patch("/v1/projects/news/routing", json={"threshold": 0.75})
    assert response.status_code == 200
    assert response.json()["routing"] == {
        "threshold": 0.75, "audit_rate": 0.05, "target_precision": None, **OVERLAP_DEFAULTS
    }
    [after] = await submit(api, "news", "second")

    events = await wait_published(bus, ITEM_SUBMITTED, 2)
    by_item = {e.item_id: e for e in events if isinstance(e, ItemSubmitted)}
    assert (by_item[before].guideline_version, by_item[before].routing.threshold) == (1, 0.9)
    assert (by_item[after].guideline_version, by_item[after].routing.threshold) == (2, 0.75)
    assert (await api.get(f"/v1/projects/news/items/{after}")).json()["guideline_version"] == 2


async def test_routing_update_changes_only_the_fields_given(api: httpx.AsyncClient) -> None:
    await create_project(api)

    response = await api.patch("/v1/projects/news/routing", json={"audit_rate": 0.2})

    assert response.json()["routing"] == {
        "threshold": 0.9, "audit_rate": 0.2, "target_precision": None, **OVERLAP_DEFAULTS
    }
    bad = await api.patch("/v1/projects/news/routing", json={"threshold": 2})
    assert bad.status_code == 422
    assert "threshold" in bad.json()["error"]["message"]
    assert (await api.get("/v1/projects/news")).json()["routing"]["threshold"] == 0.9



async def test_a_target_precision_is_set_carried_by_new_items_and_cleared(
    api: httpx.AsyncClient, bus: MemoryBus
) -> None:
    await create_project(api, routing={"threshold": 0.9, "target_precision": 0.99})
    [with_target] = await submit(api, "news", "first")

    kept = await api.patch("/v1/projects/news/routing", json={"audit_rate": 0.1})
    assert kept.json()["routing"]["target_precision"] == 0.99
    cleared = await api.patch("/v1/projects/news/routing", json={"target_precision": None})
    assert cleared.json()["routing"] == {
        "threshold": 0.9, "audit_rate": 0.1, "target_precision": None, **OVERLAP_DEFAULTS
    }
    [without] = await submit(api, "news", "second")
    for impossible in (0, 1.5):
        bad = await api.patch("/v1/projects/news/routing", json={"target_precision": impossible})
        assert bad.status_code == 422
        assert "target_precision" in bad.json()["error"]["message"]

    events = await wait_published(bus, ITEM_SUBMITTED, 2)
    by_item = {e.item_id: e for e in events if isinstance(e, ItemSubmitted)}
    assert by_item[with_target].routing.target_precision == 0.99
    assert by_item[without].routing.target_precision is None
