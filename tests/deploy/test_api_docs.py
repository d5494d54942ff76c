"""docs/asyncapi.yaml and docs/openapi.json: committed, up to date with the code, and saying what the code does
(every topic and its dead-letter topic, the event schemas, the key, the headers; the review API's routes)."""

from __future__ import annotations

import importlib.util
import json
from types import ModuleType
from typing import Any

import pytest

from labelgate_core import asyncapi
from labelgate_core.events import EVENT_TYPES, Event
from labelgate_core.topics import all_topics, dlq_topic, headers_for

from .helpers import ROOT, load_yaml

pytestmark = pytest.mark.unit


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("generate_api_docs", ROOT / "scripts" / "generate_api_docs.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def docs() -> ModuleType:
    return generator()


@pytest.mark.parametrize("name", ["docs/asyncapi.yaml", "docs/openapi.json"])
def test_the_committed_document_is_what_the_code_generates(docs: ModuleType, name: str) -> None:
    path = ROOT / name
    assert path.is_file(), f"{name} is missing; generate it with: {docs.COMMAND}"
    fresh = docs.DOCUMENTS[name]()
    assert path.read_text(encoding="utf-8") == fresh, (
        f"{name} is out of date with the code; regenerate it with: {docs.COMMAND} (and commit it)"
    )


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    document: dict[str, Any] = load_yaml((ROOT / "docs" / "asyncapi.yaml").read_text(encoding="utf-8"))
    return document


def test_the_yaml_reads_back_as_the_document_it_was_written_from() -> None:
    assert load_yaml(asyncapi.render()) == json.loads(json.dumps(asyncapi.build()))


def test_the_yaml_writer_keeps_awkward_strings_intact() -> None:
    awkward = {
        "strings": ["key: value", " leading", "trailing ", "#hash", "yes", "No", "null", "1.5", "", "- dash",
                    "a\nb", "ends with newline\n", "tab\there", "é — ü", "'quoted'", '"double"', "@at", "*star"],
        "numbers": [0, -2, 1.5, 1e-05, 3.0],
        "other": [None, True, False, {}, [], [[1], []], [{"k": "v", "l": ["x"]}]],
        "nested": {"block": "line one\n\nline three", "list": ["x\ny"]},
    }  # fmt: skip
    assert load_yaml(asyncapi.to_yaml(awkward)) == awkward


def test_every_topic_and_its_dead_letter_topic_is_a_channel(spec: dict[str, Any]) -> None:
    assert spec["asyncapi"].startswith("3.")
    addresses = sorted(channel["address"] for channel in spec["channels"].values())
    assert addresses == sorted(all_topics(with_dlq=True))


def _channel(spec: dict[str, Any], topic: str) -> dict[str, Any]:
    found: dict[str, Any]
    (found,) = [channel for channel in spec["channels"].values() if channel["address"] == topic]
    assert found["bindings"]["kafka"]["topic"] == topic
    return found


def _resolve(spec: dict[str, Any], ref: dict[str, str]) -> Any:
    node: Any = spec
    for part in ref["$ref"].removeprefix("#/").split("/"):
        node = node[part]
    return node


@pytest.mark.parametrize("event_type", EVENT_TYPES, ids=lambda e: e.topic)
def test_each_event_message_carries_the_models_schema_key_and_headers(
    spec: dict[str, Any], event_type: type[Event]
) -> None:
    (message_ref,) = _channel(spec, event_type.topic)["messages"].values()
    message = _resolve(spec, message_ref)
    assert message["name"] == event_type.model_fields["event_type"].default
    assert message["contentType"] == "application/json"

    payload = _resolve(spec, message["payload"])
    model = event_type.model_json_schema(by_alias=True)
    assert set(payload["properties"]) == set(model["properties"])
    assert sorted(payload.get("required", [])) == sorted(model.get("required", []))
    for name, prop in model["properties"].items():
        described = payload["properties"][name]
        for keyword in ("type", "format", "const", "default"):
            assert described.get(keyword) == prop.get(keyword), f"{event_type.__name__}.{name}: {keyword}"

    key = message["bindings"]["kafka"]["key"]
    assert key["type"] == "string"
    probe = event_type.model_construct(
        event_type=message["name"], producer="tests", project_id="the-project", item_id="the-item"
    )
    assert (
        probe.key == {"The event's item_id.": "the-item", "The event's project_id.": "the-project"}[key["description"]]
    )

    headers = _resolve(spec, message["headers"])
    assert set(headers["required"]) == {name for name, _ in headers_for(probe)}


@pytest.mark.parametrize("event_type", EVENT_TYPES, ids=lambda e: e.topic)
def test_each_dead_letter_channel_documents_the_dlq_headers(spec: dict[str, Any], event_type: type[Event]) -> None:
    (message_ref,) = _channel(spec, dlq_topic(event_type.topic))["messages"].values()
    headers = _resolve(spec, _resolve(spec, message_ref)["headers"])
    # What consumer.EventConsumer sets when it dead-letters a record.
    assert {"dlq.original_topic", "dlq.partition", "dlq.offset", "dlq.error", "dlq.attempts"} <= set(
        headers["required"]
    )


def test_the_openapi_document_describes_the_review_api() -> None:
    document = json.loads((ROOT / "docs" / "openapi.json").read_text(encoding="utf-8"))
    assert document["openapi"].startswith("3.")
    assert document["info"]["title"] == "Labelgate review API"
    paths = document["paths"]
    assert "post" in paths["/v1/projects"]
    assert "post" in paths["/v1/projects/{project_id}/items"]
    assert {"/healthz", "/readyz", "/metrics"} <= set(paths)
    # Entities and boxes: images are uploaded with items and served back; reviews answer with spans or boxes.
    assert "get" in paths["/v1/projects/{project_id}/items/{item_id}/image"]
    schemas = document["components"]["schemas"]
    assert {"data_base64", "url", "media_type", "width", "height"} <= set(schemas["ImageCreate"]["properties"])
    assert {"labels", "spans", "boxes"} <= set(schemas["ReviewCreate"]["properties"])
    assert {"spans", "boxes"} <= set(schemas["ProposalPublic"]["properties"])
