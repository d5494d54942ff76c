"""The standalone review API, as an operator runs it: settings from the environment, lifespan, ops endpoints."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from labelgate_core.bus.memory import MemoryBus
from labelgate_core.store.sqlite import SqliteStore
from labelgate_review_api.main import build_api, build_review_api, create_app

from .helpers import PROJECT

pytestmark = pytest.mark.integration


async def test_standalone_app_serves_the_api_and_keeps_data_across_restarts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LABELGATE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("LABELGATE_REVIEW_API_MAX_BATCH", "2")

    app = create_app()
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://r") as api,
    ):
        assert (await api.get("/healthz")).status_code == 200
        assert (await api.get("/readyz")).json() == {"status": "ready"}
        assert (await api.post("/v1/projects", json=PROJECT)).status_code == 201
        too_many = await api.post("/v1/projects/news/items", json={"items": [{"text": "a"}] * 3})
        assert too_many.status_code == 413
        assert "limit of 2" in too_many.json()["error"]["message"]
        assert (await api.get("/docs")).status_code == 200
        paths = (await api.get("/openapi.json")).json()["paths"]
        assert "/v1/projects/{project_id}/queue/lease" in paths
        assert "labelgate_review_queue_depth" in (await api.get("/metrics")).text

    assert (tmp_path / "review-api.db").exists()
    again = create_app()
    async with (
        again.router.lifespan_context(again),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=again), base_url="http://r") as api,
    ):
        assert (await api.get("/v1/projects/news")).json()["name"] == PROJECT["name"]


async def test_not_ready_until_started(tmp_path: Path) -> None:
    service = build_review_api(MemoryBus(), SqliteStore(tmp_path / "r.db"))
    app = build_api(service)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://r") as api:
        assert (await api.get("/readyz")).status_code == 503
        assert (await api.get("/healthz")).status_code == 200


async def test_an_embedding_process_supplies_its_own_readiness(tmp_path: Path) -> None:
    service = build_review_api(MemoryBus(), SqliteStore(tmp_path / "r.db"))

    async def always() -> bool:
        return True

    app = build_api(service, ready=always)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://r") as api:
        assert (await api.get("/readyz")).status_code == 200
