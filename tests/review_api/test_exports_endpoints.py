"""Training-data exports over the REST API: each format, the formats a task type refuses, and the data owner
and licence every export carries."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from labelgate_core.bus.memory import MemoryBus
from labelgate_core.events import Box, FinalSource, LabelFinalized, Span, utcnow
from labelgate_review_api.settings import ReviewApiSettings

from .helpers import auto_final, create_project, publish, queue_items, submit, wait_state

pytestmark = pytest.mark.integration

OWNER = {"data_owner": "ACME Corp", "license": "CC-BY-4.0"}


@pytest.fixture
def settings() -> ReviewApiSettings:
    return ReviewApiSettings(export_batch_size=3, queue_depth_refresh_s=0.5)


def lines(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    return [json.loads(line) for line in response.text.splitlines()]


async def review_first(api: httpx.AsyncClient, project_id: str, labels: list[str]) -> None:
    task = (await api.post(f"/v1/projects/{project_id}/queue/lease", json={"reviewer_id": "ana"})).json()
    response = await api.post(
        f"/v1/projects/{project_id}/tasks/{task['task_id']}/review",
        json={"lease_token": task["lease_token"], "reviewer_id": "ana", "labels": labels},
    )
    assert response.status_code == 201, response.text


async def news_with_finals(api: httpx.AsyncClient, bus: MemoryBus) -> tuple[str, list[str]]:
    """A classification project with one reviewed and seven auto-accepted final labels, and one item waiting."""
    await create_project(api, **OWNER)
    [reviewed] = await queue_items(api, bus, "news", "Budget passes")
    await review_first(api, "news", ["politics"])
    auto_ids = await submit(api, "news", *[f"match report {n}" for n in range(7)])
    await publish(bus, *(auto_final("news", item_id) for item_id in auto_ids))
    await submit(api, "news", "still waiting")
    for item_id in auto_ids:
        await wait_state(api, "news", item_id, "final")
    return reviewed, auto_ids


async def test_jsonl_lines_carry_owner_and_licence(api: httpx.AsyncClient, bus: MemoryBus) -> None:
    reviewed, auto_ids = await news_with_finals(api, bus)

    exported = lines(await api.get("/v1/projects/news/export", params={"format": "jsonl"}))
    legacy = lines(await api.get("/v1/projects/news/export.jsonl"))

    assert [line["item_id"] for line in exported] == sorted([reviewed, *auto_ids])
    assert all(line["data_owner"] == "ACME Corp" and line["license"] == "CC-BY-4.0" for line in exported)
    assert legacy == exported


async def test_the_default_format_is_jsonl(api: httpx.AsyncClient, bus: MemoryBus) -> None:
    await news_with_finals(api, bus)

    response = await api.get("/v1/projects/news/export")

    assert response.headers["content-type"].startswith("application/x-ndjson")
    assert response.headers["content-disposition"] == 'attachment; filename="news.jsonl"'
    assert len(lines(response)) == 8


async def test_hf_rows_are_text_and_label(api: httpx.AsyncClient, bus: MemoryBus) -> None:
    reviewed, auto_ids = await news_with_finals(api, bus)

    rows = lines(await api.get("/v1/projects/news/export", params={"format": "hf"}))

    by_id = {row["id"]: row for row in rows}
    assert len(rows) == 8
    assert by_id[reviewed] == {"id": reviewed, "text": "Budget passes", "label": "politics", **OWNER}
    assert by_id[auto_ids[0]]["label"] == "sports"


async def test_openai_rows_use_the_guidelines_of_the_finals_version(api: httpx.AsyncClient, bus: MemoryBus) -> None:
    await news_with_finals(api, bus)
    await api.put("/v1/projects/news/guidelines", json={"text": "Version two: pick the main topic."})
    [later] = await submit(api, "news", "chip launch")
    await publish(
        bus,
        LabelFinalized(
            producer="router",
            project_id="news",
            item_id=later,
            labels=("tech",),
            source=FinalSource.auto,
            guideline_version=2,
            submitted_at=utcnow(),
        ),
    )
    await wait_state(api, "news", later, "final")

    response = await api.get("/v1/projects/news/export", params={"format": "openai"})

    rows = lines(response)
    assert response.headers["content-disposition"] == 'attachment; filename="news.openai.jsonl"'
    assert len(rows) == 9
    first = next(row for row in rows if row["messages"][1]["content"] == "Budget passes")
    last = next(row for row in rows if row["messages"][1]["content"] == "chip launch")
    assert first["messages"] == [
        {"role": "system", "content": "Pick the main topic."},
        {"role": "user", "content": "Budget passes"},
        {"role": "assistant", "content": '{"label": "politics"}'},
    ]
    assert last["messages"][0]["content"] == "Version two: pick the main topic."
    assert json.loads(last["messages"][2]["content"]) == {"label": "tech"}
    assert all(row["data_owner"] == "ACME Corp" and row["license"] == "CC-BY-4.0" for row in rows)


@pytest.mark.parametrize("export_format", ["conll", "coco"])
async def test_a_format_that_does_not_fit_the_task_is_a_400(api: httpx.AsyncClient, export_format: str) -> None:
    await create_project(api)

    response = await api.get("/v1/projects/news/export", params={"format": export_format})

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "unsupported_export_format"
    assert error["message"] == (
        f"format '{export_format}' does not fit a project of task type 'classification'"
        " (this project exports as: jsonl, hf, openai)"
    )


async def test_an_unknown_format_says_which_exist(api: httpx.AsyncClient) -> None:
    await create_project(api)

    response = await api.get("/v1/projects/news/export", params={"format": "parquet"})

    assert response.status_code == 422
    message = response.json()["error"]["message"]
    assert message.startswith("query parameter format:")
    assert "'conll'" in message
    assert "'coco'" in message


async def test_export_of_an_unknown_project_is_a_404(api: httpx.AsyncClient) -> None:
    response = await api.get("/v1/projects/nope/export", params={"format": "hf"})

    assert response.status_code == 404
    assert response.json()["error"]["message"] == "project 'nope' not found"


async def test_a_project_without_finals_exports_nothing(api: httpx.AsyncClient) -> None:
    await create_project(api)
    await submit(api, "news", "waiting")

    for export_format in ("jsonl", "hf", "openai"):
        response = await api.get("/v1/projects/news/export", params={"format": export_format})
        assert response.status_code == 200
        assert response.text == ""


# -- owner and licence on the project ------------------------------------------------------------------------


async def test_owner_and_licence_are_set_changed_and_cleared(api: httpx.AsyncClient) -> None:
    created = await create_project(api, **OWNER)
    assert (created["data_owner"], created["license"]) == ("ACME Corp", "CC-BY-4.0")

    changed = await api.patch("/v1/projects/news", json={"license": "Proprietary: internal training only"})
    assert changed.status_code == 200, changed.text
    assert changed.json()["license"] == "Proprietary: internal training only"
    assert changed.json()["data_owner"] == "ACME Corp"

    cleared = await api.patch("/v1/projects/news", json={"data_owner": None})
    assert cleared.json()["data_owner"] is None
    assert (await api.get("/v1/projects/news")).json()["license"] == "Proprietary: internal training only"


async def test_a_project_without_owner_or_licence_exports_nulls(api: httpx.AsyncClient, bus: MemoryBus) -> None:
    await create_project(api)
    [item] = await submit(api, "news", "a goal")
    await publish(bus, auto_final("news", item))
    await wait_state(api, "news", item, "final")

    [row] = lines(await api.get("/v1/projects/news/export", params={"format": "hf"}))

    assert (row["data_owner"], row["license"]) == (None, None)


@pytest.mark.parametrize(
    ("body", "field"),
    [({"licence": "MIT"}, "licence"), ({"name": None}, "name"), ({"license": ""}, "license")],
)
async def test_a_bad_project_update_is_refused(api: httpx.AsyncClient, body: dict[str, Any], field: str) -> None:
    await create_project(api)

    response = await api.patch("/v1/projects/news", json=body)

    assert response.status_code == 422
    assert response.json()["error"]["message"].startswith(field)


async def test_updating_an_unknown_project_is_a_404(api: httpx.AsyncClient) -> None:
    response = await api.patch("/v1/projects/nope", json={"license": "MIT"})

    assert response.status_code == 404


# -- entities and boxes, finalized through the service's own consumer ----------------------------------------

ENTITIES: dict[str, Any] = {
    "id": "ner",
    "name": "People and places",
    "task": {"type": "entities", "labels": [{"name": "PER"}, {"name": "LOC"}]},
    "guidelines": "Mark people and places.",
    **OWNER,
}


async def test_conll_export_of_entity_finals(api: httpx.AsyncClient, bus: MemoryBus) -> None:
    await create_project(api, **ENTITIES)
    text = "Ada Lovelace lived in London."
    [item] = await submit(api, "ner", text)
    spans = (
        Span(start=0, end=12, label="PER", text="Ada Lovelace"),
        Span(start=22, end=28, label="LOC", text="London"),
    )
    await publish(
        bus,
        LabelFinalized(
            producer="router",
            project_id="ner",
            item_id=item,
            labels=("PER", "LOC"),
            spans=spans,
            source=FinalSource.auto,
            guideline_version=1,
            submitted_at=utcnow(),
        ),
    )
    await wait_state(api, "ner", item, "final")

    response = await api.get("/v1/projects/ner/export", params={"format": "conll"})
    hf = lines(await api.get("/v1/projects/ner/export", params={"format": "hf"}))

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text == (
        "# project = ner\n# data_owner = ACME Corp\n# license = CC-BY-4.0\n\n"
        f"# item_id = {item}\nAda\tB-PER\nLovelace\tI-PER\nlived\tO\nin\tO\nLondon\tB-LOC\n.\tO\n\n"
    )
    assert hf[0]["spans"] == [
        {"start": 0, "end": 12, "label": "PER", "text": "Ada Lovelace"},
        {"start": 22, "end": 28, "label": "LOC", "text": "London"},
    ]
    assert (await api.get("/v1/projects/ner/export", params={"format": "coco"})).status_code == 400


BOXES: dict[str, Any] = {
    "id": "streets",
    "name": "Street scenes",
    "task": {"type": "boxes", "labels": [{"name": "car"}, {"name": "person"}]},
    **OWNER,
}


async def test_coco_export_of_box_finals(api: httpx.AsyncClient, bus: MemoryBus) -> None:
    await create_project(api, **BOXES)
    images = [{"url": f"https://img.example/street-{n}.jpg", "width": 640, "height": 480} for n in range(4)]
    response = await api.post(
        "/v1/projects/streets/items",
        json={"items": [{"image": image, "idempotency_key": f"img-{n}"} for n, image in enumerate(images)]},
    )
    assert response.status_code == 202, response.text
    ids = [entry["item_id"] for entry in response.json()["items"]]
    finals = []
    for n, item_id in enumerate(ids):
        boxes = [Box(label="car", x=10 * n, y=20, width=30, height=40)]
        if n % 2:
            boxes.append(Box(label="person", x=1, y=2, width=3, height=4))
        finals.append(
            LabelFinalized(
                producer="router",
                project_id="streets",
                item_id=item_id,
                labels=tuple({b.label for b in boxes}),
                boxes=tuple(boxes),
                source=FinalSource.auto,
                guideline_version=1,
                submitted_at=utcnow(),
            )
        )
    await publish(bus, *finals)
    for item_id in ids:
        await wait_state(api, "streets", item_id, "final")

    response = await api.get("/v1/projects/streets/export", params={"format": "coco"})

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    coco = response.json()
    assert coco["info"]["contributor"] == "ACME Corp"
    assert coco["licenses"] == [{"id": 1, "name": "CC-BY-4.0", "url": ""}]
    assert coco["categories"] == [
        {"id": 1, "name": "car", "supercategory": ""},
        {"id": 2, "name": "person", "supercategory": ""},
    ]
    assert [image["labelgate_item_id"] for image in coco["images"]] == sorted(ids)
    assert all(image["width"] == 640 and image["height"] == 480 and image["license"] == 1 for image in coco["images"])
    assert len(coco["annotations"]) == 6
    assert [a["id"] for a in coco["annotations"]] == list(range(1, 7))
    image_of = {image["id"]: image["labelgate_item_id"] for image in coco["images"]}
    first = ids.index(image_of[coco["annotations"][0]["image_id"]])
    assert coco["annotations"][0]["bbox"] == [10 * first, 20, 30, 40]
    assert coco["annotations"][0]["category_id"] == 1
    assert {a["category_id"] for a in coco["annotations"]} == {1, 2}
    assert (await api.get("/v1/projects/streets/export", params={"format": "conll"})).status_code == 400
    assert (await api.get("/v1/projects/streets/export", params={"format": "openai"})).status_code == 400


async def test_coco_of_a_project_without_finals_is_a_valid_empty_document(api: httpx.AsyncClient) -> None:
    await create_project(api, **{**BOXES, "license": None})

    response = await api.get("/v1/projects/streets/export", params={"format": "coco"})

    coco = response.json()
    assert (coco["images"], coco["annotations"], coco["licenses"]) == ([], [], [])
    assert [c["name"] for c in coco["categories"]] == ["car", "person"]
    assert coco["info"]["license"] is None
