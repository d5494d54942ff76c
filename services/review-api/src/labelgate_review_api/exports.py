"""Training-data exports of a project's final labels, streamed in the formats training code reads: our own JSON
lines, Hugging Face datasets-style JSON lines, OpenAI chat fine-tuning JSON lines, CoNLL (entities) and COCO
(boxes).

The converters are pure functions over one final label; ``open_training_export`` streams them over the store
in batches, so an export never holds the whole project. The training formats (all but ``jsonl``) leave
gold items out. Every export carries the project's data owner and
licence: JSON-lines formats as the fields ``data_owner`` and ``license`` on every line (a line read on its own
keeps its provenance, and loaders that expect one record per line still work), CoNLL as ``#`` comment lines
at the top, COCO in its ``info`` and ``licenses`` sections."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from labelgate_core.answers import answer_json
from labelgate_core.events import Box, ImageRef, Span, TaskSpec, TaskType
from labelgate_core.store.port import Doc, Store

from .documents import export_line, task_spec
from .errors import ApiError
from .repository import ReviewRepository, stream_finals


class ExportFormat(StrEnum):
    jsonl = "jsonl"
    """Labelgate's own lines: the final label with its source, guideline version and metadata."""
    hf = "hf"
    """Hugging Face datasets-style JSON lines: ``text`` and ``label``/``labels`` (+ ``spans``/``boxes``)."""
    openai = "openai"
    """OpenAI chat fine-tuning JSON lines: system = the guidelines, user = the item, assistant = the label."""
    conll = "conll"
    """Entities: one ``token<TAB>BIO-tag`` line per token, a blank line between items."""
    coco = "coco"
    """Boxes: one COCO JSON document (images, annotations, categories)."""


_ALL = frozenset(TaskType)
FORMAT_TASKS: Mapping[ExportFormat, frozenset[TaskType]] = {
    ExportFormat.jsonl: _ALL,
    ExportFormat.hf: _ALL,
    ExportFormat.openai: frozenset({TaskType.classification, TaskType.multi_label, TaskType.entities}),
    ExportFormat.conll: frozenset({TaskType.entities}),
    ExportFormat.coco: frozenset({TaskType.boxes}),
}
MEDIA_TYPES: Mapping[ExportFormat, str] = {
    ExportFormat.jsonl: "application/x-ndjson",
    ExportFormat.hf: "application/x-ndjson",
    ExportFormat.openai: "application/x-ndjson",
    ExportFormat.conll: "text/plain; charset=utf-8",
    ExportFormat.coco: "application/json",
}
FILE_SUFFIXES: Mapping[ExportFormat, str] = {
    ExportFormat.jsonl: ".jsonl",
    ExportFormat.hf: ".hf.jsonl",
    ExportFormat.openai: ".openai.jsonl",
    ExportFormat.conll: ".conll",
    ExportFormat.coco: ".coco.json",
}


class UnsupportedExportFormatError(ApiError):
    status_code = 400
    code = "unsupported_export_format"

    def __init__(self, export_format: ExportFormat, task: TaskType) -> None:
        fitting = [f.value for f, tasks in FORMAT_TASKS.items() if task in tasks]
        super().__init__(
            f"format '{export_format.value}' does not fit a project of task type '{task.value}'"
            f" (this project exports as: {', '.join(fitting)})",
            details={"format": export_format.value, "task_type": task.value, "formats": fitting},
        )


@dataclass(frozen=True, slots=True)
class Provenance:
    """Who owns the data and under which licence it may be used: carried by every export."""

    data_owner: str | None = None
    license: str | None = None

    def fields(self) -> dict[str, str | None]:
        return {"data_owner": self.data_owner, "license": self.license}


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


# -- pure converters -----------------------------------------------------------------------------------------

_TOKEN = re.compile(r"\w+|[^\w\s]")


@dataclass(frozen=True, slots=True)
class Token:
    text: str
    start: int
    end: int


def tokenize(text: str) -> list[Token]:
    """Words (runs of letters, digits, ``_``) and single punctuation marks, with their character offsets."""
    return [Token(m.group(), m.start(), m.end()) for m in _TOKEN.finditer(text)]


def bio_tags(tokens: Sequence[Token], spans: Iterable[Span]) -> list[str]:
    """One BIO tag per token: ``B-<label>`` on the first token a span touches, ``I-<label>`` on the following
    ones, ``O`` elsewhere. A token touches a span when their characters overlap. BIO cannot nest, so where
    spans overlap the one that starts first (the longer one on a tie) keeps the tokens."""
    owner: list[int | None] = [None] * len(tokens)
    ordered = sorted(spans, key=lambda s: (s.start, -(s.end - s.start), s.label))
    for number, span in enumerate(ordered):
        touched = [i for i, t in enumerate(tokens) if t.start < span.end and t.end > span.start]
        if touched and all(owner[i] is None for i in touched):
            for i in touched:
                owner[i] = number
    tags: list[str] = []
    for i, owned_by in enumerate(owner):
        if owned_by is None:
            tags.append("O")
        else:
            first = i == 0 or owner[i - 1] != owned_by
            tags.append(("B-" if first else "I-") + ordered[owned_by].label)
    return tags


def conll_block(text: str, spans: Iterable[Span], *, item_id: str | None = None) -> str:
    """One item in CoNLL form: an optional ``# item_id = …`` comment, then ``token<TAB>tag`` lines, then the
    blank line that separates items."""
    tokens = tokenize(text)
    lines = [f"# item_id = {item_id}"] if item_id is not None else []
    lines.extend(f"{token.text}\t{tag}" for token, tag in zip(tokens, bio_tags(tokens, spans), strict=True))
    return "\n".join(lines) + "\n\n"


def conll_header(project_id: str, provenance: Provenance) -> str:
    lines = [f"# project = {project_id}"]
    lines.append(f"# data_owner = {_one_line(provenance.data_owner)}")
    lines.append(f"# license = {_one_line(provenance.license)}")
    return "\n".join(lines) + "\n\n"


def _one_line(value: str | None) -> str:
    return "" if value is None else " ".join(value.split())


def _span_out(span: Span) -> dict[str, Any]:
    return {"start": span.start, "end": span.end, "label": span.label, "text": span.text}


def _box_out(box: Box) -> dict[str, Any]:
    return {"label": box.label, "bbox": [box.x, box.y, box.width, box.height]}


def _image_out(image: ImageRef | None) -> dict[str, Any] | None:
    if image is None:
        return None
    return image.model_dump(mode="json", exclude_none=True)


def hf_record(
    final: Mapping[str, Any],
    task: TaskType,
    provenance: Provenance,
    *,
    spans: Sequence[Span] = (),
    boxes: Sequence[Box] = (),
    image: ImageRef | None = None,
) -> dict[str, Any]:
    """A Hugging Face datasets-style row: ``id``, ``text`` and ``label`` (single-label) or ``labels``; entities
    add ``spans`` ({start, end, label, text}); boxes add ``image`` and ``boxes`` ({label, bbox [x, y, w, h]})."""
    labels = list(final["labels"])
    row: dict[str, Any] = {"id": final["item_id"], "text": final["text"]}
    if task == TaskType.classification:
        row["label"] = labels[0] if labels else None
    else:
        row["labels"] = labels
    if task == TaskType.entities:
        row["spans"] = [_span_out(span) for span in spans]
    if task == TaskType.boxes:
        row["image"] = _image_out(image)
        row["boxes"] = [_box_out(box) for box in boxes]
    return {**row, **provenance.fields()}


def system_prompt(guidelines: str, spec: TaskSpec) -> str:
    """The guidelines the label was made under; a one-line instruction naming the labels when there are none."""
    if guidelines.strip():
        return guidelines
    kind = {
        TaskType.classification: "Choose the one label that fits the text",
        TaskType.multi_label: "Choose every label that fits the text",
        TaskType.entities: "Mark the entity mentions in the text",
        TaskType.boxes: "Draw boxes around the objects",
    }[spec.type]
    return f"{kind}. Labels: {', '.join(spec.label_names)}."


def openai_record(
    final: Mapping[str, Any],
    spec: TaskSpec,
    guidelines: str,
    provenance: Provenance,
    *,
    spans: Sequence[Span] = (),
) -> dict[str, Any]:
    """An OpenAI chat fine-tuning example: system = the guidelines at the final's guideline version, user = the
    item's text, assistant = the final label as JSON (see ``answer_json``)."""
    return {
        "messages": [
            {"role": "system", "content": system_prompt(guidelines, spec)},
            {"role": "user", "content": final["text"]},
            {"role": "assistant", "content": answer_json(spec, final["labels"], spans)},
        ],
        **provenance.fields(),
    }


def coco_head(name: str, project_id: str, provenance: Provenance, *, now: datetime) -> dict[str, Any]:
    """COCO's ``info`` and ``licenses`` sections: the project, its data owner (``contributor``) and licence.
    Images refer to licence 1 when the project has a licence; ``licenses`` is empty when it has none."""
    info = {
        "description": name,
        "url": "",
        "version": "1.0",
        "year": now.year,
        "contributor": provenance.data_owner or "",
        "date_created": now.astimezone(UTC).isoformat(),
        "labelgate_project": project_id,
        **provenance.fields(),
    }
    licenses = []
    if provenance.license:
        url = provenance.license if provenance.license.startswith(("http://", "https://")) else ""
        licenses.append({"id": 1, "name": provenance.license, "url": url})
    return {"info": info, "licenses": licenses}


def coco_image(image_id: int, item_id: str, image: ImageRef | None, provenance: Provenance) -> dict[str, Any]:
    """One COCO image. Without an image reference its size is unknown (null)."""
    out: dict[str, Any] = {
        "id": image_id,
        "file_name": item_id,
        "width": image.width if image else None,
        "height": image.height if image else None,
        "labelgate_item_id": item_id,
    }
    if image is not None:
        if image.url:
            out["file_name"] = image.url.rsplit("/", 1)[-1] or item_id
            out["coco_url"] = image.url
        elif image.blob_id:
            out["file_name"] = image.blob_id
            out["labelgate_blob_id"] = image.blob_id
    if provenance.license:
        out["license"] = 1
    return out


def coco_annotation(annotation_id: int, image_id: int, category_id: int, box: Box) -> dict[str, Any]:
    return {
        "id": annotation_id,
        "image_id": image_id,
        "category_id": category_id,
        "bbox": [box.x, box.y, box.width, box.height],
        "area": box.width * box.height,
        "iscrowd": 0,
    }


def coco_categories(names: Sequence[str]) -> list[dict[str, Any]]:
    return [{"id": number, "name": name, "supercategory": ""} for number, name in enumerate(names, start=1)]


# -- reading finals ------------------------------------------------------------------------------------------


def final_spans(final: Mapping[str, Any]) -> list[Span]:
    return [Span.model_validate(span) for span in final.get("spans") or ()]


def final_boxes(final: Mapping[str, Any]) -> list[Box]:
    return [Box.model_validate(box) for box in final.get("boxes") or ()]


def _image(doc: Mapping[str, Any] | None) -> ImageRef | None:
    raw = doc.get("image") if doc else None
    return ImageRef.model_validate(raw) if raw else None


@dataclass(frozen=True, slots=True)
class TrainingExport:
    media_type: str
    filename: str
    body: AsyncIterator[bytes]


def check_format(export_format: ExportFormat, task: TaskType) -> None:
    if task not in FORMAT_TASKS[export_format]:
        raise UnsupportedExportFormatError(export_format, task)


def provenance_of(project: Mapping[str, Any]) -> Provenance:
    return Provenance(data_owner=project.get("data_owner"), license=project.get("license"))


def open_training_export(store: Store, project: Doc, export_format: ExportFormat, *, batch_size: int) -> TrainingExport:
    """The export of ``project`` (already checked for access) in ``export_format``, read lazily as the caller
    iterates its body; ``UnsupportedExportFormatError`` when the format does not fit the project's task."""
    spec = task_spec(project)
    check_format(export_format, spec.type)
    writer = _Writer(store, project, spec, batch_size)
    bodies = {
        ExportFormat.jsonl: writer.jsonl,
        ExportFormat.hf: writer.hf,
        ExportFormat.openai: writer.openai,
        ExportFormat.conll: writer.conll,
        ExportFormat.coco: writer.coco,
    }
    return TrainingExport(
        media_type=MEDIA_TYPES[export_format],
        filename=f"{project['_id']}{FILE_SUFFIXES[export_format]}",
        body=_chunked(bodies[export_format]()),
    )


async def _chunked(parts: AsyncIterator[str], size: int = 64 * 1024) -> AsyncIterator[bytes]:
    """Join small pieces into chunks of about ``size`` characters: fewer, larger writes to the socket."""
    buffer: list[str] = []
    length = 0
    async for part in parts:
        buffer.append(part)
        length += len(part)
        if length >= size:
            yield "".join(buffer).encode()
            buffer, length = [], 0
    if buffer:
        yield "".join(buffer).encode()


class _Writer:
    def __init__(self, store: Store, project: Doc, spec: TaskSpec, batch_size: int) -> None:
        self.store = store
        self.project = project
        self.project_id: str = project["_id"]
        self.spec = spec
        self.batch_size = batch_size
        self.provenance = provenance_of(project)
        self._guidelines: dict[int, str] = {}

    async def _finals(self) -> AsyncIterator[Doc]:
        """The finals that may become training data: gold items' answers stay out, since they score reviewers
        and the model, and a model trained on them would be scored on what it was taught."""
        async for final in stream_finals(self.store, self.project_id, batch_size=self.batch_size):
            if not final.get("gold"):
                yield final

    async def jsonl(self) -> AsyncIterator[str]:
        """Every final, gold included (the line's ``gold`` field says which): Labelgate's own record."""
        fields = self.provenance.fields()
        async for final in stream_finals(self.store, self.project_id, batch_size=self.batch_size):
            yield export_line({**final, **fields}).model_dump_json() + "\n"

    async def hf(self) -> AsyncIterator[str]:
        async for batch in self._batches():
            images = await self._images(batch) if self.spec.type == TaskType.boxes else {}
            for final in batch:
                row = hf_record(
                    final,
                    self.spec.type,
                    self.provenance,
                    spans=final_spans(final),
                    boxes=final_boxes(final),
                    image=images.get(final["item_id"]),
                )
                yield _dumps(row) + "\n"

    async def openai(self) -> AsyncIterator[str]:
        async for final in self._finals():
            guidelines = await self._guidelines_at(int(final["guideline_version"]))
            row = openai_record(final, self.spec, guidelines, self.provenance, spans=final_spans(final))
            yield _dumps(row) + "\n"

    async def conll(self) -> AsyncIterator[str]:
        yield conll_header(self.project_id, self.provenance)
        async for final in self._finals():
            yield conll_block(final["text"], final_spans(final), item_id=final["item_id"])

    async def coco(self) -> AsyncIterator[str]:
        """Two passes over the finals: images first, then their boxes. Only the images of the first pass get
        annotations, so a label finalized in between cannot refer to an image the document lacks."""
        head = coco_head(
            self.project.get("name", self.project_id), self.project_id, self.provenance, now=datetime.now(UTC)
        )
        yield "{" + _dumps("info") + ":" + _dumps(head["info"]) + ","
        yield _dumps("licenses") + ":" + _dumps(head["licenses"]) + ","
        yield _dumps("images") + ":["
        image_ids: dict[str, int] = {}
        async for batch in self._batches():
            images = await self._images(batch)
            for final in batch:
                image_id = len(image_ids) + 1
                image_ids[final["item_id"]] = image_id
                separator = "," if image_id > 1 else ""
                yield separator + _dumps(
                    coco_image(image_id, final["item_id"], images.get(final["item_id"]), self.provenance)
                )
        yield "]," + _dumps("annotations") + ":["
        categories = {name: number for number, name in enumerate(self.spec.label_names, start=1)}
        annotation_id = 0
        async for final in self._finals():
            known = image_ids.get(final["item_id"])
            if known is None:
                continue
            for box in final_boxes(final):
                category = categories.setdefault(box.label, len(categories) + 1)
                annotation_id += 1
                separator = "," if annotation_id > 1 else ""
                yield separator + _dumps(coco_annotation(annotation_id, known, category, box))
        yield "]," + _dumps("categories") + ":" + _dumps(coco_categories(list(categories))) + "}\n"

    async def _batches(self) -> AsyncIterator[list[Doc]]:
        batch: list[Doc] = []
        async for final in self._finals():
            batch.append(final)
            if len(batch) >= self.batch_size:
                yield batch
                batch = []
        if batch:
            yield batch

    async def _images(self, finals: Sequence[Doc]) -> dict[str, ImageRef]:
        """The image of each final: on the final itself, or else on its item (one query for the batch)."""
        found = {final["item_id"]: image for final in finals if (image := _image(final)) is not None}
        missing = [final["item_id"] for final in finals if final["item_id"] not in found]
        if missing:
            items = await ReviewRepository(self.store).items_by_ids(self.project_id, missing)
            for item_id, item in items.items():
                image = _image(item)
                if image is not None:
                    found[item_id] = image
        return found

    async def _guidelines_at(self, version: int) -> str:
        if version not in self._guidelines:
            doc = await ReviewRepository(self.store).get_guideline_version(self.project_id, version)
            self._guidelines[version] = str(doc["text"]) if doc else ""
        return self._guidelines[version]
