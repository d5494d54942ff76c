"""Helpers for entities and boxes projects: their projects, images, and the router's decisions on them."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import Any

import httpx
from PIL import Image

from labelgate_core.bus.memory import MemoryBus
from labelgate_core.events import (
    Box,
    DecisionMade,
    DecisionOutcome,
    Proposal,
    RoutingReason,
    Span,
    utcnow,
)

from .helpers import create_project, publish, wait_state

NER: dict[str, Any] = {
    "id": "ner",
    "name": "People and organisations",
    "task": {"type": "entities", "labels": [{"name": "PER"}, {"name": "ORG"}]},
}
PETS: dict[str, Any] = {
    "id": "pets",
    "name": "Pets in photos",
    "task": {"type": "boxes", "labels": [{"name": "cat"}, {"name": "dog"}]},
}
TEXT = "Ada Lovelace met Babbage at IBM"


def image_bytes(width: int = 64, height: int = 48, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buffer, fmt)
    return buffer.getvalue()


def upload(data: bytes, media_type: str = "image/png", **extra: Any) -> dict[str, Any]:
    return {"data_base64": base64.b64encode(data).decode(), "media_type": media_type, **extra}


async def create_ner(api: httpx.AsyncClient) -> None:
    await create_project(api, **NER)


async def create_pets(api: httpx.AsyncClient) -> None:
    await create_project(api, **PETS)


async def submit_one(api: httpx.AsyncClient, project_id: str, item: dict[str, Any]) -> str:
    response = await api.post(f"/v1/projects/{project_id}/items", json={"items": [item]})
    assert response.status_code == 202, response.text
    item_id: str = response.json()["items"][0]["item_id"]
    return item_id


def decision_with(
    project_id: str,
    item_id: str,
    *,
    spans: Sequence[Span] = (),
    boxes: Sequence[Box] = (),
    confidence: float | None = 0.6,
    outcome: DecisionOutcome = DecisionOutcome.needs_review,
) -> DecisionMade:
    """The router's decision on a proposal of spans or boxes."""
    labels = tuple(dict.fromkeys([*(s.label for s in spans), *(b.label for b in boxes)]))
    return DecisionMade(
        producer="router",
        project_id=project_id,
        item_id=item_id,
        outcome=outcome,
        reasons=(RoutingReason.low_confidence,),
        proposal=Proposal(
            model_id="crf",
            model_version=1,
            labels=labels,
            confidence=confidence,
            spans=tuple(spans),
            boxes=tuple(boxes),
        ),
        guideline_version=1,
        submitted_at=utcnow(),
    )


async def queue_with(api: httpx.AsyncClient, bus: MemoryBus, decision: DecisionMade) -> None:
    await publish(bus, decision)
    await wait_state(api, decision.project_id, decision.item_id, "queued")


async def lease(api: httpx.AsyncClient, project_id: str, reviewer: str = "ana") -> dict[str, Any]:
    response = await api.post(f"/v1/projects/{project_id}/queue/lease", json={"reviewer_id": reviewer})
    assert response.status_code == 200, response.text
    task: dict[str, Any] = response.json()
    return task


async def review(api: httpx.AsyncClient, task: dict[str, Any], **answer: Any) -> httpx.Response:
    body = {"lease_token": task["lease_token"], "reviewer_id": "ana", **answer}
    return await api.post(f"/v1/projects/{task['project_id']}/tasks/{task['task_id']}/review", json=body)
