"""Helpers for the review API tests: a controllable clock, and the router's side of the conversation."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import httpx

from labelgate_core.bus.memory import MemoryBus
from labelgate_core.bus.port import OutgoingMessage
from labelgate_core.events import (
    DecisionMade,
    DecisionOutcome,
    Event,
    FinalSource,
    LabelFinalized,
    Proposal,
    RoutingReason,
    utcnow,
)
from labelgate_core.topics import DLQ_SUFFIX, decode, encode, headers_for

T = TypeVar("T")


class Clock:
    """Wall-clock time that a test can move forward."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def eventually(check: Callable[[], Awaitable[T]], *, timeout: float = 10.0) -> T:
    """The first truthy result of ``check``, polled until ``timeout`` (the consumers run in the background)."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result or time.monotonic() > deadline:
            assert result, "condition not met in time"
            return result
        await asyncio.sleep(0.02)


async def publish(bus: MemoryBus, *events: Event) -> None:
    await bus.publish([OutgoingMessage(e.topic, e.key, encode(e), tuple(headers_for(e))) for e in events])


async def published(bus: MemoryBus, topic: str) -> list[Event]:
    """The distinct events on ``topic`` so far, read by a throwaway consumer group. Delivery is at least once
    (a relay may publish an entry again), so, like every consumer, this counts an event id once."""
    consumer = bus.consumer(f"test-reader-{time.monotonic_ns()}", [topic])
    await consumer.start()
    try:
        records = []
        while batch := await consumer.poll(max_records=100_000, timeout_s=0.05):
            records.extend(batch)
        events: dict[str, Event] = {}
        for record in records:
            event = decode(record.topic.removesuffix(DLQ_SUFFIX), record.value)
            events.setdefault(event.event_id, event)
        return list(events.values())
    finally:
        await consumer.stop()


async def wait_published(bus: MemoryBus, topic: str, count: int) -> list[Event]:
    """The events on ``topic`` once there are ``count`` of them."""

    async def enough() -> list[Event] | None:
        events = await published(bus, topic)
        return events if len(events) >= count else None

    events = await eventually(enough)
    assert events is not None
    assert len(events) == count, events
    return events


def decision(
    project_id: str,
    item_id: str,
    *,
    outcome: DecisionOutcome = DecisionOutcome.needs_review,
    labels: Sequence[str] = ("sports",),
    confidence: float | None = 0.5,
    reasons: Sequence[RoutingReason] = (RoutingReason.low_confidence,),
) -> DecisionMade:
    """The router's decision on an item, as it would publish it."""
    return DecisionMade(
        producer="router",
        project_id=project_id,
        item_id=item_id,
        outcome=outcome,
        reasons=tuple(reasons),
        proposal=Proposal(
            model_id="local", model_version=1, labels=tuple(labels), confidence=confidence,
            scores=dict.fromkeys(labels, confidence or 0.0),
        ),
        guideline_version=1,
        submitted_at=utcnow(),
    )


def auto_final(project_id: str, item_id: str, labels: Sequence[str] = ("sports",)) -> LabelFinalized:
    return LabelFinalized(
        producer="router",
        project_id=project_id,
        item_id=item_id,
        labels=tuple(labels),
        source=FinalSource.auto,
        guideline_version=1,
        model_id="local",
        model_version=1,
        confidence=0.97,
        submitted_at=utcnow(),
    )


PROJECT: dict[str, Any] = {
    "id": "news",
    "name": "News topics",
    "task": {
        "type": "classification",
        "labels": [{"name": "sports"}, {"name": "politics"}, {"name": "tech", "description": "technology"}],
    },
    "guidelines": "Pick the main topic.",
}


async def create_project(api: httpx.AsyncClient, **overrides: Any) -> dict[str, Any]:
    response = await api.post("/v1/projects", json={**PROJECT, **overrides})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def submit(api: httpx.AsyncClient, project_id: str, *texts: str, keyed: bool = True) -> list[str]:
    """Submit items; their ids in order."""
    items = [{"text": t, "idempotency_key": f"k-{t}"} if keyed else {"text": t} for t in texts]
    response = await api.post(f"/v1/projects/{project_id}/items", json={"items": items})
    assert response.status_code == 202, response.text
    return [entry["item_id"] for entry in response.json()["items"]]


async def item_state(api: httpx.AsyncClient, project_id: str, item_id: str) -> str:
    response = await api.get(f"/v1/projects/{project_id}/items/{item_id}")
    assert response.status_code == 200, response.text
    state: str = response.json()["state"]
    return state


async def queue_items(
    api: httpx.AsyncClient, bus: MemoryBus, project_id: str, *texts: str, confidences: Sequence[float | None] = ()
) -> list[str]:
    """Submit items and route them all to review, as the labeler and router would; their ids."""
    ids = await submit(api, project_id, *texts)
    confs = list(confidences) or [0.5] * len(ids)
    await publish(bus, *(decision(project_id, i, confidence=c) for i, c in zip(ids, confs, strict=True)))
    for item_id in ids:
        await wait_state(api, project_id, item_id, "queued")
    return ids


async def _is(api: httpx.AsyncClient, project_id: str, item_id: str, state: str) -> bool:
    return await item_state(api, project_id, item_id) == state


async def wait_state(api: httpx.AsyncClient, project_id: str, item_id: str, state: str) -> None:
    await eventually(lambda: _is(api, project_id, item_id, state))
