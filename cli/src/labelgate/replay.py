"""Replay a labeled dataset through a running pipeline over its REST API, with the gold labels playing the
human reviewers, and report what the gate did: how much it auto-accepted, how much people reviewed, and how
accurate the final labels are compared with what the AI alone would have produced."""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from sklearn.metrics import cohen_kappa_score

from labelgate_client import LabelgateAPIError, LabelgateClient
from labelgate_client.models import Item
from labelgate_quality.agreement import Span
from labelgate_quality.calibration import expected_calibration_error

from .baselines import ItemRecord, PriceModel, baselines, budget_curve, score_final

TaskName = Literal["classification", "multi_label", "entities"]
TASKS: tuple[TaskName, ...] = ("classification", "multi_label", "entities")


class DatasetError(ValueError):
    """A line of the dataset is not what ``--task`` expects."""


@dataclass(frozen=True)
class GoldItem:
    key: str
    text: str
    labels: tuple[str, ...]
    """Entities: the distinct types of ``spans``."""
    metadata: dict[str, Any]
    spans: tuple[Span, ...] = ()


def _spans(raw: object, text: str, where: str) -> tuple[Span, ...]:
    if not isinstance(raw, list):
        raise DatasetError(f"{where}: entity lines need 'spans': [{{start, end, label}}, ...]")
    spans: list[Span] = []
    for n, span in enumerate(raw):
        if not isinstance(span, dict):
            raise DatasetError(f"{where}: span {n} must be an object with start, end and label")
        start, end, label = span.get("start"), span.get("end"), span.get("label")
        if not (isinstance(start, int) and isinstance(end, int) and 0 <= start < end <= len(text)):
            raise DatasetError(
                f"{where}: span {n} needs integer start < end within the text (0..{len(text)}), got {start}..{end}"
            )
        if not isinstance(label, str) or not label:
            raise DatasetError(f"{where}: span {n} needs a non-empty string 'label'")
        spans.append(Span(start, end, label))
    return tuple(sorted(set(spans), key=lambda s: (s.start, s.end, s.label)))


def load_dataset(path: Path, task: str, limit: int | None = None) -> list[GoldItem]:
    """Lines ``{"text": ..., "label": ...}`` (single-label), ``{"text": ..., "labels": [...]}`` (multi-label) or
    ``{"text": ..., "spans": [{"start", "end", "label"}]}`` (entities; ``end`` exclusive). An optional ``id``
    becomes the item's idempotency key and an optional ``metadata`` object travels with the item."""
    if task not in TASKS:
        raise DatasetError(f"--task must be one of {', '.join(TASKS)}, not {task!r}")
    items: list[GoldItem] = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{path}:{number}: not valid JSON ({exc.msg})") from exc
            text = row.get("text")
            if not isinstance(text, str) or not text.strip():
                raise DatasetError(f"{path}:{number}: 'text' must be a non-empty string")
            spans: tuple[Span, ...] = ()
            if task == "classification":
                label = row.get("label")
                if not isinstance(label, str) or not label:
                    raise DatasetError(f"{path}:{number}: single-label lines need a string 'label'")
                labels: tuple[str, ...] = (label,)
            elif task == "multi_label":
                raw = row.get("labels")
                if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
                    raise DatasetError(f"{path}:{number}: multi-label lines need 'labels': [strings]")
                labels = tuple(sorted(set(raw)))
            else:
                spans = _spans(row.get("spans"), text, f"{path}:{number}")
                labels = tuple(sorted({span.label for span in spans}))
            extra = row.get("metadata", {})
            if not isinstance(extra, dict):
                raise DatasetError(f"{path}:{number}: 'metadata' must be an object")
            key = str(row.get("id", f"line-{number}"))
            items.append(GoldItem(key, text, labels, {**extra, "line": number}, spans))
            if limit is not None and len(items) >= limit:
                break
    if not items:
        raise DatasetError(f"{path}: no items")
    return items


@dataclass
class ReplayReport:
    items: int
    auto_accepted_share: float
    reviewed_share: float
    audited_share: float
    cold_start_share: float
    final_accuracy: float
    """Share of items whose final answer equals the gold one exactly (label, label set, or set of spans)."""
    auto_accepted_accuracy: float | None
    ai_only_accuracy: float
    ai_only_accuracy_when_proposed: float | None
    kappa: float | None
    reviews: int
    model_version: int
    threshold: float
    audit_rate: float
    target_precision: float | None
    ece: dict[str, float | None]
    """ECE of the raw and of the calibrated confidence (as each decision applied it) over the reviewed items
    that had one; reviewed items over-represent low confidences, so this is not the ECE of all items."""
    wall_s: float
    items_per_s: float
    task: str = "classification"
    quality: dict[str, dict[str, float | None]] = field(default_factory=dict)
    """Per task's figures (accuracy; micro/macro F1 for multi-label; span precision/recall/F1 for entities) of
    the final labels, of the auto-accepted ones, and of the AI alone (all items; and only those it scored)."""
    ece_all_proposed: dict[str, float | None] = field(default_factory=dict)
    """ECE over every item with a scored proposal, against gold: the replay knows the truth for all of them."""
    baselines: dict[str, Any] = field(default_factory=dict)
    budget_curve: dict[str, Any] = field(default_factory=dict)
    targets: dict[str, Any] = field(default_factory=dict)
    stale_decisions: int = 0
    """Auto-accepted items whose recorded decision was an earlier one: their proposal is taken from the final
    label and, with no confidence on record, they count as unscored in the budget curve's ordering."""

    def as_dict(self) -> dict[str, Any]:
        return {k: _json_safe(v) for k, v in asdict(self).items()}


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


@dataclass(frozen=True)
class ReplayOptions:
    task: TaskName = "classification"
    project_id: str | None = None
    threshold: float = 0.9
    audit_rate: float = 0.05
    target_precision: float | None = None
    batch: int = 200
    reviewers: int = 8
    settle_timeout_s: float = 600.0
    labels: tuple[str, ...] = ()
    """The project's label set (entity types for entities); by default the labels the items use."""
    price: PriceModel = field(default_factory=PriceModel)
    seeds: int = 20
    """Random draws averaged for the random-review baseline."""
    curve_steps: int = 20


Progress = Callable[[int, int], None]


async def replay(
    client: LabelgateClient, items: Sequence[GoldItem], options: ReplayOptions, progress: Progress | None = None
) -> ReplayReport:
    started = time.perf_counter()
    project_id = options.project_id or f"replay-{int(time.time() * 1000)}"
    label_names = sorted(set(options.labels) | {label for item in items for label in item.labels})
    if not label_names:
        raise DatasetError("no item has a label and no label set was given, so the project would have no labels")
    await client.create_project(
        project_id,
        name=f"Replay of {len(items)} items",
        labels=label_names,
        task_type=options.task,
        threshold=options.threshold,
        audit_rate=options.audit_rate,
        target_precision=options.target_precision,
    )
    gold_by_key = {item.key: item for item in items}
    gold: dict[str, GoldItem] = {}
    done = 0
    for start in range(0, len(items), options.batch):
        chunk = items[start : start + options.batch]
        result = await client.submit_items(
            project_id,
            [{"text": it.text, "idempotency_key": it.key, "metadata": it.metadata} for it in chunk],
        )
        for accepted in result.items:
            gold[accepted.item_id] = gold_by_key[accepted.idempotency_key]
        await _settle(client, project_id, options.settle_timeout_s)
        await _review_queue(client, project_id, gold, options)
        stats = await client.stats(project_id)
        done = stats.final
        if progress:
            progress(done, len(items))
    await _wait_all_final(client, project_id, gold, options)
    if progress:
        progress(len(items), len(items))
    return await _report(client, project_id, gold, options, time.perf_counter() - started)


async def _settle(client: LabelgateClient, project_id: str, timeout_s: float) -> None:
    """Wait until every submitted item has been decided (auto-accepted or queued for review)."""
    deadline = time.monotonic() + timeout_s
    while True:
        stats = await client.stats(project_id)
        if stats.submitted == 0:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{stats.submitted} items still undecided after {timeout_s:.0f}s")
        await asyncio.sleep(0.05)


async def _review_queue(
    client: LabelgateClient, project_id: str, gold: dict[str, GoldItem], options: ReplayOptions
) -> None:
    """Reviewers work the queue until it is empty, each answering with the gold label (and gold spans)."""

    async def reviewer(name: str) -> None:
        while True:
            task = await client.lease(project_id, reviewer_id=name)
            if task is None:
                return
            truth = gold[task.item_id]
            spans = (
                [{"start": s.start, "end": s.end, "label": s.label} for s in truth.spans]
                if options.task == "entities"
                else None
            )
            try:
                await client.review(
                    project_id, task.task_id, lease_token=task.lease_token, reviewer_id=name,
                    labels=list(truth.labels), spans=spans,
                )
            except LabelgateAPIError as exc:
                if exc.code != "task_closed":
                    raise
                # Finalized while in hand (a newer model auto-accepted it): the reviewer moves on.

    await asyncio.gather(*(reviewer(f"replay-reviewer-{i}") for i in range(options.reviewers)))


async def _wait_all_final(
    client: LabelgateClient, project_id: str, gold: dict[str, GoldItem], options: ReplayOptions
) -> None:
    total = len(gold)
    deadline = time.monotonic() + options.settle_timeout_s
    while True:
        stats = await client.stats(project_id)
        if stats.final >= total:
            return
        if stats.queue_depth > 0:
            await _review_queue(client, project_id, gold, options)
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {stats.final} of {total} items final after {options.settle_timeout_s:.0f}s")
        await asyncio.sleep(0.1)


async def all_items(client: LabelgateClient, project_id: str) -> AsyncIterator[Item]:
    """Every item of the project with its history, page by page."""
    after: str | None = None
    while True:
        page = await client.list_items(project_id, limit=1000, after=after)
        for item in page.items:
            yield item
        if not page.next_after:
            return
        after = page.next_after


def _kappa(pairs: Sequence[tuple[tuple[str, ...], tuple[str, ...]]], task: str, labels: Sequence[str]) -> float | None:
    if len(pairs) < 2:
        return None
    if task == "classification":
        ai = [a[0] if a else "" for a, _ in pairs]
        human = [h[0] for _, h in pairs]
    else:  # each (item, label) membership is one binary rating
        ai = [str(label in a) for a, _ in pairs for label in labels]
        human = [str(label in h) for _, h in pairs for label in labels]
    value = float(cohen_kappa_score(ai, human))
    return None if math.isnan(value) else value


def stale_decision(item: Item) -> bool:
    """The item was auto-accepted, but the decision it shows is an earlier one (it was queued unscored, then
    scored and accepted once a model existed, and the review API kept the first decision)."""
    auto = item.final is not None and item.final.source == "auto"
    return auto and (item.decision is None or item.decision.outcome != "auto_accepted")


def item_record(item: Item, truth: GoldItem) -> ItemRecord:
    """What the pipeline did with one item, next to its gold answer."""
    decision = item.decision
    proposal = decision.proposal if decision else None
    if stale_decision(item) and item.final is not None:
        # What was auto-accepted is the model's proposal; its confidence is not on record.
        return ItemRecord(
            gold_labels=truth.labels,
            ai_labels=tuple(item.final.labels),
            final_labels=tuple(item.final.labels),
            reviewed=False,
            gold_spans=truth.spans,
            ai_spans=tuple(Span(s.start, s.end, s.label) for s in item.final.spans),
            final_spans=tuple(Span(s.start, s.end, s.label) for s in item.final.spans),
        )
    return ItemRecord(
        gold_labels=truth.labels,
        ai_labels=tuple(proposal.labels) if proposal else (),
        final_labels=tuple(item.final.labels) if item.final else (),
        reviewed=not (item.final and item.final.source == "auto"),
        confidence=proposal.confidence if proposal else None,
        calibrated_confidence=decision.calibrated_confidence if decision else None,
        gold_spans=truth.spans,
        ai_spans=tuple(Span(s.start, s.end, s.label) for s in proposal.spans) if proposal else (),
        final_spans=tuple(Span(s.start, s.end, s.label) for s in item.final.spans) if item.final else (),
    )


def _ai_record(record: ItemRecord) -> ItemRecord:
    """The record as if the AI's proposal had become final."""
    return replace(record, final_labels=record.ai_labels, final_spans=record.ai_spans)


async def _report(
    client: LabelgateClient,
    project_id: str,
    gold: dict[str, GoldItem],
    options: ReplayOptions,
    wall_s: float,
) -> ReplayReport:
    n = len(gold)
    task = options.task
    audited = cold = reviews = stale = 0
    model_version = 0
    records: list[ItemRecord] = []
    reviewed_ai_pairs: list[tuple[tuple[str, ...], tuple[str, ...]]] = []
    raw_conf: list[float] = []
    calibrated_conf: list[float] = []
    reviewed_right: list[bool] = []
    async for item in all_items(client, project_id):
        record = item_record(item, gold[item.item_id])
        records.append(record)
        decision = item.decision
        reasons = set(decision.reasons) if decision else set()
        model_version = max(model_version, decision.proposal.model_version if decision else 0)
        reviews += len(item.reviews)
        stale += stale_decision(item)
        if record.reviewed and record.confidence is not None:
            reviewed_ai_pairs.append((record.ai_labels, record.gold_labels))
            raw_conf.append(record.confidence)
            calibrated_conf.append(_decision_confidence(record))
            reviewed_right.append(_ai_right(record, task))
        audited += "audit" in reasons
        cold += "no_confidence" in reasons
    auto = [r for r in records if not r.reviewed]
    scored = [r for r in records if r.confidence is not None]
    scored_right = [_ai_right(r, task) for r in scored]
    ai_records = [_ai_record(r) for r in records]
    quality = {
        "final": score_final(records, task),
        "auto_accepted": score_final(auto, task),
        "ai_only": score_final(ai_records, task),
        "ai_only_when_proposed": score_final([_ai_record(r) for r in scored], task),
    }
    curve = budget_curve(records, task, steps=options.curve_steps, seeds=options.seeds)
    compared = baselines(records, task, options.price, reviews, seeds=options.seeds)
    labels = sorted(set(options.labels) | {label for truth in gold.values() for label in truth.labels})
    return ReplayReport(
        items=n,
        auto_accepted_share=len(auto) / n,
        reviewed_share=(n - len(auto)) / n,
        audited_share=audited / n,
        cold_start_share=cold / n,
        final_accuracy=quality["final"]["accuracy"] or 0.0,
        auto_accepted_accuracy=quality["auto_accepted"]["accuracy"],
        ai_only_accuracy=quality["ai_only"]["accuracy"] or 0.0,
        ai_only_accuracy_when_proposed=quality["ai_only_when_proposed"]["accuracy"],
        kappa=_kappa(reviewed_ai_pairs, task, labels),
        reviews=reviews,
        model_version=model_version,
        threshold=options.threshold,
        audit_rate=options.audit_rate,
        target_precision=options.target_precision,
        ece={
            "raw": expected_calibration_error(raw_conf, reviewed_right),
            "calibrated": expected_calibration_error(calibrated_conf, reviewed_right),
        },
        ece_all_proposed={
            "items": len(scored),
            "raw": expected_calibration_error([r.confidence or 0.0 for r in scored], scored_right),
            "calibrated": expected_calibration_error([_decision_confidence(r) for r in scored], scored_right),
        },
        wall_s=round(wall_s, 3),
        items_per_s=round(n / wall_s, 2) if wall_s > 0 else 0.0,
        task=task,
        quality=quality,
        baselines=compared,
        budget_curve=curve.as_dict(),
        targets=_targets(curve.as_dict(), quality, compared, options),
        stale_decisions=stale,
    )


def _decision_confidence(record: ItemRecord) -> float:
    if record.calibrated_confidence is not None:
        return record.calibrated_confidence
    return record.confidence if record.confidence is not None else 0.0


def _ai_right(record: ItemRecord, task: str) -> bool:
    if task == "entities":
        return set(record.ai_spans) == set(record.gold_spans)
    return set(record.ai_labels) == set(record.gold_labels)


def _targets(
    curve: dict[str, Any], quality: dict[str, dict[str, float | None]], compared: dict[str, Any], options: ReplayOptions
) -> dict[str, Any]:
    """The issue's two targets, checked: above random review at every budget (on the budget curve, and at the
    gate's own budget), and auto-accepted labels at least as accurate as the target precision minus 0.02."""
    metric = curve["metric"]
    gate = compared["gate"]["quality"].get(metric)
    random = compared["random_review"]["quality"].get(metric)
    auto_accuracy = quality["auto_accepted"].get("accuracy")
    target = options.target_precision
    return {
        "metric": metric,
        "beats_random_at_every_budget": curve["beats_random_at_every_budget"],
        "beats_random_at_own_budget": None if gate is None or random is None else gate > random,
        "auto_accepted_accuracy": auto_accuracy,
        "auto_accepted_floor": None if target is None else round(target - 0.02, 4),
        "auto_accepted_meets_floor": (
            None if target is None or auto_accuracy is None else auto_accuracy >= target - 0.02
        ),
    }
