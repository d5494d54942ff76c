"""The typed client on entities and boxes projects: items with text or an uploaded image, the leased task's
proposed spans and boxes, reviews that answer with spans and boxes, and the final ones read back."""

from __future__ import annotations

import asyncio
import io
import time

import httpx
import pytest
from PIL import Image

from labelgate_client import Box, ImageIn, ItemIn, LabelgateAPIError, LabelgateClient
from labelgate_core.bus.memory import MemoryBus
from labelgate_core.bus.port import OutgoingMessage
from labelgate_core.events import Box as EventBox
from labelgate_core.events import DecisionMade, DecisionOutcome, Proposal, RoutingReason, utcnow
from labelgate_core.events import Span as EventSpan
from labelgate_core.topics import encode, headers_for

pytestmark = pytest.mark.integration

URL = "http://labelgate.test"
TEXT = "Ada Lovelace met Babbage"


def png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (0, 90, 200)).save(buffer, "PNG")
    return buffer.getvalue()


async def route_to_review(bus: MemoryBus, project_id: str, item_id: str, proposal: Proposal) -> None:
    event = DecisionMade(
        producer="router",
        project_id=project_id,
        item_id=item_id,
        outcome=DecisionOutcome.needs_review,
        reasons=(RoutingReason.low_confidence,),
        proposal=proposal,
        guideline_version=1,
        submitted_at=utcnow(),
    )
    await bus.publish([OutgoingMessage(event.topic, event.key, encode(event), tuple(headers_for(event)))])


async def queued(client: LabelgateClient, project_id: str, item_id: str) -> None:
    deadline = time.monotonic() + 10
    while (await client.get_item(project_id, item_id)).state != "queued":
        assert time.monotonic() < deadline, "the item was not queued in time"
        await asyncio.sleep(0.02)


async def test_entities_round_trip(transport: httpx.AsyncBaseTransport, bus: MemoryBus) -> None:
    async with LabelgateClient(URL, transport=transport) as client:
        project = await client.create_project("ner", name="NER", labels=["PER", "ORG"], task_type="entities")
        assert project.task.type == "entities"
        [entry] = (await client.submit_items("ner", [ItemIn(text=TEXT)])).items
        ai = EventSpan(start=0, end=12, label="PER", text="Ada Lovelace", confidence=0.8)
        await route_to_review(
            bus,
            "ner",
            entry.item_id,
            Proposal(model_id="crf", model_version=1, labels=("PER",), confidence=0.8, spans=(ai,)),
        )
        await queued(client, "ner", entry.item_id)

        task = await client.lease("ner", "ana")
        assert task is not None
        assert task.proposal is not None
        [proposed] = task.proposal.spans
        assert (proposed.start, proposed.end, proposed.text, proposed.confidence) == (0, 12, "Ada Lovelace", 0.8)
        # The reviewer keeps the AI's span as it came (confidence and all) and adds one by hand.
        review = await client.review(
            "ner", task.task_id, task.lease_token, "ana", spans=[proposed, {"start": 17, "end": 24, "label": "PER"}]
        )
        assert review.labels == ["PER"]
        assert [(s.start, s.end, s.text) for s in review.spans] == [(0, 12, "Ada Lovelace"), (17, 24, "Babbage")]

        item = await client.get_item("ner", entry.item_id)
        assert item.final is not None
        assert [s.text for s in item.final.spans] == ["Ada Lovelace", "Babbage"]
        [line] = [line async for line in client.export("ner")]
        assert [s.label for s in line.spans] == ["PER", "PER"]


async def test_boxes_round_trip(transport: httpx.AsyncBaseTransport, bus: MemoryBus) -> None:
    async with LabelgateClient(URL, transport=transport) as client:
        await client.create_project("pets", name="Pets", labels=["cat", "dog"], task_type="boxes")
        data = png(40, 30)
        [entry] = (await client.submit_items("pets", [ItemIn(image=ImageIn.from_bytes(data, "image/png"))])).items
        assert await client.image("pets", entry.item_id) == (data, "image/png")
        ai = EventBox(label="cat", x=2, y=2, width=20, height=20, confidence=0.7)
        await route_to_review(
            bus,
            "pets",
            entry.item_id,
            Proposal(model_id="vlm", model_version=1, labels=("cat",), confidence=0.7, boxes=(ai,)),
        )
        await queued(client, "pets", entry.item_id)

        task = await client.lease("pets", "ana")
        assert task is not None
        assert task.image is not None
        assert (task.image.width, task.image.height, task.image.media_type) == (40, 30, "image/png")
        assert task.proposal is not None
        assert [b.label for b in task.proposal.boxes] == ["cat"]
        with pytest.raises(LabelgateAPIError) as outside:
            await client.review(
                "pets", task.task_id, task.lease_token, "ana", boxes=[Box(label="dog", x=30, y=0, width=20, height=10)]
            )
        assert (outside.value.status, outside.value.code) == (422, "invalid_boxes")
        review = await client.review(
            "pets",
            task.task_id,
            task.lease_token,
            "ana",
            boxes=[task.proposal.boxes[0], Box(label="dog", x=25, y=5, width=15, height=20)],
        )
        assert review.labels == ["cat", "dog"]
        assert review.action == "correct"

        item = await client.get_item("pets", entry.item_id)
        assert item.final is not None
        assert [(b.label, b.x) for b in item.final.boxes] == [("cat", 2), ("dog", 25)]
        assert item.image is not None
        assert item.image.href == f"/v1/projects/pets/items/{entry.item_id}/image"

