"""When the store loses a race or blinks, reviewers' requests are run again, and when it stays unavailable they
get a 503 they can retry, never a 500; nothing is applied twice either way."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from labelgate_core.bus.memory import MemoryBus
from labelgate_core.consumer import RetryPolicy
from labelgate_core.errors import RetriableError
from labelgate_core.store.sqlite import SqliteStore, SqliteTransaction
from labelgate_review_api.main import build_api, build_review_api
from labelgate_review_api.settings import ReviewApiSettings

from .helpers import Clock, create_project, queue_items

pytestmark = pytest.mark.integration

LEASE = "/v1/projects/news/queue/lease"


class RacingStore(SqliteStore):
    """The SQLite store, except that the next ``conflicts`` transactions fail as a lost race would on MongoDB:
    after their statements ran and before they commit."""

    conflicts = 0

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[SqliteTransaction]:
        async with super().transaction() as tx:
            yield tx
            if self.conflicts > 0:
                self.conflicts -= 1
                raise RetriableError("write conflict (simulated)")


@pytest.fixture
async def racing(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, MemoryBus, RacingStore]]:
    bus = MemoryBus(partitions=2)
    await bus.start()
    store = RacingStore(tmp_path / "review-api.db")
    service = build_review_api(
        bus, store, ReviewApiSettings(), retry=RetryPolicy(max_attempts=5, backoff_initial_s=0.001), clock=Clock()
    )
    await service.start()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_api(service)), base_url="http://r") as api:
        yield api, bus, store
    await service.stop(grace_s=5)
    await bus.stop()


async def test_a_lost_race_is_run_again_and_applied_once(
    racing: tuple[httpx.AsyncClient, MemoryBus, RacingStore],
) -> None:
    api, bus, store = racing
    await create_project(api)
    [item_id] = await queue_items(api, bus, "news", "cup final tonight")

    store.conflicts = 2
    leased = await api.post(LEASE, json={"reviewer_id": "ana"})
    assert leased.status_code == 200, leased.text
    task = leased.json()

    store.conflicts = 2
    reviewed = await api.post(
        f"/v1/projects/news/tasks/{task['task_id']}/review",
        json={"lease_token": task["lease_token"], "reviewer_id": "ana", "labels": ["sports"]},
    )
    assert reviewed.status_code in (200, 201), reviewed.text
    item = (await api.get(f"/v1/projects/news/items/{item_id}")).json()
    assert item["state"] == "final"
    assert len(item["reviews"]) == 1


async def test_a_store_that_stays_unavailable_answers_503_with_retry_after(
    racing: tuple[httpx.AsyncClient, MemoryBus, RacingStore],
) -> None:
    api, bus, store = racing
    await create_project(api)
    await queue_items(api, bus, "news", "cup final tonight")

    store.conflicts = 100
    refused = await api.post(LEASE, json={"reviewer_id": "ana"})
    store.conflicts = 0

    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "1"
    assert refused.json()["error"]["code"] == "unavailable"
    again = await api.post(LEASE, json={"reviewer_id": "ana"})
    assert again.status_code == 200, again.text
