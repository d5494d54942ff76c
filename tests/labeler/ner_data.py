"""A toy entity-extraction set: short sentences about people and cities, some with no entity at all."""

from __future__ import annotations

import random

from labelgate_core.events import LabelDef, Span, TaskSpec, TaskType

ENTITY_TASK = TaskSpec(type=TaskType.entities, labels=(LabelDef(name="PER"), LabelDef(name="LOC")))
PEOPLE = ["Alice Smith", "Bob Jones", "Carla Diaz", "Dan Brown", "Eve Stone", "Frank Moreau", "Gina Rossi"]
CITIES = ["Paris", "Berlin", "Lisbon", "Madrid", "Oslo", "Rome", "Vienna", "Prague"]
TEMPLATES = [
    "{p} flew to {c} yesterday.",
    "In {c}, {p} met the team.",
    "{p} lives in {c} now",
    "Yesterday {p} left {c} early.",
    "the parcel was late again",
    "please reset my password",
]


def sentence(rng: random.Random) -> tuple[str, tuple[Span, ...]]:
    person, city = rng.choice(PEOPLE), rng.choice(CITIES)
    template = rng.choice(TEMPLATES)
    text = template.format(p=person, c=city)
    spans: list[Span] = []
    for value, label in ((person, "PER"), (city, "LOC")):
        if "{p}" in template:
            start = text.index(value)
            spans.append(Span(start=start, end=start + len(value), label=label, text=value))
    return text, tuple(sorted(spans, key=lambda s: s.start))


def entity_set(n: int, seed: int = 0) -> tuple[list[str], list[tuple[Span, ...]]]:
    rng = random.Random(seed)
    pairs = [sentence(rng) for _ in range(n)]
    return [text for text, _ in pairs], [spans for _, spans in pairs]
