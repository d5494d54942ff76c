"""The typed client on the review API's quality features: project provenance and updates, routing settings, gold
items and reviewer accuracy, skills, overlapped review and agreement, guideline changes that re-queue items, and
exports in every format. Each feature also shows its 4xx answer surfacing as ``LabelgateAPIError``."""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import Sequence

import httpx
import pytest
from PIL import Image

from labelgate_client import Gold, ImageIn, ItemIn, LabelgateAPIError, LabelgateClient
from labelgate_core.bus.memory import MemoryBus
from labelgate_core.bus.port import OutgoingMessage
from labelgate_core.events import Box as EventBox
from labelgate_core.events import (
    DecisionMade,
    DecisionOutcome,
    Event,
    FinalSource,
    LabelFinalized,
    Proposal,
    RoutingReason,
    utcnow,
)
from labelgate_core.events import Span as EventSpan
from labelgate_core.topics import encode, headers_for

pytestmark = pytest.mark.integration

URL = "http://labelgate.test"


async def publish(bus: MemoryBus, *events: Event) -> None:
    """Publish as the router would."""
    await bus.publish([OutgoingMessage(e.topic, e.key, encode(e), tuple(headers_for(e))) for e in events])


async def to_review(
    bus: MemoryBus, project_id: str, item_id: str, *, gold: bool = False, proposed: str = "sports"
) -> None:
    reasons = (RoutingReason.gold,) if gold else (RoutingReason.low_confidence,)
    await publish(
        bus,
        DecisionMade(
            producer="router",
            project_id=project_id,
            item_id=item_id,
            outcome=DecisionOutcome.needs_review,
            reasons=reasons,
            proposal=Proposal(model_id="local", model_version=1, labels=(proposed,), confidence=0.4),
            guideline_version=1,
            submitted_at=utcnow(),
        ),
    )


def auto_final(
    project_id: str,
    item_id: str,
    labels: Sequence[str],
    *,
    spans: Sequence[EventSpan] = (),
    boxes: Sequence[EventBox] = (),
) -> LabelFinalized:
    return LabelFinalized(
        producer="router",
        project_id=project_id,
        item_id=item_id,
        labels=tuple(labels),
        spans=tuple(spans),
        boxes=tuple(boxes),
        source=FinalSource.auto,
        guideline_version=1,
        submitted_at=utcnow(),
    )


async def wait_state(client: LabelgateClient, project_id: str, item_ids: Sequence[str], state: str) -> None:
    deadline = time.monotonic() + 10
    for item_id in item_ids:
        while (await client.get_item(project_id, item_id)).state != state:
            assert time.monotonic() < deadline, f"item {item_id} did not become {state} in time"
            await asyncio.sleep(0.02)


async def answer_all(client: LabelgateClient, project_id: str, answers: dict[str, dict[str, list[str]]]) -> int:
    """Let each reviewer lease and answer, in turn, until nobody gets a task; ``answers[reviewer][item_id]`` is
    what the reviewer says of the item. How many answers were given."""
    given = 0
    while True:
        progressed = False
        for reviewer, said in answers.items():
            task = await client.lease(project_id, reviewer)
            if task is None:
                continue
            await client.review(project_id, task.task_id, task.lease_token, reviewer, said[task.item_id])
            given, progressed = given + 1, True
        if not progressed:
            return given


def png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 90, 0)).save(buffer, "PNG")
    return buffer.getvalue()


async def test_projects_carry_provenance_and_routing_settings(transport: httpx.AsyncBaseTransport) -> None:
    async with LabelgateClient(URL, transport=transport) as client:
        created = await client.create_project(
            "news",
            name="News",
            labels=["sports", "politics"],
            data_owner="Example Media",
            license="CC-BY-4.0",
            overlap_rate=0.25,
            overlap_k=3,
            consensus="dawid_skene",
            exclude_unreliable_labels=True,
        )
        plain = await client.create_project("plain", name="Plain", labels=["a"])

        assert (created.data_owner, created.license) == ("Example Media", "CC-BY-4.0")
        routing = created.routing
        assert (routing.overlap_rate, routing.overlap_k, routing.consensus) == (0.25, 3, "dawid_skene")
        assert routing.exclude_unreliable_labels is True
        assert (plain.data_owner, plain.license, plain.routing.overlap_rate, plain.routing.consensus) == (
            None,
            None,
            0.0,
            "majority",
        )

        renamed = await client.update_project("news", name="World news", data_owner="Example Media Ltd")
        assert (renamed.name, renamed.data_owner, renamed.license) == ("World news", "Example Media Ltd", "CC-BY-4.0")
        cleared = await client.update_project("news", clear_license=True)
        assert (cleared.name, cleared.data_owner, cleared.license) == ("World news", "Example Media Ltd", None)
        both = await client.update_project("news", clear_data_owner=True, license="MIT")
        assert (both.data_owner, both.license) == (None, "MIT")

        changed = await client.update_routing(
            "news", overlap_rate=1.0, overlap_k=2, consensus="majority", exclude_unreliable_labels=False
        )
        assert (changed.routing.overlap_rate, changed.routing.overlap_k, changed.routing.consensus) == (
            1.0,
            2,
            "majority",
        )
        assert changed.routing.exclude_unreliable_labels is False
        assert changed.routing.threshold == routing.threshold, "fields not given stay as they were"
        assert (await client.get_project("news")).routing == changed.routing

        with pytest.raises(LabelgateAPIError) as too_few:
            await client.update_routing("news", overlap_k=1)
        with pytest.raises(LabelgateAPIError) as empty_name:
            await client.update_project("news", name="")
        with pytest.raises(LabelgateAPIError) as missing:
            await client.update_project("nope", name="Nope")
        with pytest.raises(ValueError, match="either license or clear_license"):
            await client.update_project("news", license="MIT", clear_license=True)
        with pytest.raises(ValueError, match="either target_precision or clear_target_precision"):
            await client.update_routing("news", target_precision=0.9, clear_target_precision=True)
        assert (await client.get_project("news")).license == "MIT", "a refused call sends nothing"
        with pytest.raises(LabelgateAPIError) as bad_rate:
            await client.create_project("other", name="Other", labels=["a"], overlap_rate=2.0)

    assert (too_few.value.status, too_few.value.code) == (422, "validation_error")
    assert "overlap_k" in too_few.value.message
    assert (empty_name.value.status, empty_name.value.code) == (422, "validation_error")
    assert "name" in empty_name.value.message
    assert (missing.value.status, missing.value.code) == (404, "not_found")
    assert bad_rate.value.status == 422
    assert "routing.overlap_rate" in bad_rate.value.message


async def test_gold_items_score_reviewers(transport: httpx.AsyncBaseTransport, bus: MemoryBus) -> None:
    async with LabelgateClient(URL, transport=transport) as client:
        await client.create_project("news", name="News", labels=["sports", "politics"])
        result = await client.submit_items(
            "news",
            [
                ItemIn(text="Cup final tonight", gold=Gold(labels=["sports"])),
                {"text": "Derby ends 1-1", "gold": {"labels": ["sports"]}},
                "Budget vote delayed",
            ],
        )
        gold_ids = [entry.item_id for entry in result.items[:2]]
        plain_id = result.items[2].item_id
        for item_id in gold_ids:
            await to_review(bus, "news", item_id, gold=True, proposed="politics")
        await to_review(bus, "news", plain_id)
        await wait_state(client, "news", [*gold_ids, plain_id], "queued")

        says = {item_id: ["sports"] for item_id in gold_ids} | {plain_id: ["politics"]}
        wrong = {item_id: ["politics"] for item_id in gold_ids} | {plain_id: ["politics"]}
        assert await answer_all(client, "news", {"ana": says, "bob": wrong}) == 3

        reviewers = {r.reviewer_id: r for r in await client.reviewers("news")}
        assert sum(r.reviews for r in reviewers.values()) == 3
        assert sum(r.gold_reviews for r in reviewers.values()) == 2
        for name, reviewer in reviewers.items():
            if reviewer.gold_reviews:
                expected = 1.0 if name == "ana" else 0.0
                assert reviewer.gold_accuracy == expected
                assert reviewer.gold_accuracy_lower_bound is not None
                assert reviewer.gold_accuracy_lower_bound <= expected
            else:
                assert (reviewer.gold_accuracy, reviewer.gold_accuracy_lower_bound) == (None, None)

        gold_item = await client.get_item("news", gold_ids[0])
        assert gold_item.gold is True
        assert gold_item.final is not None
        assert gold_item.final.labels == ["sports"], "a gold item's final label is its known answer"
        assert (await client.get_item("news", plain_id)).gold is False

        with pytest.raises(LabelgateAPIError) as unknown_label:
            await client.submit_items("news", ["fine", ItemIn(text="x", gold=Gold(labels=["weather"]))])
        with pytest.raises(LabelgateAPIError) as missing:
            await client.reviewers("nope")
        assert (await client.stats("news")).items == 3, "a rejected batch creates nothing"

    assert (unknown_label.value.status, unknown_label.value.code) == (422, "invalid_labels")
    assert "items[1].gold" in unknown_label.value.message
    assert "'weather'" in unknown_label.value.message
    assert (missing.value.status, missing.value.code) == (404, "not_found")


async def test_tasks_that_require_a_skill_go_to_reviewers_who_declare_it(
    transport: httpx.AsyncBaseTransport, bus: MemoryBus
) -> None:
    async with LabelgateClient(URL, transport=transport) as client:
        await client.create_project("news", name="News", labels=["sports", "politics"])
        [entry] = (await client.submit_items("news", [ItemIn(text="El partido", required_skill="lang:es")])).items
        await to_review(bus, "news", entry.item_id)
        await wait_state(client, "news", [entry.item_id], "queued")

        assert (await client.get_item("news", entry.item_id)).required_skill == "lang:es"
        assert await client.lease("news", "ana") is None
        assert await client.lease("news", "ana", skills=["lang:fr"]) is None
        task = await client.lease("news", "bob", 60, skills=["lang:fr", "lang:es"])
        assert task is not None
        assert (task.item_id, task.required_skill) == (entry.item_id, "lang:es")

        with pytest.raises(LabelgateAPIError) as bad_skill:
            await client.lease("news", "carl", skills=["not a skill"])
        with pytest.raises(LabelgateAPIError) as bad_required:
            await client.submit_items("news", [ItemIn(text="x", required_skill="")])

    assert (bad_skill.value.status, bad_skill.value.code) == (422, "validation_error")
    assert "skills[0]" in bad_skill.value.message
    assert bad_required.value.status == 422
    assert "items[0].required_skill" in bad_required.value.message


async def test_overlapped_review_reports_consensus_and_agreement(
    transport: httpx.AsyncBaseTransport, bus: MemoryBus
) -> None:
    async with LabelgateClient(URL, transport=transport) as client:
        await client.create_project("news", name="News", labels=["sports", "politics"], overlap_rate=1.0, overlap_k=2)
        empty = await client.agreement("news")
        assert (empty.overlapped_items, empty.answers, empty.cohen_kappa, empty.labels) == (0, 0, None, [])

        ids = [e.item_id for e in (await client.submit_items("news", ["Goal!", "Vote today", "Match report"])).items]
        for item_id in ids:
            await to_review(bus, "news", item_id)
        await wait_state(client, "news", ids, "queued")
        said = dict(zip(ids, [["sports"], ["politics"], ["sports"]], strict=True))

        assert await answer_all(client, "news", {"ana": said, "bob": said}) == 6

        item = await client.get_item("news", ids[1])
        assert item.final is not None
        assert item.final.labels == ["politics"]
        assert item.final.consensus is not None
        consensus = item.final.consensus
        assert (consensus.method, consensus.support, consensus.tied, consensus.answers) == ("majority", 1.0, False, 2)
        assert sorted(r.reviewer_id for r in item.reviews) == ["ana", "bob"]

        agreement = await client.agreement("news")
        assert (agreement.overlapped_items, agreement.answers) == (3, 6)
        assert agreement.cohen_kappa == pytest.approx(1.0)
        assert {a.label: a.specific_agreement for a in agreement.labels} == {"sports": 1.0, "politics": 1.0}
        assert agreement.ambiguous_labels == []

        with pytest.raises(LabelgateAPIError) as missing:
            await client.agreement("nope")

    assert (missing.value.status, missing.value.code) == (404, "not_found")


async def test_a_guideline_change_requeues_older_finals(transport: httpx.AsyncBaseTransport, bus: MemoryBus) -> None:
    async with LabelgateClient(URL, transport=transport) as client:
        await client.create_project("news", name="News", labels=["sports", "politics"])
        ids = [e.item_id for e in (await client.submit_items("news", ["Goal!", "Match report", "Vote today"])).items]
        first = ["sports", "sports", "politics"]
        await publish(bus, *(auto_final("news", i, [label]) for i, label in zip(ids, first, strict=True)))
        await wait_state(client, "news", ids, "final")

        quiet = await client.update_guidelines("news", "Main topic.")
        by_label = await client.update_guidelines("news", "Main topic; politics wins ties.", requeue=["politics"])
        everything = await client.update_guidelines("news", "Main topic; read the headline.", requeue="all")

        assert (quiet.guideline_version, quiet.requeued) == (2, 0)
        assert (by_label.guideline_version, by_label.requeued) == (3, 1)
        assert (everything.guideline_version, everything.requeued) == (4, 2), "a queued item is not queued twice"
        assert everything.guidelines == "Main topic; read the headline."
        await wait_state(client, "news", ids, "queued")

        said = dict(zip(ids, [["sports"], ["sports"], ["sports"]], strict=True))
        assert await answer_all(client, "news", {"ana": said}) == 3
        item = await client.get_item("news", ids[2])
        assert item.final is not None
        assert (item.state, item.final.labels, item.final.source) == ("final", ["sports"], "review")
        assert [(f.labels, f.source, f.guideline_version) for f in item.earlier_finals] == [(["politics"], "auto", 1)]

        with pytest.raises(LabelgateAPIError) as unknown:
            await client.update_guidelines("news", "Changed", requeue=["weather"])
        with pytest.raises(LabelgateAPIError) as not_a_scope:
            await client.update_guidelines("news", "Changed", requeue="some")
        with pytest.raises(LabelgateAPIError) as empty:
            await client.update_guidelines("news", "Changed", requeue=[])
        after = await client.get_project("news")

    assert (unknown.value.status, unknown.value.code) == (422, "invalid_labels")
    assert "'weather'" in unknown.value.message
    assert (not_a_scope.value.status, empty.value.status) == (422, 422)
    assert "requeue" in not_a_scope.value.message
    assert (after.guideline_version, after.guidelines) == (4, "Main topic; read the headline."), (
        "a refused change changes nothing"
    )


async def test_exports_in_every_format(transport: httpx.AsyncBaseTransport, bus: MemoryBus) -> None:
    async with LabelgateClient(URL, transport=transport) as client:
        await client.create_project(
            "news",
            name="News",
            labels=["sports", "politics"],
            guidelines="Main topic.",
            data_owner="Example Media",
            license="CC-BY-4.0",
        )
        gold_id, plain_id = (
            e.item_id
            for e in (
                await client.submit_items("news", [ItemIn(text="Cup final", gold=Gold(labels=["sports"])), "Vote"])
            ).items
        )
        await to_review(bus, "news", gold_id, gold=True)
        await publish(bus, auto_final("news", plain_id, ["politics"]))
        await wait_state(client, "news", [gold_id], "queued")
        assert await answer_all(client, "news", {"ana": {gold_id: ["sports"]}}) == 1
        await wait_state(client, "news", [plain_id], "final")

        finals = {f.item_id: f for f in [f async for f in client.export("news")]}
        assert {i: f.gold for i, f in finals.items()} == {gold_id: True, plain_id: False}
        assert {(f.data_owner, f.license) for f in finals.values()} == {("Example Media", "CC-BY-4.0")}
        raw = b"".join([chunk async for chunk in client.export_bytes("news")])
        assert {json.loads(line)["item_id"] for line in raw.decode().splitlines()} == {gold_id, plain_id}

        [hf] = [json.loads(line) async for line in client.export_lines("news", "hf")]
        assert (hf["id"], hf["text"], hf["label"], hf["license"]) == (plain_id, "Vote", "politics", "CC-BY-4.0")
        [openai] = [json.loads(line) async for line in client.export_lines("news", "openai")]
        assert [m["role"] for m in openai["messages"]] == ["system", "user", "assistant"]
        assert openai["messages"][0]["content"] == "Main topic."
        assert "politics" in openai["messages"][2]["content"]

        with pytest.raises(LabelgateAPIError) as unfit:
            [line async for line in client.export_lines("news", "conll")]
        with pytest.raises(LabelgateAPIError) as missing:
            [chunk async for chunk in client.export_bytes("nope", "hf")]

        await client.create_project("ner", name="NER", labels=["PER"], task_type="entities", license="MIT")
        [ner] = (await client.submit_items("ner", ["Ada met Babbage"])).items
        await publish(
            bus, auto_final("ner", ner.item_id, ["PER"], spans=[EventSpan(start=0, end=3, label="PER", text="Ada")])
        )
        await wait_state(client, "ner", [ner.item_id], "final")
        conll = [line async for line in client.export_lines("ner", "conll")]
        assert "# license = MIT" in conll
        assert conll[conll.index(f"# item_id = {ner.item_id}") + 1 :][:3] == ["Ada\tB-PER", "met\tO", "Babbage\tO"]

        await client.create_project("pets", name="Pets", labels=["cat"], task_type="boxes")
        [pet] = (await client.submit_items("pets", [ItemIn(image=ImageIn.from_bytes(png(32, 24), "image/png"))])).items
        cat = EventBox(label="cat", x=1, y=2, width=10, height=8)
        await publish(bus, auto_final("pets", pet.item_id, ["cat"], boxes=[cat]))
        await wait_state(client, "pets", [pet.item_id], "final")
        coco = json.loads(b"".join([chunk async for chunk in client.export_bytes("pets", "coco")]))
        assert [(i["width"], i["height"]) for i in coco["images"]] == [(32, 24)]
        assert [a["bbox"] for a in coco["annotations"]] == [[1, 2, 10, 8]]
        assert [c["name"] for c in coco["categories"]] == ["cat"]

    assert (unfit.value.status, unfit.value.code) == (400, "unsupported_export_format")
    assert "conll" in unfit.value.message
    assert unfit.value.details["formats"] == ["jsonl", "hf", "openai"]
    assert (missing.value.status, missing.value.code) == (404, "not_found")
