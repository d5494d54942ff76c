"""Reviewing entities and boxes tasks over REST: the leased task shows the AI's spans or boxes, the review's
spans or boxes are checked against the item and the label schema, and they travel on review.submitted and
label.finalized to the item's view and the export."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from labelgate_core.bus.memory import MemoryBus
from labelgate_core.events import Box, DecisionOutcome, LabelFinalized, ReviewSubmitted, Span
from labelgate_core.topics import LABEL_FINALIZED, REVIEW_SUBMITTED

from .annotation_helpers import (
    TEXT,
    create_ner,
    create_pets,
    decision_with,
    image_bytes,
    lease,
    queue_with,
    review,
    submit_one,
    upload,
)
from .helpers import create_project, publish, queue_items, wait_published, wait_state

pytestmark = pytest.mark.integration

# "Ada Lovelace met Babbage at IBM"
ADA = Span(start=0, end=12, label="PER", text="Ada Lovelace", confidence=0.9)
BABBAGE = Span(start=17, end=24, label="PER", text="Babbage", confidence=0.7)
CAT = Box(label="cat", x=4, y=4, width=30, height=20, confidence=0.8)


async def queued_ner(api: httpx.AsyncClient, bus: MemoryBus, *spans: Span) -> dict[str, Any]:
    await create_ner(api)
    item_id = await submit_one(api, "ner", {"text": TEXT})
    await queue_with(api, bus, decision_with("ner", item_id, spans=spans))
    return await lease(api, "ner")


async def queued_pets(api: httpx.AsyncClient, bus: MemoryBus, *boxes: Box) -> dict[str, Any]:
    await create_pets(api)
    item_id = await submit_one(api, "pets", {"image": upload(image_bytes(64, 48))})
    await queue_with(api, bus, decision_with("pets", item_id, boxes=boxes))
    return await lease(api, "pets")


async def test_an_entities_review_finalizes_the_spans(api: httpx.AsyncClient, bus: MemoryBus) -> None:
    task = await queued_ner(api, bus, ADA, BABBAGE)
    assert task["text"] == TEXT
    assert task["image"] is None
    assert [(s["start"], s["end"], s["label"], s["text"]) for s in task["proposal"]["spans"]] == [
        (0, 12, "PER", "Ada Lovelace"),
        (17, 24, "PER", "Babbage"),
    ]
    assert task["proposal"]["spans"][0]["confidence"] == 0.9

    # The reviewer keeps Ada, drops Babbage and adds IBM; a repeated span counts once.
    spans = [
        {"start": 0, "end": 12, "label": "PER"},
        {"start": 28, "end": 31, "label": "ORG", "text": "IBM"},
        {"start": 0, "end": 12, "label": "PER"},
    ]
    response = await review(api, task, spans=spans)

    assert response.status_code == 201, response.text
    result = response.json()
    assert result["action"] == "correct"
    assert result["labels"] == ["PER", "ORG"]
    expected = [
        {"start": 0, "end": 12, "label": "PER", "text": "Ada Lovelace", "confidence": None},
        {"start": 28, "end": 31, "label": "ORG", "text": "IBM", "confidence": None},
    ]
    assert result["spans"] == expected
    [submitted] = await wait_published(bus, REVIEW_SUBMITTED, 1)
    assert isinstance(submitted, ReviewSubmitted)
    assert [(s.start, s.end, s.label, s.text) for s in submitted.spans] == [
        (0, 12, "PER", "Ada Lovelace"),
        (28, 31, "ORG", "IBM"),
    ]
    assert submitted.ai_spans == (ADA, BABBAGE)
    assert submitted.labels == ("PER", "ORG")
    assert submitted.ai_labels == ("PER",)
    [final] = await wait_published(bus, LABEL_FINALIZED, 1)
    assert isinstance(final, LabelFinalized)
    assert final.spans == submitted.spans
    assert final.boxes == ()

    item = (await api.get(f"/v1/projects/ner/items/{task['item_id']}")).json()
    assert item["state"] == "final"
    assert item["final"]["spans"] == expected
    assert item["reviews"][0]["spans"] == expected
    assert [s["text"] for s in item["decision"]["proposal"]["spans"]] == ["Ada Lovelace", "Babbage"]
    [line] = [json.loads(x) for x in (await api.get("/v1/projects/ner/export.jsonl")).text.splitlines()]
    assert line["spans"] == expected
    assert line["labels"] == ["PER", "ORG"]


async def test_the_same_spans_confirm_and_no_spans_is_an_answer(api: httpx.AsyncClient, bus: MemoryBus) -> None:
    task = await queued_ner(api, bus, ADA, BABBAGE)
    same = [{"start": 17, "end": 24, "label": "PER"}, {"start": 0, "end": 12, "label": "PER"}]
    assert (await review(api, task, spans=same)).json()["action"] == "confirm"

    other = await submit_one(api, "ner", {"text": "Nothing to see here", "idempotency_key": "nothing"})
    await queue_with(api, bus, decision_with("ner", other, spans=()))
    second = await lease(api, "ner")
    response = await review(api, second, spans=[])
    assert response.status_code == 201, response.text
    assert (response.json()["action"], response.json()["labels"], response.json()["spans"]) == ("confirm", [], [])


async def test_a_boxes_review_finalizes_the_boxes(api: httpx.AsyncClient, bus: MemoryBus) -> None:
    task = await queued_pets(api, bus, CAT)
    assert task["image"]["width"] == 64
    assert task["image"]["href"] == f"/v1/projects/pets/items/{task['item_id']}/image"
    assert task["proposal"]["boxes"] == [CAT.model_dump(mode="json")]

    # The cat's box nudged (IoU ≥ 0.5 with the AI's: a confirmation), and a dog added at the very edge.
    boxes = [
        {"label": "cat", "x": 5, "y": 4, "width": 30, "height": 20},
        {"label": "dog", "x": 40, "y": 28, "width": 24, "height": 20},
    ]
    response = await review(api, task, boxes=boxes)

    assert response.status_code == 201, response.text
    assert response.json()["labels"] == ["cat", "dog"]
    assert response.json()["action"] == "correct"  # the dog is new
    [submitted] = await wait_published(bus, REVIEW_SUBMITTED, 1)
    assert isinstance(submitted, ReviewSubmitted)
    assert [(b.label, b.x, b.width) for b in submitted.boxes] == [("cat", 5, 30), ("dog", 40, 24)]
    assert submitted.ai_boxes == (CAT,)
    [final] = await wait_published(bus, LABEL_FINALIZED, 1)
    assert isinstance(final, LabelFinalized)
    assert final.boxes == submitted.boxes
    item = (await api.get(f"/v1/projects/pets/items/{task['item_id']}")).json()
    assert [b["label"] for b in item["final"]["boxes"]] == ["cat", "dog"]
    [line] = [json.loads(x) for x in (await api.get("/v1/projects/pets/export.jsonl")).text.splitlines()]
    assert [b["x"] for b in line["boxes"]] == [5, 40]
    assert line["image"]["href"] == task["image"]["href"]


async def test_a_nudged_box_confirms(api: httpx.AsyncClient, bus: MemoryBus) -> None:
    task = await queued_pets(api, bus, CAT)
    response = await review(api, task, boxes=[{"label": "cat", "x": 6, "y": 5, "width": 30, "height": 20}])
    assert response.json()["action"] == "confirm"


async def test_a_retried_review_returns_the_first_and_a_different_answer_is_409(
    api: httpx.AsyncClient, bus: MemoryBus
) -> None:
    task = await queued_ner(api, bus, ADA)
    spans = [{"start": 0, "end": 12, "label": "PER"}]
    first = await review(api, task, spans=spans)

    retried = await review(api, task, spans=spans)
    changed = await review(api, task, spans=[{"start": 0, "end": 3, "label": "PER"}])

    assert first.status_code == 201
    assert retried.status_code == 200
    assert retried.json() == first.json()
    assert changed.status_code == 409
    assert "different answer" in changed.json()["error"]["message"]
    assert len(await wait_published(bus, REVIEW_SUBMITTED, 1)) == 1


async def test_an_auto_accepted_final_keeps_the_proposal_spans(api: httpx.AsyncClient, bus: MemoryBus) -> None:
    await create_ner(api)
    item_id = await submit_one(api, "ner", {"text": TEXT})
    decision = decision_with("ner", item_id, spans=(ADA,), confidence=0.99, outcome=DecisionOutcome.auto_accepted)
    await publish(
        bus,
        decision,
        LabelFinalized(
            producer="router",
            **decision.caused(),
            labels=("PER",),
            spans=(ADA,),
            source="auto",
            guideline_version=1,
            submitted_at=decision.submitted_at,
        ),
    )
    await wait_state(api, "ner", item_id, "final")

    item = (await api.get(f"/v1/projects/ner/items/{item_id}")).json()
    assert item["final"]["spans"] == [ADA.model_dump(mode="json")]
    [line] = [json.loads(x) for x in (await api.get("/v1/projects/ner/export.jsonl")).text.splitlines()]
    assert line["spans"] == [ADA.model_dump(mode="json")]


@pytest.mark.parametrize(
    ("answer", "status", "code", "words"),
    [
        ({}, 422, "invalid_spans", "an entities task's review needs `spans` (an empty list when there is"),
        ({"labels": ["PER"]}, 422, "invalid_spans", "an entities task's review needs `spans`"),
        ({"spans": [], "boxes": []}, 422, "invalid_spans", "an entities task is reviewed with `spans`, not `boxes`"),
        (
            {"spans": [{"start": 0, "end": 12, "label": "LOC"}]},
            422,
            "invalid_spans",
            "spans[0]: label 'LOC' is not in the project's labels (allowed: 'PER', 'ORG')",
        ),
        (
            {"spans": [{"start": 0, "end": 3, "label": "PER"}, {"start": 28, "end": 32, "label": "ORG"}]},
            422,
            "invalid_spans",
            "spans[1] ends at 32, past the end of the item's text (31 characters)",
        ),
        (
            {"spans": [{"start": 5, "end": 5, "label": "PER"}]},
            422,
            "validation_error",
            "spans[0]: a span's end (5) must be after its start (5)",
        ),
        ({"spans": [{"start": -1, "end": 5, "label": "PER"}]}, 422, "validation_error", "spans[0].start"),
        (
            {"spans": [{"start": 0, "end": 12, "label": "PER", "text": "Ada Lovelac"}]},
            422,
            "invalid_spans",
            "spans[0].text is 'Ada Lovelac' but the item's text from 0 to 12 is 'Ada Lovelace'",
        ),
        (
            {"spans": [{"start": 0, "end": 12, "label": "PER", "colour": "red"}]},
            422,
            "validation_error",
            "spans[0].colour: Extra inputs are not permitted",
        ),
        (
            {"spans": [{"start": 0, "end": 12, "label": "PER"}], "labels": ["ORG"]},
            422,
            "invalid_spans",
            "the labels of an entities task are those of its spans (PER); leave `labels` out",
        ),
    ],
)
async def test_a_bad_entities_review_is_a_clear_422_and_changes_nothing(
    api: httpx.AsyncClient, bus: MemoryBus, answer: dict[str, Any], status: int, code: str, words: str
) -> None:
    task = await queued_ner(api, bus, ADA)

    response = await review(api, task, **answer)

    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert words in response.json()["error"]["message"]
    # Nothing was recorded: the lease still holds, and a good review goes through.
    assert (await review(api, task, spans=[{"start": 0, "end": 12, "label": "PER"}])).status_code == 201


@pytest.mark.parametrize(
    ("answer", "status", "code", "words"),
    [
        ({}, 422, "invalid_boxes", "a boxes task's review needs `boxes`"),
        ({"boxes": [], "spans": []}, 422, "invalid_boxes", "a boxes task is reviewed with `boxes`, not `spans`"),
        (
            {"boxes": [{"label": "horse", "x": 0, "y": 0, "width": 1, "height": 1}]},
            422,
            "invalid_boxes",
            "boxes[0]: label 'horse' is not in the project's labels (allowed: 'cat', 'dog')",
        ),
        (
            {"boxes": [{"label": "cat", "x": 40, "y": 0, "width": 25, "height": 10}]},
            422,
            "invalid_boxes",
            "boxes[0] reaches (65, 10), outside the image of 64x48 pixels",
        ),
        (
            {"boxes": [{"label": "cat", "x": 0, "y": 30, "width": 10, "height": 18.5}]},
            422,
            "invalid_boxes",
            "boxes[0] reaches (10, 48.5), outside the image of 64x48 pixels",
        ),
        (
            {"boxes": [{"label": "cat", "x": -1, "y": 0, "width": 10, "height": 10}]},
            422,
            "validation_error",
            "boxes[0].x: Input should be greater than or equal to 0",
        ),
        (
            {"boxes": [{"label": "cat", "x": 0, "y": 0, "width": 0, "height": 10}]},
            422,
            "validation_error",
            "boxes[0].width: Input should be greater than 0",
        ),
        (
            {"boxes": [{"label": "cat", "x": 0, "y": 0, "width": 10}]},
            422,
            "validation_error",
            "boxes[0].height: Field required",
        ),
        (
            {"boxes": [{"label": "cat", "x": 0, "y": 0, "width": 10, "height": 10}], "labels": ["dog"]},
            422,
            "invalid_boxes",
            "the labels of a boxes task are those of its boxes (cat); leave `labels` out",
        ),
    ],
)
async def test_a_bad_boxes_review_is_a_clear_422_and_changes_nothing(
    api: httpx.AsyncClient, bus: MemoryBus, answer: dict[str, Any], status: int, code: str, words: str
) -> None:
    task = await queued_pets(api, bus, CAT)

    response = await review(api, task, **answer)

    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert words in response.json()["error"]["message"]
    ok = await review(api, task, boxes=[{"label": "cat", "x": 0, "y": 0, "width": 64, "height": 48}])
    assert ok.status_code == 201


async def test_a_classification_review_takes_labels_only(api: httpx.AsyncClient, bus: MemoryBus) -> None:
    await create_project(api)
    await queue_items(api, bus, "news", "x")
    task = await lease(api, "news")

    with_spans = await review(api, task, labels=["sports"], spans=[{"start": 0, "end": 1, "label": "sports"}])
    without = await review(api, task)

    assert with_spans.status_code == 422
    assert with_spans.json()["error"]["message"] == "a classification task is reviewed with `labels`, not `spans`"
    assert without.status_code == 422
    assert without.json()["error"]["message"] == "a classification task's review needs `labels`"
    ok = await review(api, task, labels=["sports"])
    assert ok.status_code == 201
    assert (ok.json()["spans"], ok.json()["boxes"]) == ([], [])
