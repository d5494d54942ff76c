"""A metrics service on a real in-process bus and SQLite store, its HTTP app, and a parser for /metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import httpx
from prometheus_client.parser import text_string_to_metric_families

from labelgate_core.bus.memory import MemoryBus
from labelgate_core.bus.port import OutgoingMessage, TopicPartition
from labelgate_core.events import Event
from labelgate_core.topics import TOPICS, encode, headers_for
from labelgate_metrics.service import GROUP, MetricsService

PARTITIONS = 2


@dataclass
class System:
    bus: MemoryBus
    service: MetricsService
    http: httpx.AsyncClient

    async def publish(self, events: Sequence[Event]) -> None:
        await self.bus.publish(
            [OutgoingMessage(e.topic, e.key, encode(e), tuple(headers_for(e))) for e in events]
        )
        await drained(self.bus)

    async def scrape(self) -> Scrape:
        response = await self.http.get("/metrics")
        assert response.status_code == 200
        return Scrape(response.text)


class Scrape:
    def __init__(self, text: str) -> None:
        self.samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def get(self, name: str, **labels: str) -> float | None:
        return self.samples.get((name, tuple(sorted(labels.items()))))

    def project(self, project: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every business sample of ``project``, to compare two scrapes."""
        return {k: v for k, v in self.samples.items() if ("project", project) in k[1]}


async def drained(bus: MemoryBus) -> None:
    """Wait until the metrics group has committed everything on the bus (its effects are then durable)."""
    tps = [TopicPartition(topic, p) for topic in TOPICS for p in range(PARTITIONS)]
    for _ in range(500):
        committed = bus.committed(GROUP)
        if all(committed.get(tp, 0) >= bus.end_offset(tp) for tp in tps):
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the metrics service did not consume everything")


async def stop(system: System) -> None:
    await system.http.aclose()
    await system.service.stop()


class Start(Protocol):
    async def __call__(self, bus: MemoryBus | None = None, db: str = "metrics.db") -> System: ...
