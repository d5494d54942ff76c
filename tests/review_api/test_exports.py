"""The training-data converters on their own: CoNLL (tokens and BIO tags), COCO, Hugging Face and OpenAI rows."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from labelgate_core.events import Box, ImageRef, LabelDef, Span, TaskSpec, TaskType
from labelgate_review_api.exports import (
    ExportFormat,
    Provenance,
    UnsupportedExportFormatError,
    bio_tags,
    check_format,
    coco_annotation,
    coco_categories,
    coco_head,
    coco_image,
    conll_block,
    conll_header,
    hf_record,
    openai_record,
    tokenize,
)

pytestmark = pytest.mark.unit

OWNED = Provenance(data_owner="ACME Corp", license="CC-BY-4.0")


def span(text: str, start: int, end: int, label: str) -> Span:
    return Span(start=start, end=end, label=label, text=text[start:end])


def final(text: str, labels: list[str], **extra: Any) -> dict[str, Any]:
    return {"item_id": "i-1", "text": text, "labels": labels, "guideline_version": 1, **extra}


# -- CoNLL ---------------------------------------------------------------------------------------------------


def test_tokens_are_words_and_punctuation_with_offsets() -> None:
    tokens = tokenize("Ada Lovelace, born 1815.")

    assert [(t.text, t.start, t.end) for t in tokens] == [
        ("Ada", 0, 3),
        ("Lovelace", 4, 12),
        (",", 12, 13),
        ("born", 14, 18),
        ("1815", 19, 23),
        (".", 23, 24),
    ]


def test_a_multi_token_span_is_one_b_then_i_tags() -> None:
    text = "Ada Lovelace met Charles Babbage in London."

    block = conll_block(text, [span(text, 0, 12, "PER"), span(text, 17, 32, "PER"), span(text, 36, 42, "LOC")])

    assert block == (
        "Ada\tB-PER\nLovelace\tI-PER\nmet\tO\nCharles\tB-PER\nBabbage\tI-PER\nin\tO\nLondon\tB-LOC\n.\tO\n\n"
    )


def test_adjacent_spans_of_one_label_start_two_entities() -> None:
    text = "Paris London"
    tokens = tokenize(text)

    assert bio_tags(tokens, [span(text, 6, 12, "LOC"), span(text, 0, 5, "LOC")]) == ["B-LOC", "B-LOC"]


def test_a_span_inside_a_token_tags_the_whole_token() -> None:
    text = "unbelievable"

    assert bio_tags(tokenize(text), [span(text, 2, 6, "X")]) == ["B-X"]


def test_overlapping_spans_keep_the_first_and_longest() -> None:
    text = "New York City"
    tokens = tokenize(text)

    tags = bio_tags(tokens, [span(text, 4, 8, "STATE"), span(text, 0, 13, "CITY")])

    assert tags == ["B-CITY", "I-CITY", "I-CITY"]


def test_an_item_without_spans_is_all_outside_and_carries_its_id() -> None:
    assert conll_block("Nothing here", [], item_id="i-9") == "# item_id = i-9\nNothing\tO\nhere\tO\n\n"


def test_conll_header_names_owner_and_licence_on_one_line_each() -> None:
    header = conll_header("ner", Provenance(data_owner="ACME\nCorp", license=None))

    assert header == "# project = ner\n# data_owner = ACME Corp\n# license = \n\n"


# -- COCO ----------------------------------------------------------------------------------------------------


def test_coco_sections_carry_owner_and_licence() -> None:
    head = coco_head("Street scenes", "streets", OWNED, now=datetime(2026, 5, 1, tzinfo=UTC))

    assert head["info"]["contributor"] == "ACME Corp"
    assert head["info"]["data_owner"] == "ACME Corp"
    assert head["info"]["license"] == "CC-BY-4.0"
    assert head["info"]["year"] == 2026
    assert head["licenses"] == [{"id": 1, "name": "CC-BY-4.0", "url": ""}]


def test_coco_without_a_licence_has_no_licenses_and_images_refer_to_none() -> None:
    head = coco_head("x", "x", Provenance(), now=datetime(2026, 5, 1, tzinfo=UTC))
    image = coco_image(1, "i-1", ImageRef(url="https://img.example/a/cat.png", width=640, height=480), Provenance())

    assert head["licenses"] == []
    assert "license" not in image
    assert image == {
        "id": 1,
        "file_name": "cat.png",
        "coco_url": "https://img.example/a/cat.png",
        "width": 640,
        "height": 480,
        "labelgate_item_id": "i-1",
    }


def test_coco_image_of_an_upload_and_a_licenced_project() -> None:
    image = coco_image(3, "i-3", ImageRef(blob_id="abc123", width=10, height=20), OWNED)

    assert image["file_name"] == "abc123"
    assert image["license"] == 1
    assert (image["width"], image["height"]) == (10, 20)


def test_coco_annotation_is_x_y_width_height_with_area() -> None:
    box = Box(label="car", x=10, y=20, width=30, height=40)

    assert coco_annotation(7, 3, 2, box) == {
        "id": 7,
        "image_id": 3,
        "category_id": 2,
        "bbox": [10, 20, 30, 40],
        "area": 1200,
        "iscrowd": 0,
    }


def test_coco_categories_number_from_one() -> None:
    assert coco_categories(["car", "person"]) == [
        {"id": 1, "name": "car", "supercategory": ""},
        {"id": 2, "name": "person", "supercategory": ""},
    ]


# -- Hugging Face and OpenAI ---------------------------------------------------------------------------------


def test_hf_single_label_row_has_label_and_provenance() -> None:
    row = hf_record(final("Great match", ["sports"]), TaskType.classification, OWNED)

    assert row == {
        "id": "i-1",
        "text": "Great match",
        "label": "sports",
        "data_owner": "ACME Corp",
        "license": "CC-BY-4.0",
    }


def test_hf_multi_label_and_entity_rows() -> None:
    text = "Ada in London"
    multi = hf_record(final(text, ["a", "b"]), TaskType.multi_label, Provenance())
    entities = hf_record(final(text, ["LOC"]), TaskType.entities, Provenance(), spans=[span(text, 7, 13, "LOC")])

    assert multi["labels"] == ["a", "b"]
    assert "label" not in multi
    assert entities["spans"] == [{"start": 7, "end": 13, "label": "LOC", "text": "London"}]


def test_hf_box_row_has_the_image_and_boxes() -> None:
    row = hf_record(
        final("", ["car"]),
        TaskType.boxes,
        Provenance(),
        boxes=[Box(label="car", x=1, y=2, width=3, height=4)],
        image=ImageRef(url="https://img.example/x.png", width=8, height=9),
    )

    assert row["image"] == {"url": "https://img.example/x.png", "width": 8, "height": 9, "media_type": "image/png"}
    assert row["boxes"] == [{"label": "car", "bbox": [1, 2, 3, 4]}]


def spec(task: TaskType, *labels: str) -> TaskSpec:
    return TaskSpec(type=task, labels=tuple(LabelDef(name=label) for label in labels))


def test_openai_row_is_system_guidelines_user_item_assistant_label() -> None:
    row = openai_record(
        final("Great match", ["sports"]), spec(TaskType.classification, "sports", "tech"), "Pick the main topic.", OWNED
    )

    assert row["messages"] == [
        {"role": "system", "content": "Pick the main topic."},
        {"role": "user", "content": "Great match"},
        {"role": "assistant", "content": '{"label": "sports"}'},
    ]
    assert (row["data_owner"], row["license"]) == ("ACME Corp", "CC-BY-4.0")


def test_openai_answers_for_multi_label_and_entities() -> None:
    text = "Ada in London"
    multi = openai_record(final(text, ["a", "b"]), spec(TaskType.multi_label, "a", "b"), "", Provenance())
    entities = openai_record(
        final(text, ["LOC"]), spec(TaskType.entities, "LOC"), "", Provenance(), spans=[span(text, 7, 13, "LOC")]
    )

    # The shape the labeler asks language models for, so that a model tuned on the export answers in it.
    assert json.loads(multi["messages"][2]["content"]) == {"labels": {"a": True, "b": True}}
    assert multi["messages"][0]["content"] == "Choose every label that fits the text. Labels: a, b."
    assert json.loads(entities["messages"][2]["content"]) == {
        "entities": [{"text": "London", "start": 7, "end": 13, "type": "LOC"}]
    }


@pytest.mark.parametrize(
    ("export_format", "task"),
    [
        (ExportFormat.conll, TaskType.classification),
        (ExportFormat.coco, TaskType.entities),
        (ExportFormat.openai, TaskType.boxes),
    ],
)
def test_formats_that_do_not_fit_the_task_are_refused(export_format: ExportFormat, task: TaskType) -> None:
    with pytest.raises(UnsupportedExportFormatError) as caught:
        check_format(export_format, task)

    assert caught.value.status_code == 400
    assert f"'{export_format.value}'" in caught.value.message
    assert f"'{task.value}'" in caught.value.message
