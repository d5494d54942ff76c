"""What the clients of the cluster do: post a synthetic two-class corpus, and reviewers who work the queue with the
corpus's gold labels, riding out a review API that vanishes and comes back."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TypeVar

import httpx

from labelgate_client import LabelgateAPIError, LabelgateClient

SPAM = "cheap pills winner prize free offer click unsubscribe lottery cash bonus urgent"
HAM = "meeting agenda notes project review schedule lunch team report draft budget quarter"
FILLER = "the a to and of for you your this that with on is"
LABELS = ("spam", "ham")
T = TypeVar("T")
LEASE_S = 8
"""Short, so that a lease granted just before the review API died, whose answer never came, frees itself soon."""
PATIENCE_S = 180.0
"""Longest wait for the cluster to answer again, or to finish the work it has."""


@dataclass(frozen=True)
class GoldItem:
    key: str
    text: str
    label: str


def corpus(n: int, *, seed: int, prefix: str) -> list[GoldItem]:
    """``n`` items, 40% spam: separable enough that the local model learns them from a few dozen reviews."""
    rng = random.Random(seed)
    spam, ham, filler = SPAM.split(), HAM.split(), FILLER.split()
    items = []
    for i in range(n):
        label = "spam" if rng.random() < 0.4 else "ham"
        own, other = (spam, ham) if label == "spam" else (ham, spam)
        words = rng.choices(own, k=6) + rng.choices(filler, k=5) + rng.choices(other, k=rng.choice([0, 0, 1]))
        rng.shuffle(words)
        items.append(GoldItem(f"{prefix}-{i}", " ".join(words), label))
    return items


@dataclass
class Project:
    """One test's project: what was posted, and what the reviewers did."""

    id: str
    gold: dict[str, str] = field(default_factory=dict)
    """Item id → gold label."""
    reviews: dict[str, str] = field(default_factory=dict)
    """Review id → item id, for every review whose answer a reviewer got."""
    transport_errors: int = 0
    server_errors: int = 0


async def create_project(
    client: LabelgateClient, project_id: str, *, threshold: float = 0.8, audit_rate: float = 0.05
) -> Project:
    await client.create_project(
        project_id, name=project_id, labels=list(LABELS), threshold=threshold, audit_rate=audit_rate
    )
    return Project(project_id)


async def submit(client: LabelgateClient, project: Project, items: Sequence[GoldItem], *, batch: int = 250) -> None:
    """Post ``items`` in batches, each retried until answered (its idempotency keys make retries safe)."""
    for start in range(0, len(items), batch):
        chunk = items[start : start + batch]
        body = [{"text": item.text, "idempotency_key": item.key} for item in chunk]
        result = await until_answered(partial(client.submit_items, project.id, body))
        by_key = {item.key: item for item in chunk}
        for accepted in result.items:
            project.gold[accepted.item_id] = by_key[accepted.idempotency_key].label


async def until_answered(call: Callable[[], Awaitable[T]], project: Project | None = None) -> T:
    """What a client does when the server vanishes, or answers that it could not do it now (5xx): try again
    until it answers. Every call retried this way is safe to repeat."""
    deadline = time.monotonic() + PATIENCE_S
    while True:
        try:
            return await call()
        except httpx.TransportError:
            if project is not None:
                project.transport_errors += 1
        except LabelgateAPIError as exc:
            if exc.status < 500:
                raise
            if project is not None:
                project.server_errors += 1
        if time.monotonic() > deadline:
            raise AssertionError(f"the review API did not answer within {PATIENCE_S:.0f} s")
        await asyncio.sleep(random.uniform(0.05, 0.3))


async def review_queue(
    client: LabelgateClient,
    project: Project,
    *,
    reviewers: int = 2,
    on_review: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Reviewers work the queue with the gold labels until it is empty. A reviewer who loses the connection
    retries the review it was sending (under the same lease the server answers with the review it recorded).
    A lease whose answer was lost is not retried as such (it holds the task until it expires): a lease that
    failed with a 5xx was rolled back, so asking again is safe. ``on_review`` runs as soon as a review is
    answered (the review API has just committed it)."""

    async def reviewer(name: str) -> None:
        while True:
            task = await until_answered(partial(client.lease, project.id, name, LEASE_S), project)
            if task is None:
                return
            try:
                review = await until_answered(
                    partial(
                        client.review,
                        project.id,
                        task.task_id,
                        lease_token=task.lease_token,
                        reviewer_id=name,
                        labels=[project.gold[task.item_id]],
                    ),
                    project,
                )
            except LabelgateAPIError as exc:
                if exc.status == 409:  # the lease expired meanwhile: someone else reviews the item
                    continue
                raise
            project.reviews[review.review_id] = task.item_id
            if on_review is not None:
                await on_review()

    await asyncio.gather(*(reviewer(f"{project.id}-reviewer-{i}") for i in range(reviewers)))


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout_s: float = PATIENCE_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting until {what}")
        await asyncio.sleep(0.25)


async def all_decided(client: LabelgateClient, project: Project) -> bool:
    """Every posted item has had its routing decision (it is queued for review, or final)."""
    stats = await until_answered(partial(client.stats, project.id))
    return stats.items == len(project.gold) and stats.submitted == 0


async def all_final(client: LabelgateClient, project: Project, *, reviewers: int = 2) -> bool:
    """Every posted item is final; reviewers work whatever is queued meanwhile."""
    stats = await until_answered(partial(client.stats, project.id))
    if stats.queue_depth:
        await review_queue(client, project, reviewers=reviewers)
    return stats.final == len(project.gold)
