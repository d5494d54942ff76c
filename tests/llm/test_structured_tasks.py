"""Entities, boxes and multi-label items over the OpenAI test double: validated against the text or the image,
with a confidence per span, box or label; and projects that use an endpoint of their own."""

from __future__ import annotations

import base64
import json
import logging

import httpx
import pytest
from pydantic import SecretStr

from labelgate_core.events import ImageRef, LabelDef, RoutingPolicy, RoutingReason, TaskSpec, TaskType
from labelgate_labeler.llm.config import ConfidenceMethod, ProjectLLMConfig, StructuredOutput
from labelgate_labeler.llm.factory import project_clients
from labelgate_labeler.llm.openai_client import OpenAIChatClient
from labelgate_labeler.llm.provider import LLMProvider
from labelgate_labeler.llm.review_api_images import ReviewApiImages
from labelgate_labeler.provider import LabelRequest
from labelgate_labeler.settings import LabelerSettings
from labelgate_router.policy import decide

from .helpers import MULTI, config, provider, request
from .openai_double import DoubleConfig, OpenAIDouble, ServedDouble

pytestmark = pytest.mark.integration

ENTITIES = TaskSpec(type=TaskType.entities, labels=(LabelDef(name="PER"), LabelDef(name="LOC")))
BOXES = TaskSpec(type=TaskType.boxes, labels=(LabelDef(name="cat"), LabelDef(name="dog")))
IMAGE = ImageRef(url="https://images.example/pets.png", width=640, height=480)
ANYTHING_GOES = RoutingPolicy(threshold=0.0, audit_rate=0.0)
TEXT = "Alice Smith flew from Oslo to Paris."


def box_request(image: ImageRef | None = IMAGE, project_id: str = "acme") -> LabelRequest:
    return LabelRequest(project_id=project_id, item_id="img-1", text="", task=BOXES, guideline_version=1, image=image)


def served_with(**fields: object) -> ServedDouble:
    return ServedDouble(OpenAIDouble(DoubleConfig(**fields)))  # type: ignore[arg-type]


# -- entities ---------------------------------------------------------------------------------------------------


async def test_entities_come_with_offsets_into_the_text_and_a_logprob_confidence_per_span() -> None:
    with served_with(label_probabilities={"PER": 0.9, "LOC": 0.7}) as served:
        llm = provider(served.base_url, confidence=ConfidenceMethod.logprobs)
        proposal = await llm.propose(request(TEXT, task=ENTITIES))
        await llm.close()
        schema = served.double.requests[0]["response_format"]["json_schema"]["schema"]
    assert [(s.text, s.label, s.start, s.end) for s in proposal.spans] == [
        ("Alice Smith", "PER", 0, 11),
        ("Oslo", "LOC", 22, 26),
        ("Paris", "LOC", 30, 35),
    ]
    assert [s.confidence for s in proposal.spans] == pytest.approx([0.9, 0.7, 0.7])
    assert proposal.method == "logprobs"
    assert proposal.labels == ("PER", "LOC")
    assert proposal.confidence == pytest.approx(0.7)  # the least confident span
    assert proposal.scores == pytest.approx({"PER": 0.9, "LOC": 0.7})
    assert schema["properties"]["entities"]["items"]["properties"]["type"]["enum"] == ["PER", "LOC"]


async def test_sampled_answers_give_each_span_its_share_and_the_item_the_share_of_identical_answers() -> None:
    with served_with(disagree_every=3) as served:
        llm = provider(served.base_url, samples=3)
        proposal = await llm.propose(request(TEXT, task=ENTITIES))
        await llm.close()
    assert proposal.method == "self_consistency"
    # The third sample leaves out the last span ("Paris").
    assert [s.confidence for s in proposal.spans] == pytest.approx([1.0, 1.0, 2 / 3])
    assert proposal.confidence == pytest.approx(2 / 3)


async def test_without_samples_each_span_keeps_its_stated_confidence() -> None:
    with served_with(logprobs=False, verbalized=0.65) as served:
        llm = provider(served.base_url)
        proposal = await llm.propose(request(TEXT, task=ENTITIES))
        await llm.close()
    assert proposal.method == "verbalized"
    assert [s.confidence for s in proposal.spans] == pytest.approx([0.65] * 3)
    assert proposal.confidence == pytest.approx(0.65)


async def test_offsets_off_by_one_are_repaired_when_the_quoted_text_occurs_once() -> None:
    with served_with() as served:
        served.double.script = ["shifted_offsets"]
        llm = provider(served.base_url, structured_output=StructuredOutput.json_schema)
        proposal = await llm.propose(request(TEXT, task=ENTITIES))
        await llm.close()
    assert not proposal.invalid
    assert [(s.start, s.end) for s in proposal.spans] == [(0, 11), (22, 26), (30, 35)]


@pytest.mark.parametrize(
    ("outcome", "text", "why"),
    [
        ("shifted_offsets", "Paris, then Paris again.", "does not match the item's text"),
        ("unknown_label", TEXT, "outside the schema"),
    ],
    ids=["offsets-that-cannot-be-repaired", "type-outside-the-schema"],
)
async def test_entities_that_do_not_fit_the_text_or_the_schema_make_the_answer_invalid(
    outcome: str, text: str, why: str
) -> None:
    with served_with() as served:
        served.double.script = [outcome]
        llm = provider(served.base_url, structured_output=StructuredOutput.json_schema)
        proposal = await llm.propose(request(text, task=ENTITIES))
        await llm.close()
    assert proposal.invalid
    assert why in (proposal.error or "")
    assert proposal.spans == ()
    assert proposal.confidence is None
    assert decide(proposal, ENTITIES, ANYTHING_GOES, draw=0.99).reasons == (RoutingReason.invalid_output,)


async def test_entities_work_on_endpoints_without_structured_output() -> None:
    with served_with(modes=frozenset({"json"}), logprobs=False) as served:
        llm = provider(served.base_url)
        proposal = await llm.propose(request(TEXT, task=ENTITIES))
        await llm.close()
        system = served.double.requests[-1]["messages"][0]["content"]
    assert llm.structured_output is StructuredOutput.json
    assert '"entities"' in system
    assert [s.text for s in proposal.spans] == ["Alice Smith", "Oslo", "Paris"]


# -- boxes ------------------------------------------------------------------------------------------------------


async def test_boxes_items_send_their_image_and_get_boxes_with_a_confidence_each() -> None:
    with served_with(label_probabilities={"cat": 0.95, "dog": 0.6}) as served:
        llm = provider(served.base_url, confidence=ConfidenceMethod.logprobs)
        proposal = await llm.propose(box_request())
        await llm.close()
        item_message = served.double.requests[0]["messages"][-1]
    assert {"type": "image_url", "image_url": {"url": IMAGE.url}} in item_message["content"]
    assert [(b.label, b.x, b.y, b.width, b.height) for b in proposal.boxes] == [
        ("cat", 10, 20, 100, 80),
        ("dog", 150, 40, 60, 60),
    ]
    assert [b.confidence for b in proposal.boxes] == pytest.approx([0.95, 0.6])
    assert proposal.confidence == pytest.approx(0.6)
    assert proposal.labels == ("cat", "dog")
    assert proposal.method == "logprobs"


async def test_sampled_boxes_agree_by_overlap() -> None:
    with served_with(disagree_every=2) as served:
        llm = provider(served.base_url, samples=2)
        proposal = await llm.propose(box_request())
        await llm.close()
    assert proposal.method == "self_consistency"
    assert [b.confidence for b in proposal.boxes] == pytest.approx([1.0, 0.5])
    assert proposal.confidence == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("outcome", "why"),
    [("out_of_bounds", "outside the 640x480 image"), ("unknown_label", "outside the schema")],
    ids=["box-outside-the-image", "label-outside-the-schema"],
)
async def test_boxes_outside_the_image_or_the_schema_make_the_answer_invalid(outcome: str, why: str) -> None:
    with served_with() as served:
        served.double.script = [outcome]
        llm = provider(served.base_url)
        proposal = await llm.propose(box_request())
        await llm.close()
    assert proposal.invalid
    assert why in (proposal.error or "")
    assert decide(proposal, BOXES, ANYTHING_GOES, draw=0.99).reasons == (RoutingReason.invalid_output,)


async def test_stored_image_bytes_are_fetched_from_the_review_api_and_sent_inline() -> None:
    png = b"\x89PNG\r\n\x1a\nnot-really-an-image"
    asked: list[httpx.Request] = []

    def review_api(req: httpx.Request) -> httpx.Response:
        asked.append(req)
        if req.url.path == "/v1/projects/acme/items/img-1/image":
            return httpx.Response(200, content=png, headers={"content-type": "image/png"})
        return httpx.Response(404, json={"detail": "no such item"})

    images = ReviewApiImages(
        "http://review-api:8000", api_key=SecretStr("review-key"), transport=httpx.MockTransport(review_api)
    )
    stored = ImageRef(blob_id="sha256-abc", width=640, height=480)
    with served_with() as served:
        cfg = config(served.base_url)
        llm = LLMProvider(cfg, OpenAIChatClient(cfg), images=images)
        proposal = await llm.propose(box_request(stored))
        missing = await llm.propose(box_request(stored, project_id="other"))
        await llm.close()
        parts = served.double.requests[0]["messages"][-1]["content"]
    url = next(p["image_url"]["url"] for p in parts if p["type"] == "image_url")
    assert url == "data:image/png;base64," + base64.b64encode(png).decode()
    assert asked[0].headers["authorization"] == "Bearer review-key"
    assert len(proposal.boxes) == 2
    assert missing.confidence is None
    assert not missing.invalid
    assert "404" in (missing.error or "")
    assert len(served.double.requests) == 1  # nothing was asked of the model without the image


async def test_a_stored_image_without_a_review_api_goes_to_a_person_saying_why() -> None:
    with served_with() as served:
        llm = provider(served.base_url)
        proposal = await llm.propose(box_request(ImageRef(blob_id="sha256-abc", width=10, height=10)))
        await llm.close()
        asked = len(served.double.requests)
    assert proposal.confidence is None
    assert "LABELGATE_LABELER_REVIEW_API_URL" in (proposal.error or "")
    assert asked == 0


# -- multi-label ------------------------------------------------------------------------------------------------


async def test_multi_label_gets_a_probability_per_label_from_its_yes_no_token() -> None:
    with served_with(label_probabilities={"billing": 0.9, "shipping": 0.6}) as served:
        llm = provider(served.base_url, confidence=ConfidenceMethod.logprobs)
        proposal = await llm.propose(request("billing refund and a shipping delay", task=MULTI))
        await llm.close()
        schema = served.double.requests[0]["response_format"]["json_schema"]["schema"]
    assert proposal.labels == ("billing", "shipping")
    assert proposal.method == "logprobs"
    # P(label applies): "other" was answered false with probability 0.8.
    assert proposal.scores == pytest.approx({"billing": 0.9, "shipping": 0.6, "other": 0.2})
    assert proposal.confidence == pytest.approx(0.6)  # the least certain label
    assert schema["properties"]["labels"]["required"] == ["billing", "shipping", "other"]


async def test_multi_label_falls_back_to_sample_agreement_then_stated_confidence_per_label() -> None:
    with served_with(logprobs=False, disagree_every=3) as served:
        sampled = provider(served.base_url, samples=3)
        by_samples = await sampled.propose(request("billing refund and a shipping delay", task=MULTI))
        await sampled.close()
        stated = provider(served.base_url)
        by_statement = await stated.propose(request("billing refund and a shipping delay", task=MULTI))
        await stated.close()
    assert by_samples.method == "self_consistency"
    assert by_samples.scores == pytest.approx({"billing": 1.0, "shipping": 2 / 3, "other": 0.0})
    assert by_samples.confidence == pytest.approx(2 / 3)
    assert by_statement.method == "verbalized"
    assert by_statement.scores == pytest.approx({"billing": 0.7, "shipping": 0.7, "other": 0.3})
    assert by_statement.confidence == pytest.approx(0.7)


async def test_a_multi_label_answer_naming_a_label_outside_the_schema_is_invalid() -> None:
    with served_with() as served:
        served.double.script = ["unknown_label"]
        llm = provider(served.base_url)
        proposal = await llm.propose(request("billing", task=MULTI))
        await llm.close()
    assert proposal.invalid
    assert "HACKED" in (proposal.error or "")


# -- per-project endpoints --------------------------------------------------------------------------------------


async def test_a_project_with_its_own_endpoint_key_and_model_is_labeled_there_and_its_key_never_shows(
    caplog: pytest.LogCaptureFixture,
) -> None:
    legal_key = "sk-legal-do-not-leak"
    with served_with() as shared, served_with(modes=frozenset({"json"})) as own:
        settings = LabelerSettings.model_validate(
            {
                "provider": "openai",
                "llm": config(shared.base_url, api_key="sk-shared").model_dump(mode="python"),
                "llm_projects": {"legal": {"base_url": own.base_url, "api_key": legal_key, "model": "legal-1"}},
            }
        )
        cfg = settings.llm
        llm = LLMProvider(
            cfg, OpenAIChatClient(cfg), projects=settings.llm_projects, clients=project_clients(cfg, settings)
        )
        with caplog.at_level(logging.DEBUG):
            legal = await llm.propose(
                LabelRequest(
                    project_id="legal",
                    item_id="l-1",
                    text="billing question",
                    task=request("x").task,
                    guideline_version=1,
                )
            )
            acme = await llm.propose(request("shipping question"))
        await llm.close()
        own_headers, own_bodies = own.double.headers, own.double.requests
        shared_headers, shared_bodies = shared.double.headers, shared.double.requests
    assert legal.labels == ("billing",)
    assert legal.model_id == "legal-1"
    assert acme.labels == ("shipping",)
    assert {b["model"] for b in own_bodies} == {"legal-1"}
    assert {h["authorization"] for h in own_headers} == {f"Bearer {legal_key}"}
    assert {b["model"] for b in shared_bodies} == {"double-1"}
    assert {h["authorization"] for h in shared_headers} == {"Bearer sk-shared"}
    # The project's endpoint negotiated down to plain JSON; the shared one kept its json_schema.
    assert "response_format" not in own_bodies[-1]
    assert shared_bodies[-1]["response_format"]["type"] == "json_schema"
    assert llm.structured_output is StructuredOutput.json_schema
    assert legal_key not in repr(settings)
    assert legal_key not in legal.model_dump_json() + json.dumps(settings.model_dump(mode="json"))
    assert legal_key not in caplog.text


def test_project_settings_take_an_endpoint_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "LABELGATE_LABELER_LLM_PROJECTS",
        '{"legal": {"base_url": "http://llm.legal:8000/v1", "api_key": "sk-x", "model": "m"}}',
    )
    settings = LabelerSettings()
    own = settings.llm_projects["legal"]
    assert own == ProjectLLMConfig(base_url="http://llm.legal:8000/v1", api_key=SecretStr("sk-x"), model="m")
    assert own.own_endpoint
    assert "sk-x" not in repr(settings)
