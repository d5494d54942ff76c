"""Replay a labeled dataset through a running pipeline over its REST API, with the gold labels playing the
human reviewers, and report what the gate did: how much it auto-accepted, how much people reviewed, and how
accurate the final labels are compared with what the AI alone would have produced."""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from sklearn.metrics import cohen_kappa_score

from labelgate_client import LabelgateClient
from labelgate_client.models import Item
from labelgate_quality.calibration import expected_calibration_error

TaskName = Literal["classification", "multi_label"]
TASKS: tuple[TaskName, ...] = ("classification", "multi_label")


class DatasetError(ValueError):
    """A line of the dataset is not what ``--task`` expects."""


@dataclass(frozen=True)
class GoldItem:
    key: str
    text: str
    labels: tuple[str, ...]
    metadata: dict[str, Any]


def load_dataset(path: Path, task: str, limit: int | None = None) -> list[GoldItem]:
    """Lines ``{"text": ..., "label": ...}`` (single-label) or ``{"text": ..., "labels": [...]}``."""
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
            if task == "classification":
                label = row.get("label")
                if not isinstance(label, str) or not label:
                    raise DatasetError(f"{path}:{number}: single-label lines need a string 'label'")
                labels: tuple[str, ...] = (label,)
            else:
                raw = row.get("labels")
                if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
                    raise DatasetError(f"{path}:{number}: multi-label lines need 'labels': [strings]")
                labels = tuple(sorted(set(raw)))
            key = str(row.get("id", f"line-{number}"))
            items.append(GoldItem(key, text, labels, {"line": number}))
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

    def as_dict(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(self).items()}


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


Progress = Callable[[int, int], None]


async def replay(
    client: LabelgateClient, items: Sequence[GoldItem], options: ReplayOptions, progress: Progress | None = None
) -> ReplayReport:
    started = time.perf_counter()
    project_id = options.project_id or f"replay-{int(time.time() * 1000)}"
    label_names = sorted({label for item in items for label in item.labels})
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
    gold: dict[str, tuple[str, ...]] = {}
    done = 0
    for start in range(0, len(items), options.batch):
        chunk = items[start : start + options.batch]
        result = await client.submit_items(
            project_id,
            [{"text": it.text, "idempotency_key": it.key, "metadata": it.metadata} for it in chunk],
        )
        for accepted in result.items:
            gold[accepted.item_id] = gold_by_key[accepted.idempotency_key].labels
        await _settle(client, project_id, options.settle_timeout_s)
        await _review_queue(client, project_id, gold, options.reviewers)
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
    client: LabelgateClient, project_id: str, gold: dict[str, tuple[str, ...]], reviewers: int
) -> None:
    """Reviewers work the queue until it is empty, each answering with the gold label."""

    async def reviewer(name: str) -> None:
        while True:
            task = await client.lease(project_id, reviewer_id=name)
            if task is None:
                return
            await client.review(
                project_id, task.task_id, lease_token=task.lease_token, reviewer_id=name,
                labels=list(gold[task.item_id]),
            )

    await asyncio.gather(*(reviewer(f"replay-reviewer-{i}") for i in range(reviewers)))


async def _wait_all_final(
    client: LabelgateClient, project_id: str, gold: dict[str, tuple[str, ...]], options: ReplayOptions
) -> None:
    total = len(gold)
    deadline = time.monotonic() + options.settle_timeout_s
    while True:
        stats = await client.stats(project_id)
        if stats.final >= total:
            return
        if stats.queue_depth > 0:
            await _review_queue(client, project_id, gold, options.reviewers)
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


def _accuracy(pairs: Sequence[tuple[tuple[str, ...], tuple[str, ...]]]) -> float | None:
    if not pairs:
        return None
    return sum(set(a) == set(b) for a, b in pairs) / len(pairs)


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


async def _report(
    client: LabelgateClient,
    project_id: str,
    gold: dict[str, tuple[str, ...]],
    options: ReplayOptions,
    wall_s: float,
) -> ReplayReport:
    n = len(gold)
    auto = reviewed = audited = cold = reviews = 0
    model_version = 0
    final_pairs: list[tuple[tuple[str, ...], tuple[str, ...]]] = []
    auto_pairs: list[tuple[tuple[str, ...], tuple[str, ...]]] = []
    ai_pairs: list[tuple[tuple[str, ...], tuple[str, ...]]] = []
    proposed_pairs: list[tuple[tuple[str, ...], tuple[str, ...]]] = []
    reviewed_ai_pairs: list[tuple[tuple[str, ...], tuple[str, ...]]] = []
    raw_conf: list[float] = []
    calibrated_conf: list[float] = []
    reviewed_right: list[bool] = []
    async for item in all_items(client, project_id):
        truth = gold[item.item_id]
        decision = item.decision
        proposal = tuple(decision.proposal.labels) if decision else ()
        confidence = decision.proposal.confidence if decision else None
        reasons = set(decision.reasons) if decision else set()
        model_version = max(model_version, decision.proposal.model_version if decision else 0)
        final = tuple(item.final.labels) if item.final else ()
        final_pairs.append((final, truth))
        ai_pairs.append((proposal, truth))
        if confidence is not None:
            proposed_pairs.append((proposal, truth))
        reviews += len(item.reviews)
        if item.final and item.final.source == "auto":
            auto += 1
            auto_pairs.append((final, truth))
        else:
            reviewed += 1
            if confidence is not None:
                reviewed_ai_pairs.append((proposal, truth))
                calibrated = decision.calibrated_confidence if decision else None
                raw_conf.append(confidence)
                calibrated_conf.append(confidence if calibrated is None else calibrated)
                reviewed_right.append(set(proposal) == set(truth))
        audited += "audit" in reasons
        cold += "no_confidence" in reasons
    labels = sorted({label for truth in gold.values() for label in truth})
    return ReplayReport(
        items=n,
        auto_accepted_share=auto / n,
        reviewed_share=reviewed / n,
        audited_share=audited / n,
        cold_start_share=cold / n,
        final_accuracy=_accuracy(final_pairs) or 0.0,
        auto_accepted_accuracy=_accuracy(auto_pairs),
        ai_only_accuracy=_accuracy(ai_pairs) or 0.0,
        ai_only_accuracy_when_proposed=_accuracy(proposed_pairs),
        kappa=_kappa(reviewed_ai_pairs, options.task, labels),
        reviews=reviews,
        model_version=model_version,
        threshold=options.threshold,
        audit_rate=options.audit_rate,
        target_precision=options.target_precision,
        ece={
            "raw": expected_calibration_error(raw_conf, reviewed_right),
            "calibrated": expected_calibration_error(calibrated_conf, reviewed_right),
        },
        wall_s=round(wall_s, 3),
        items_per_s=round(n / wall_s, 2) if wall_s > 0 else 0.0,
    )
