"""Entities and boxes through a real embedded pipeline (review API, labeler, router and metrics in one process,
over REST): items routed to review, reviewed with spans or boxes, and finalized with them; an uploaded image
stored, served and carried to the reviewer."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from labelgate.embedded import build_pipeline, embedded_settings, serve_in_background
from labelgate_labeler.settings import LabelerSettings

pytestmark = [pytest.mark.e2e]

PEOPLE = ["Ada Lovelace", "Charles Babbage", "Grace Hopper", "Alan Turing"]
ORGS = ["IBM", "Bletchley Park", "the Navy"]


@pytest.fixture
async def http(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    pipeline = build_pipeline(embedded_settings(tmp_path), LabelerSettings())
    async with serve_in_background(pipeline.app) as base_url, httpx.AsyncClient(base_url=base_url) as client:
        yield client


async def eventually(http: httpx.AsyncClient, path: str, check: Any, timeout_s: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        body: dict[str, Any] = (await http.get(path)).json()
        if check(body):
            return body
        assert time.monotonic() < deadline, f"{path} never got there: {body}"
        await asyncio.sleep(0.05)


def sentence(n: int) -> tuple[str, list[dict[str, Any]]]:
    """A sentence naming a person and an organisation, and its gold spans."""
    person, org = PEOPLE[n % len(PEOPLE)], ORGS[n % len(ORGS)]
    text = f"Report {n}: {person} joined {org} last spring."
    spans = [
        {"start": text.index(person), "end": text.index(person) + len(person), "label": "PER"},
        {"start": text.index(org), "end": text.index(org) + len(org), "label": "ORG"},
    ]
    return text, spans


async def lease(http: httpx.AsyncClient, project: str) -> dict[str, Any] | None:
    response = await http.post(f"/v1/projects/{project}/queue/lease", json={"reviewer_id": "rita"})
    if response.status_code == 204:
        return None
    assert response.status_code == 200, response.text
    task: dict[str, Any] = response.json()
    return task


async def test_entities_are_reviewed_and_finalized_with_spans(http: httpx.AsyncClient) -> None:
    project = {
        "id": "ner",
        "name": "People",
        "task": {"type": "entities", "labels": [{"name": "PER"}, {"name": "ORG"}]},
    }
    assert (await http.post("/v1/projects", json=project)).status_code == 201
    gold = dict(sentence(n) for n in range(6))
    submitted = await http.post("/v1/projects/ner/items", json={"items": [{"text": t} for t in gold]})
    assert submitted.status_code == 202, submitted.text
    bad = await http.post(
        "/v1/projects/ner/items",
        json={"items": [{"text": "x", "image": {"url": "https://x.org/a.png", "width": 5, "height": 5}}]},
    )
    assert (bad.status_code, bad.json()["error"]["code"]) == (422, "invalid_item")

    # No model yet: every item goes to a person.
    await eventually(http, "/v1/projects/ner/stats", lambda s: s["queue_depth"] == 6 and s["submitted"] == 0)
    reviewed = 0
    while (task := await lease(http, "ner")) is not None:
        assert task["task"]["type"] == "entities"
        spans = gold[task["text"]]
        wrong = await http.post(
            f"/v1/projects/ner/tasks/{task['task_id']}/review",
            json={
                "lease_token": task["lease_token"],
                "reviewer_id": "rita",
                "spans": [{**spans[0], "end": len(task["text"]) + 1}],
            },
        )
        assert (wrong.status_code, wrong.json()["error"]["code"]) == (422, "invalid_spans")
        response = await http.post(
            f"/v1/projects/ner/tasks/{task['task_id']}/review",
            json={"lease_token": task["lease_token"], "reviewer_id": "rita", "spans": spans},
        )
        assert response.status_code == 201, response.text
        assert response.json()["labels"] == ["PER", "ORG"]
        reviewed += 1
    assert reviewed == 6

    stats = await eventually(http, "/v1/projects/ner/stats", lambda s: s["final"] == 6)
    assert stats["final_by_source"] == {"auto": 0, "review": 6}
    lines = [json.loads(line) for line in (await http.get("/v1/projects/ner/export.jsonl")).text.splitlines()]
    assert len(lines) == 6
    for line in lines:
        expected = gold[line["text"]]
        assert [{k: s[k] for k in ("start", "end", "label")} for s in line["spans"]] == expected
        assert [s["text"] for s in line["spans"]] == [line["text"][s["start"] : s["end"]] for s in expected]
        item = (await http.get(f"/v1/projects/ner/items/{line['item_id']}")).json()
        assert item["final"]["spans"] == line["spans"]
        assert item["reviews"][0]["spans"] == line["spans"]
    metrics = await eventually(http, "/v1/projects/ner/metrics", lambda m: m["agreement"]["reviewed_items"] == 6)
    assert metrics["labels_finalized"] == {"review": 6}


async def test_a_boxes_item_with_an_uploaded_image_is_reviewed_with_boxes(http: httpx.AsyncClient) -> None:
    project = {"id": "pets", "name": "Pets", "task": {"type": "boxes", "labels": [{"name": "cat"}, {"name": "dog"}]}}
    assert (await http.post("/v1/projects", json=project)).status_code == 201
    buffer = io.BytesIO()
    Image.new("RGB", (120, 80), (250, 250, 250)).save(buffer, "PNG")
    data = buffer.getvalue()
    image = {"data_base64": base64.b64encode(data).decode(), "media_type": "image/png"}
    submitted = await http.post("/v1/projects/pets/items", json={"items": [{"text": "Who is there?", "image": image}]})
    assert submitted.status_code == 202, submitted.text
    item_id = submitted.json()["items"][0]["item_id"]

    await eventually(http, "/v1/projects/pets/stats", lambda s: s["queue_depth"] == 1)
    task = await lease(http, "pets")
    assert task is not None
    assert task["item_id"] == item_id
    assert (task["image"]["width"], task["image"]["height"]) == (120, 80)
    served = await http.get(task["image"]["href"])
    assert (served.status_code, served.content, served.headers["content-type"]) == (200, data, "image/png")

    boxes = [
        {"label": "cat", "x": 10, "y": 10, "width": 40, "height": 30},
        {"label": "dog", "x": 60.5, "y": 20, "width": 59.5, "height": 60},
    ]
    response = await http.post(
        f"/v1/projects/pets/tasks/{task['task_id']}/review",
        json={"lease_token": task["lease_token"], "reviewer_id": "rita", "boxes": boxes},
    )
    assert response.status_code == 201, response.text

    item = await eventually(http, f"/v1/projects/pets/items/{item_id}", lambda i: i["state"] == "final")
    assert [{k: b[k] for k in ("label", "x", "y", "width", "height")} for b in item["final"]["boxes"]] == boxes
    assert item["final"]["labels"] == ["cat", "dog"]
    [line] = [json.loads(x) for x in (await http.get("/v1/projects/pets/export.jsonl")).text.splitlines()]
    assert [b["label"] for b in line["boxes"]] == ["cat", "dog"]
    assert line["image"]["blob_id"] == item["image"]["blob_id"]
    await eventually(http, "/v1/projects/pets/metrics", lambda m: m["reviews"].get("correct") == 1)
