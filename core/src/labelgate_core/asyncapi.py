"""The AsyncAPI 3.0 description of Labelgate's topics, generated from the event models (``docs/asyncapi.yaml``).

Every topic is a channel, and so is its dead-letter topic; every event class is a message whose payload is its
JSON Schema (what a reader accepts), with the Kafka key and the headers the producers set. Regenerate with
``python -m labelgate_core.asyncapi --output docs/asyncapi.yaml``."""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from pydantic.json_schema import models_json_schema

from .events import EVENT_TYPES, Event
from .settings import CoreSettings
from .topics import DLQ_SUFFIX, dlq_topic, headers_for

ASYNCAPI_VERSION = "3.0.0"
KAFKA_BINDING_VERSION = "0.5.0"
DEAD_LETTER = "DeadLetter"
EVENT_HEADERS = "EventHeaders"
DEAD_LETTER_HEADERS = "DeadLetterHeaders"

# What each event means, for the events whose class has no docstring of its own.
SUMMARIES: dict[str, str] = {
    "item.submitted": "An item was submitted for labeling, with its task and the project's routing policy.",
    "label.scored": "A model proposed labels for an item and scored its confidence.",
    "decision.made": "The router decided: auto-accept the proposal, or send the item to human review, and why.",
    "review.submitted": "A reviewer confirmed or corrected the AI's labels of an item.",
    "label.finalized": "An item's final labels: auto-accepted, or from a human review.",
}

# The envelope every event carries (events.Event); its fields have no descriptions in the model itself.
ENVELOPE: dict[str, str] = {
    "event_id": "UUIDv7 of the event; stable across retries and redeliveries, so readers de-duplicate by it.",
    "event_type": "The event's name, the same on every message of the topic.",
    "schema_version": "Minor version of the event's schema: additive changes only within one topic version.",
    "occurred_at": "When the event happened (UTC, ISO 8601).",
    "producer": "The service that produced the event.",
    "project_id": "The project the item belongs to.",
    "item_id": "The item the event is about; also the Kafka key, so that one item's events stay in order.",
    "causation_id": "event_id of the event that caused this one, if any.",
    "trace_id": "Shared by every event of one item's journey through the pipeline.",
}

# The headers topics.headers_for sets on every event, in its order.
EVENT_HEADER_DOCS: dict[str, str] = {
    "event_type": "The payload's event_type.",
    "schema_version": "The payload's schema_version, in decimal.",
    "event_id": "The payload's event_id.",
    "trace_id": "The payload's trace_id.",
}

# The headers consumer.EventConsumer adds when it dead-letters a record (besides the record's own headers).
DEAD_LETTER_HEADER_DOCS: dict[str, tuple[str, bool]] = {
    "dlq.original_topic": ("The topic the record was read from.", False),
    "dlq.partition": ("Its partition there, in decimal.", True),
    "dlq.offset": ("Its offset in that partition, in decimal.", True),
    "dlq.error": ("Why it was dead-lettered: the exception's type and message (at most 2,000 characters).", False),
    "dlq.attempts": ("How many times its handler ran (1 for a record that could not be read), in decimal.", True),
    "dlq.group": ("The consumer group that gave up on it.", False),
}

DESCRIPTION = """\
Labelgate's services talk only through these topics. One topic per event type, named
`labelgate.<entity>.<event>.v<major>`, and beside each a dead-letter topic `<topic>.dlq`.

Every message is one event, encoded as JSON, with one envelope (event_id, event_type, schema_version,
occurred_at, producer, project_id, item_id, causation_id, trace_id). The key is the item id, so that one
item's events stay in order (events about a whole project use the project id, which is also their item_id).
Readers ignore fields they do not know: a new field is an additive change within a topic version; a field
removed, renamed, retyped or newly required is a breaking change, and makes a new `v<major+1>` topic.

The services create missing topics with the partitions, replication factor and min.insync.replicas they are
configured with (LABELGATE_KAFKA_TOPIC_PARTITIONS, _REPLICATION_FACTOR, _MIN_INSYNC_REPLICAS); the bindings
below show the defaults. Producers write with acks=all and idempotence.

Delivery is at least once; effects are exactly once: a reader records the event_id it handled in the same
transaction as its effect. A record that cannot be read, or whose handler fails on every attempt (or at once
with a permanent error), goes to the topic's dead-letter topic unchanged, with headers saying where it came
from and why."""


def _schemas() -> tuple[dict[type[Event], str], dict[str, Any]]:
    """The JSON Schema of every event and of what they contain, as AsyncAPI components."""
    refs, top = models_json_schema(
        [(event_type, "validation") for event_type in EVENT_TYPES],
        ref_template="#/components/schemas/{model}",
        by_alias=True,
    )
    schemas: dict[str, Any] = dict(top.get("$defs", {}))
    names = {event_type: refs[(event_type, "validation")]["$ref"].rsplit("/", 1)[-1] for event_type in EVENT_TYPES}
    for name in names.values():
        properties = schemas[name].get("properties", {})
        for field, doc in ENVELOPE.items():
            if field in properties and "description" not in properties[field]:
                properties[field] = {**properties[field], "description": doc}
    return names, schemas


def _probe(cls: type[Event], *, item_id: str, project_id: str) -> Event:
    """An instance with only the envelope set (unvalidated): enough to ask for its key and headers."""
    name = cls.model_fields["event_type"].default
    return cls.model_construct(event_type=name, producer="asyncapi", project_id=project_id, item_id=item_id)


def _key_field(event_type: type[Event]) -> str:
    """The envelope field an event class uses as its Kafka key."""
    probe = _probe(event_type, item_id="\x00item", project_id="\x00project")
    return {"\x00item": "item_id", "\x00project": "project_id"}[probe.key]


def _summary(event_type: type[Event]) -> str:
    doc = event_type.__dict__.get("__doc__") or ""
    if doc.strip():
        return " ".join(doc.split())
    default = event_type.model_fields["event_type"].default
    return SUMMARIES.get(default, f"The {default} event.")


def _channel_id(event_name: str) -> str:
    head, *rest = re.split(r"[._-]", event_name)
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _header_schemas() -> dict[str, Any]:
    names = [name for name, _ in headers_for(_probe(EVENT_TYPES[0], item_id="i", project_id="p"))]
    if set(names) != set(EVENT_HEADER_DOCS):
        raise RuntimeError(f"topics.headers_for sets {names}; describe each in asyncapi.EVENT_HEADER_DOCS")
    event_headers = {
        "type": "object",
        "description": "Kafka record headers (UTF-8 strings) that producers set on every event.",
        "properties": {name: {"type": "string", "description": EVENT_HEADER_DOCS[name]} for name in names},
        "required": names,
    }
    dead_properties: dict[str, Any] = {
        name: {"type": "string", "description": f"Copied from the original record: {EVENT_HEADER_DOCS[name]}"}
        for name in names
    }
    for name, (doc, decimal) in DEAD_LETTER_HEADER_DOCS.items():
        dead_properties[name] = {"type": "string", "description": doc, **({"pattern": "^[0-9]+$"} if decimal else {})}
    dead_headers = {
        "type": "object",
        "description": (
            "The original record's headers, unchanged, followed by the dlq.* headers. A record that was not an "
            "event may lack the event headers."
        ),
        "properties": dead_properties,
        "required": list(DEAD_LETTER_HEADER_DOCS),
    }
    return {EVENT_HEADERS: event_headers, DEAD_LETTER_HEADERS: dead_headers}


def build() -> dict[str, Any]:
    """The AsyncAPI document, as plain data."""
    fields = CoreSettings.model_fields
    partitions = fields["kafka_topic_partitions"].default
    replicas = fields["kafka_replication_factor"].default
    names, schemas = _schemas()
    schemas.update(_header_schemas())

    channels: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for event_type in EVENT_TYPES:
        name = names[event_type]
        event_name = event_type.model_fields["event_type"].default
        key_field = _key_field(event_type)
        messages[name] = {
            "name": event_name,
            "title": name,
            "summary": _summary(event_type),
            "contentType": "application/json",
            "correlationId": {
                "description": "Every event of one item's journey shares its trace_id.",
                "location": "$message.header#/trace_id",
            },
            "headers": {"$ref": f"#/components/schemas/{EVENT_HEADERS}"},
            "payload": {"$ref": f"#/components/schemas/{name}"},
            "bindings": {
                "kafka": {
                    "key": {"type": "string", "description": f"The event's {key_field}."},
                    "bindingVersion": KAFKA_BINDING_VERSION,
                }
            },
        }
        channel_id = _channel_id(event_name)
        topic_binding = {
            "partitions": partitions,
            "replicas": replicas,
            "topicConfiguration": {"cleanup.policy": ["delete"]},
            "bindingVersion": KAFKA_BINDING_VERSION,
        }
        channels[channel_id] = {
            "address": event_type.topic,
            "title": event_type.topic,
            "description": f"{_summary(event_type)} Key: {key_field}.",
            "messages": {name: {"$ref": f"#/components/messages/{name}"}},
            "bindings": {"kafka": {"topic": event_type.topic, **topic_binding}},
        }
        channels[channel_id + "DeadLetters"] = {
            "address": dlq_topic(event_type.topic),
            "title": dlq_topic(event_type.topic),
            "description": (
                f"Records of {event_type.topic} that could not be processed, with the key, value and headers they "
                "had, and dlq.* headers saying where they came from and why."
            ),
            "messages": {DEAD_LETTER: {"$ref": f"#/components/messages/{DEAD_LETTER}"}},
            "bindings": {"kafka": {"topic": dlq_topic(event_type.topic), **topic_binding}},
        }

    messages[DEAD_LETTER] = {
        "name": "dead-letter",
        "title": DEAD_LETTER,
        "summary": f"A record that could not be processed, as it was read from the topic without {DLQ_SUFFIX}.",
        "description": (
            "Key and value are the original record's, byte for byte. The value is usually that topic's event, "
            "but may be anything: a record that could not be read as an event is dead-lettered too."
        ),
        "headers": {"$ref": f"#/components/schemas/{DEAD_LETTER_HEADERS}"},
        "payload": {"description": "The original record's value, unchanged."},
        "bindings": {
            "kafka": {
                "key": {"type": "string", "description": "The original record's key."},
                "bindingVersion": KAFKA_BINDING_VERSION,
            }
        },
    }

    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "Labelgate events",
            "version": metadata.version("labelgate-core"),
            "description": DESCRIPTION,
            "license": {"name": "Apache-2.0"},
        },
        "defaultContentType": "application/json",
        "servers": {
            "kafka": {
                "host": fields["kafka_bootstrap_servers"].default,
                "protocol": "kafka",
                "description": (
                    "Any Apache Kafka cluster (KRaft, 3.x or 4.x); the services find it through "
                    "LABELGATE_KAFKA_BOOTSTRAP_SERVERS."
                ),
            }
        },
        "channels": channels,
        "components": {"schemas": dict(sorted(schemas.items())), "messages": messages},
    }


# -- YAML ------------------------------------------------------------------------------------------------------
# A small emitter for plain data (dicts, lists, strings, numbers, booleans, None), so that the core needs no
# YAML library: block style, keys in insertion order, strings quoted (JSON style) unless plainly safe.

_PLAIN = re.compile(r"[A-Za-z_$/][A-Za-z0-9_$./ ()<>'+-]*")
_RESERVED = frozenset({"y", "n", "yes", "no", "on", "off", "true", "false", "null", "~"})
_LINE_BREAKS = {"\u0085": "\\N", "\u2028": "\\L", "\u2029": "\\P", "\ufeff": "\\ufeff"}


def _scalar(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _float(value)
    if not isinstance(value, str):
        raise TypeError(f"cannot write {type(value).__name__} as YAML")
    if _PLAIN.fullmatch(value) and not value.endswith(" ") and value.lower() not in _RESERVED:
        return value
    quoted = json.dumps(value, ensure_ascii=False)
    for char, escape in _LINE_BREAKS.items():
        quoted = quoted.replace(char, escape)
    return quoted


def _float(value: float) -> str:
    if math.isnan(value):
        return ".nan"
    if math.isinf(value):
        return ".inf" if value > 0 else "-.inf"
    text = repr(value)
    mantissa, _, exponent = text.partition("e")
    if "." not in mantissa:  # YAML 1.1 readers take 1e-05 for a string
        mantissa += ".0"
    return f"{mantissa}e{exponent}" if exponent else mantissa


def _block_text(value: str, indent: int) -> list[str] | None:
    """A multi-line string as a literal block (``|-``), when it can be one exactly."""
    lines = value.split("\n")
    if (
        len(lines) < 2
        or value.endswith("\n")
        or lines[0].startswith((" ", "\t"))
        or any(line != line.rstrip() or any(c in line for c in "\r\t" + "".join(_LINE_BREAKS)) for line in lines)
    ):
        return None
    pad = " " * indent
    return ["|-", *[(pad + line) if line else "" for line in lines]]


def _lines(value: object, indent: int) -> list[str]:
    """``value`` (a non-empty dict or list) as block lines, each starting with ``indent`` spaces."""
    pad = " " * indent
    out: list[str] = []
    if isinstance(value, Mapping):
        for key, item in value.items():
            out.extend(_entry(f"{pad}{_scalar(str(key))}:", item, indent))
        return out
    if isinstance(value, Sequence) and not isinstance(value, str):
        for item in value:
            if _nested(item):
                inner = _lines(item, indent + 2)
                out.append(f"{pad}- {inner[0].lstrip()}")
                out.extend(inner[1:])
            else:
                out.extend(_entry(f"{pad}-", item, indent))
        return out
    raise TypeError(f"expected a mapping or a sequence, got {type(value).__name__}")


def _nested(value: object) -> bool:
    return isinstance(value, Mapping | list | tuple) and len(value) > 0


def _entry(head: str, value: object, indent: int) -> list[str]:
    if _nested(value):
        return [head, *_lines(value, indent + 2)]
    if isinstance(value, Mapping):
        return [f"{head} {{}}"]
    if isinstance(value, list | tuple):
        return [f"{head} []"]
    if isinstance(value, str):
        block = _block_text(value, indent + 2)
        if block is not None:
            return [f"{head} {block[0]}", *block[1:]]
    return [f"{head} {_scalar(value)}"]


def to_yaml(value: Mapping[str, Any]) -> str:
    return "\n".join(_lines(value, 0)) + "\n"


def render() -> str:
    """``docs/asyncapi.yaml``'s text."""
    header = "# Generated from the event models by labelgate_core.asyncapi; do not edit by hand.\n"
    return header + to_yaml(build())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m labelgate_core.asyncapi", description=__doc__)
    parser.add_argument("--output", type=Path, help="write here instead of to standard output")
    args = parser.parse_args(argv)
    text = render()
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
