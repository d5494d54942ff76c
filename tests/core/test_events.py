"""Events on the wire: every event round-trips, stays frozen, tolerates newer producers, and keeps the JSON
Schema committed in tests/schemas (regenerate deliberately with LABELGATE_UPDATE_SCHEMAS=1)."""

from __future__ import annotations

import difflib
import json
import os
import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from labelgate_core import topics
from labelgate_core.events import (
    EVENT_TYPES,
    DecisionMade,
    DecisionOutcome,
    Event,
    FinalSource,
    GuidelineChanged,
    ItemSubmitted,
    LabelDef,
    LabelFinalized,
    LabelScored,
    ModelUpdated,
    Proposal,
    ReviewAction,
    ReviewSubmitted,
    RoutingPolicy,
    RoutingReason,
    TaskSpec,
    TaskType,
)
from labelgate_core.topics import decode, encode, headers_for

pytestmark = pytest.mark.unit

SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"
UPDATE = os.environ.get("LABELGATE_UPDATE_SCHEMAS") == "1"
HOW_TO_UPDATE = (
    "If the change is additive and intended, regenerate the snapshots with\n"
    "    LABELGATE_UPDATE_SCHEMAS=1 .venv/bin/pytest tests/core/test_events.py\n"
    "and commit tests/schemas/. A breaking change (a field removed, renamed, retyped or newly required) needs a "
    "new topic version (…v2) instead."
)

AT = datetime(2025, 3, 1, 12, 30, tzinfo=UTC)
TASK = TaskSpec(
    type=TaskType.multi_label,
    labels=(LabelDef(name="spam", description="unsolicited"), LabelDef(name="ham")),
    subjective=False,
)
ROUTING = RoutingPolicy(threshold=0.85, audit_rate=0.1)
PROPOSAL = Proposal(
    model_id="gpt-4o-mini",
    model_version=3,
    labels=("spam",),
    confidence=0.93,
    scores={"spam": 0.93, "ham": 0.07},
    latency_ms=412.5,
    cost_usd=0.00021,
)
ENVELOPE: dict[str, Any] = {
    "producer": "tests",
    "project_id": "proj-1",
    "item_id": "item-1",
    "causation_id": "0190a5f4-0000-7000-8000-000000000001",
    "occurred_at": AT,
}


def samples() -> list[Event]:
    """One event of every type, with every optional field filled in."""
    return [
        ItemSubmitted(**ENVELOPE, text="Win a free cruise!", metadata={"source": "mail", "n": 1}, task=TASK,
                      routing=ROUTING, guideline_version=2),
        LabelScored(**ENVELOPE, proposal=PROPOSAL, task=TASK, routing=ROUTING, guideline_version=2,
                    submitted_at=AT),
        DecisionMade(**ENVELOPE, outcome=DecisionOutcome.needs_review,
                     reasons=(RoutingReason.low_confidence, RoutingReason.audit), proposal=PROPOSAL,
                     guideline_version=2, submitted_at=AT),
        ReviewSubmitted(**ENVELOPE, review_id="rev-1", reviewer_id="alice", action=ReviewAction.correct,
                        labels=("ham",), ai_labels=("spam",), ai_confidence=0.61,
                        decision_reasons=(RoutingReason.low_confidence,), text="Win a free cruise!", task=TASK,
                        guideline_version=2, duration_s=7.5, queued_at=AT),
        LabelFinalized(**ENVELOPE, labels=("ham",), source=FinalSource.review, guideline_version=2,
                       model_id="gpt-4o-mini", model_version=3, confidence=0.61, submitted_at=AT),
        GuidelineChanged(**{**ENVELOPE, "item_id": "proj-1"}, version=3, text="Mark promotions as spam.",
                         task=TASK, routing=ROUTING),
        ModelUpdated(**{**ENVELOPE, "item_id": "proj-1"}, model_id="local-tfidf", model_version=4,
                     trained_on=1200, holdout_accuracy=0.91, train_seconds=3.2),
    ]


SAMPLES = samples()


def by_name(events: list[Event]) -> list[Any]:
    return [pytest.param(event, id=type(event).__name__) for event in events]


def test_there_is_a_sample_of_every_event_type() -> None:
    assert [type(e) for e in SAMPLES] == list(EVENT_TYPES)


@pytest.mark.parametrize("event", by_name(SAMPLES))
def test_every_event_round_trips_through_the_wire_encoding(event: Event) -> None:
    decoded = decode(event.topic, encode(event))

    assert decoded == event
    assert type(decoded) is type(event)
    assert decoded.event_id == event.event_id, "a retry of the same event keeps its id"
    assert decoded.occurred_at.tzinfo is not None


@pytest.mark.parametrize("event", by_name(SAMPLES))
def test_events_are_frozen(event: Event) -> None:
    with pytest.raises(ValidationError):
        event.project_id = "another"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        event.event_id = "another"  # type: ignore[misc]


def test_value_objects_inside_events_are_frozen() -> None:
    with pytest.raises(ValidationError):
        TASK.subjective = True  # type: ignore[misc]
    with pytest.raises(ValidationError):
        PROPOSAL.confidence = 0.1  # type: ignore[misc]


FREE_FORM = {"metadata", "scores"}  # maps of the caller's own keys, not objects with fields


def add_unknown_fields(node: Any) -> Any:
    """What a newer producer might send: an extra field in the envelope and in every nested object."""
    if isinstance(node, dict):
        fields = {k: v if k in FREE_FORM else add_unknown_fields(v) for k, v in node.items()}
        return {**fields, "added_later": {"x": [1, 2]}}
    if isinstance(node, list):
        return [add_unknown_fields(v) for v in node]
    return node


@pytest.mark.parametrize("event", by_name(SAMPLES))
def test_a_newer_producers_extra_fields_do_not_break_decoding(event: Event) -> None:
    newer = add_unknown_fields(json.loads(encode(event)))
    newer["schema_version"] = event.schema_version + 1  # additive changes may bump the minor schema version

    decoded = decode(event.topic, json.dumps(newer).encode())

    assert decoded.schema_version == event.schema_version + 1
    assert decoded.model_copy(update={"schema_version": event.schema_version}) == event


@pytest.mark.parametrize("event", by_name(SAMPLES))
def test_a_value_that_is_not_the_topics_event_is_refused(event: Event) -> None:
    with pytest.raises(ValidationError):
        decode(event.topic, b"not json at all")
    with pytest.raises(ValidationError):
        decode(event.topic, b'{"event_type": "something.else"}')
    other = next(e for e in SAMPLES if type(e) is not type(event))
    with pytest.raises(ValidationError):
        decode(event.topic, encode(other))


def test_an_unknown_topic_is_refused() -> None:
    with pytest.raises(KeyError):
        decode("labelgate.unknown.v1", encode(SAMPLES[0]))


def test_topic_names_follow_the_convention_and_have_dead_letter_topics() -> None:
    constants = [
        topics.ITEM_SUBMITTED, topics.LABEL_SCORED, topics.DECISION_MADE, topics.REVIEW_SUBMITTED,
        topics.LABEL_FINALIZED, topics.GUIDELINE_CHANGED, topics.MODEL_UPDATED,
    ]
    assert sorted(constants) == sorted(topics.TOPICS)
    for name in topics.TOPICS:
        assert re.fullmatch(r"labelgate\.[a-z_]+\.[a-z_]+\.v[1-9][0-9]*", name), name
    assert topics.all_topics(with_dlq=False) == list(topics.TOPICS)
    assert sorted(topics.all_topics()) == sorted([*topics.TOPICS, *(f"{t}.dlq" for t in topics.TOPICS)])


@pytest.mark.parametrize("event", by_name(SAMPLES))
def test_events_are_keyed_so_that_one_items_events_stay_in_order(event: Event) -> None:
    per_project = isinstance(event, GuidelineChanged | ModelUpdated)
    assert event.key == (event.project_id if per_project else event.item_id)


def test_an_event_caused_by_another_carries_its_trace() -> None:
    submitted = SAMPLES[0]
    scored = LabelScored(**submitted.caused(), producer="labeler", proposal=PROPOSAL, task=TASK, routing=ROUTING,
                         guideline_version=2, submitted_at=AT)

    assert (scored.project_id, scored.item_id) == (submitted.project_id, submitted.item_id)
    assert scored.causation_id == submitted.event_id
    assert scored.trace_id == submitted.trace_id
    assert scored.event_id != submitted.event_id
    assert dict(headers_for(scored))["event_id"] == scored.event_id.encode()
    assert dict(headers_for(scored))["trace_id"] == submitted.trace_id.encode()


def test_new_events_get_uuid7_ids_and_utc_timestamps() -> None:
    first, second = (
        ItemSubmitted(producer="t", project_id="p", item_id="i", text="x", task=TASK, routing=ROUTING,
                      guideline_version=1)
        for _ in range(2)
    )

    assert first.event_id != second.event_id
    assert uuid.UUID(first.event_id).version == 7
    assert first.occurred_at.utcoffset() == timedelta(0)


# -- JSON Schema snapshots -------------------------------------------------------------------------------


def schema_text(event_type: type[Event]) -> str:
    return json.dumps(event_type.model_json_schema(by_alias=True), indent=2, sort_keys=True) + "\n"


def breaking_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Changes a reader of the old schema would trip over: removed or retyped properties, new required ones."""
    found: list[str] = []

    def compare(where: str, before: dict[str, Any], after: dict[str, Any]) -> None:
        old_props, new_props = before.get("properties", {}), after.get("properties", {})
        for name in sorted(set(old_props) - set(new_props)):
            found.append(f"{where}.{name} removed")
        for name in sorted(set(old_props) & set(new_props)):
            for key in ("type", "$ref", "anyOf", "items", "enum", "const"):
                if old_props[name].get(key) != new_props[name].get(key):
                    found.append(f"{where}.{name}: {key} changed")
                    break
        for name in sorted(set(after.get("required", [])) - set(before.get("required", []))):
            found.append(f"{where}.{name} newly required")

    compare("", old, new)
    for name, definition in old.get("$defs", {}).items():
        if name in new.get("$defs", {}):
            compare(name, definition, new["$defs"][name])
    return found


@pytest.mark.parametrize("event_type", [pytest.param(t, id=t.topic) for t in EVENT_TYPES])
def test_the_json_schema_of_every_event_matches_its_snapshot(event_type: type[Event]) -> None:
    path = SCHEMAS / f"{event_type.topic}.json"
    current = schema_text(event_type)
    if UPDATE:
        SCHEMAS.mkdir(parents=True, exist_ok=True)
        path.write_text(current)
        return
    if not path.exists():
        pytest.fail(f"no JSON Schema snapshot for {event_type.topic} at {path}.\n{HOW_TO_UPDATE}")
    committed = path.read_text()
    if json.loads(committed) != json.loads(current):
        diff = "".join(difflib.unified_diff(
            committed.splitlines(keepends=True), current.splitlines(keepends=True),
            fromfile=f"committed {path.name}", tofile=f"{event_type.__name__} now",
        ))
        breaking = breaking_changes(json.loads(committed), json.loads(current))
        verdict = ("This looks BREAKING: " + "; ".join(breaking)) if breaking else "This looks additive."
        pytest.fail(
            f"the JSON Schema of {event_type.__name__} ({event_type.topic}) differs from its snapshot.\n"
            f"{verdict}\n{HOW_TO_UPDATE}\n\n{diff[:6000]}"
        )


def test_every_snapshot_belongs_to_an_event() -> None:
    stale = sorted(p.name for p in SCHEMAS.glob("labelgate.*.json") if p.stem not in topics.TOPICS)
    if stale and UPDATE:
        for name in stale:
            (SCHEMAS / name).unlink()
        return
    assert not stale, f"snapshots without an event in EVENT_TYPES: {stale}. Delete them, or restore the event."


def test_the_schema_change_detector_tells_breaking_from_additive() -> None:
    old: dict[str, Any] = {"properties": {"a": {"type": "string"}, "b": {"type": "integer"}}, "required": ["a"]}
    additive: dict[str, Any] = {"properties": {**old["properties"], "c": {"type": "string"}}, "required": ["a"]}
    breaking: dict[str, Any] = {
        "properties": {"a": {"type": "integer"}, "c": {"type": "string"}}, "required": ["a", "c"],
    }

    assert breaking_changes(old, additive) == []
    assert breaking_changes(old, breaking) == [".b removed", ".a: type changed", ".c newly required"]
