"""The review API as a client sees it: the real app over ASGI, on an in-process bus and a SQLite store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from labelgate_core.bus.memory import MemoryBus
from labelgate_core.consumer import RetryPolicy
from labelgate_core.store.sqlite import SqliteStore
from labelgate_review_api.main import build_api, build_review_api
from labelgate_review_api.service import ReviewApiService
from labelgate_review_api.settings import ReviewApiSettings

from .helpers import Clock


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def settings() -> ReviewApiSettings:
    return ReviewApiSettings(queue_depth_refresh_s=0.5)


@pytest.fixture
async def bus() -> AsyncIterator[MemoryBus]:
    bus = MemoryBus(partitions=2)
    await bus.start()
    yield bus
    await bus.stop()


@pytest.fixture
async def service(
    bus: MemoryBus, tmp_path: Path, clock: Clock, settings: ReviewApiSettings
) -> AsyncIterator[ReviewApiService]:
    service = build_review_api(
        bus,
        SqliteStore(tmp_path / "review-api.db"),
        settings,
        retry=RetryPolicy(max_attempts=2, backoff_initial_s=0.001, backoff_max_s=0.01),
        clock=clock,
    )
    await service.start()
    yield service
    await service.stop(grace_s=5)


@pytest.fixture
async def api(service: ReviewApiService) -> AsyncIterator[httpx.AsyncClient]:
    app = build_api(service)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://review") as client:
        yield client
