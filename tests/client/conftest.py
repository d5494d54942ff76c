"""The client against the real review API app (over ASGI, on an in-process bus and a SQLite store)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from labelgate_core.bus.memory import MemoryBus
from labelgate_core.store.sqlite import SqliteStore
from labelgate_review_api.main import build_api, build_review_api
from labelgate_review_api.service import ReviewApiService


@pytest.fixture
async def bus() -> AsyncIterator[MemoryBus]:
    bus = MemoryBus(partitions=2)
    await bus.start()
    yield bus
    await bus.stop()


@pytest.fixture
async def service(bus: MemoryBus, tmp_path: Path) -> AsyncIterator[ReviewApiService]:
    service = build_review_api(bus, SqliteStore(tmp_path / "review-api.db"))
    await service.start()
    yield service
    await service.stop(grace_s=5)


@pytest.fixture
def transport(service: ReviewApiService) -> httpx.AsyncBaseTransport:
    return httpx.ASGITransport(app=build_api(service))
