"""Topic names, the event type each carries, and the wire encoding of events."""

from __future__ import annotations

from .events import EVENT_TYPES, Event

TOPICS: dict[str, type[Event]] = {event_type.topic: event_type for event_type in EVENT_TYPES}

ITEM_SUBMITTED = "labelgate.item.submitted.v1"
LABEL_SCORED = "labelgate.label.scored.v1"
DECISION_MADE = "labelgate.decision.made.v1"
REVIEW_SUBMITTED = "labelgate.review.submitted.v1"
LABEL_FINALIZED = "labelgate.label.finalized.v1"
GUIDELINE_CHANGED = "labelgate.guideline.changed.v1"
MODEL_UPDATED = "labelgate.model.updated.v1"

DLQ_SUFFIX = ".dlq"


def dlq_topic(topic: str) -> str:
    return topic + DLQ_SUFFIX


def all_topics(*, with_dlq: bool = True) -> list[str]:
    names = list(TOPICS)
    return names + [dlq_topic(name) for name in names] if with_dlq else names


def encode(event: Event) -> bytes:
    return event.model_dump_json(by_alias=True).encode()


def decode(topic: str, value: bytes) -> Event:
    """Parse an event read from ``topic``; raises ``KeyError`` for an unknown topic and
    ``pydantic.ValidationError`` for a value that is not that topic's event."""
    return TOPICS[topic].model_validate_json(value)


def headers_for(event: Event) -> list[tuple[str, bytes]]:
    return [
        ("event_type", event.event_type.encode()),
        ("schema_version", str(event.schema_version).encode()),
        ("event_id", event.event_id.encode()),
        ("trace_id", event.trace_id.encode()),
    ]
