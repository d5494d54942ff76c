"""Fixtures of the metrics tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from labelgate_core.app import ops_app
from labelgate_core.bus.memory import MemoryBus
from labelgate_core.store.sqlite import SqliteStore
from labelgate_metrics.main import build_metrics, metrics_router
from labelgate_metrics.service import MetricsService
from labelgate_metrics.settings import MetricsSettings

from .harness import PARTITIONS, Start, System


@pytest.fixture
async def start(tmp_path: Path) -> AsyncIterator[Start]:
    """Starts a metrics service on a bus (a new one by default) and a store file in ``tmp_path``."""
    started: list[tuple[MemoryBus, MetricsService, httpx.AsyncClient]] = []

    async def _start(bus: MemoryBus | None = None, db: str = "metrics.db") -> System:
        bus = bus or MemoryBus(partitions=PARTITIONS)
        service = build_metrics(bus, SqliteStore(tmp_path / db), MetricsSettings(agreement_refresh_s=0))
        app = ops_app("metrics", bus, [service])
        app.include_router(metrics_router(service))
        await bus.start()
        await service.start()
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://metrics")
        started.append((bus, service, http))
        return System(bus, service, http)

    yield _start
    for bus, service, http in reversed(started):
        await http.aclose()
        await service.stop()
        await bus.stop()


async def stop(system: System) -> None:
    await system.http.aclose()
    await system.service.stop()
