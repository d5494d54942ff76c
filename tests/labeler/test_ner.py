"""The local entity model (a CRF) learns entity types from reviewed spans and says how sure it is."""

from __future__ import annotations

import pytest

from labelgate_core.events import Span, TaskType
from labelgate_labeler.ner import (
    EntityTrainingError,
    bio_tags,
    entity_trainable,
    spans_from_tags,
    tokenize,
    train_entities,
)

from .ner_data import entity_set

pytestmark = pytest.mark.unit


def test_bio_tags_and_spans_round_trip_on_character_offsets() -> None:
    text = "Alice Smith flew to Paris."
    spans = (Span(start=0, end=11, label="PER", text="Alice Smith"), Span(start=20, end=25, label="LOC"))
    tokens = tokenize(text)

    tags = bio_tags(tokens, spans)

    assert tags == ["B-PER", "I-PER", "O", "O", "B-LOC", "O"]
    assert [(s.start, s.end, s.label, s.text) for s, _ in spans_from_tags(text, tokens, tags)] == [
        (0, 11, "PER", "Alice Smith"),
        (20, 25, "LOC", "Paris"),
    ]


def test_the_crf_learns_a_toy_entity_set_and_finds_unseen_names() -> None:
    texts, spans = entity_set(60)
    model = train_entities(texts, spans, label_space=("PER", "LOC"))

    text = "Zoe Martin flew to Dublin yesterday."
    prediction = model.predict(text, ("PER", "LOC"))

    assert [(s.text, s.label) for s in prediction.spans] == [("Zoe Martin", "PER"), ("Dublin", "LOC")]
    assert all(text[s.start : s.end] == s.text for s in prediction.spans)
    assert prediction.labels == ("PER", "LOC")
    assert model.task is TaskType.entities
    assert model.trained_on == 60
    assert model.holdout_accuracy is not None
    assert model.holdout_accuracy > 0.8


def test_every_span_and_the_item_carry_a_confidence_that_is_lower_where_the_model_is_unsure() -> None:
    texts, spans = entity_set(60)
    model = train_entities(texts, spans)

    familiar = model.predict("Alice Smith lives in Rome now")
    odd = model.predict("zzz qqq xx in Rome frob Alice")

    for prediction in (familiar, odd):
        assert 0.0 <= prediction.confidence <= 1.0
        for span in prediction.spans:
            assert span.confidence is not None
            assert 0.0 <= span.confidence <= 1.0
            # The whole sequence cannot be likelier than its least certain span.
            assert prediction.confidence <= span.confidence + 1e-9
    assert familiar.confidence > 0.9
    assert odd.confidence < familiar.confidence


def test_a_text_without_entities_gets_no_span_and_the_chance_there_is_none() -> None:
    texts, spans = entity_set(60)
    model = train_entities(texts, spans)

    prediction = model.predict("please reset my password")

    assert prediction.spans == ()
    assert prediction.confidence > 0.9


def test_spans_of_types_the_task_no_longer_has_are_dropped() -> None:
    texts, spans = entity_set(60)
    model = train_entities(texts, spans)

    prediction = model.predict("Alice Smith flew to Paris yesterday.", ("LOC",))

    assert [s.label for s in prediction.spans] == ["LOC"]


def test_cold_start_needs_enough_items_and_at_least_one_entity() -> None:
    texts, spans = entity_set(30)
    assert entity_trainable(spans, 20)
    assert not entity_trainable(spans[:10], 20)
    assert not entity_trainable([()] * 30, 20)
    with pytest.raises(EntityTrainingError):
        train_entities(texts, [()] * len(texts))
