"""The embedded pipeline: the four services in one process on the in-process bus and SQLite stores.

This is a composition root like each service's ``main.py``: it wires the same services to the same ports, so
what runs here is what runs as four processes on Kafka and MongoDB."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from labelgate_core.adapters import make_bus, make_store
from labelgate_core.app import all_ready, lifespan_for
from labelgate_core.bus.port import Bus
from labelgate_core.consumer import RetryPolicy
from labelgate_core.service import Service
from labelgate_core.settings import CoreSettings
from labelgate_labeler.main import build_labeler
from labelgate_labeler.settings import LabelerSettings
from labelgate_metrics.main import build_metrics, metrics_router
from labelgate_review_api.main import build_api, build_review_api
from labelgate_router.endpoints import router_api
from labelgate_router.main import build_router


@dataclass
class Pipeline:
    bus: Bus
    services: list[Service]
    app: FastAPI


def build_pipeline(core: CoreSettings | None = None, labeler: LabelerSettings | None = None) -> Pipeline:
    core = core or CoreSettings()
    bus = make_bus(core)
    retry = RetryPolicy(max_attempts=core.consumer_max_attempts)
    review = build_review_api(bus, make_store(core, "review-api"), retry=retry)
    metrics = build_metrics(bus, make_store(core, "metrics"), retry=retry)
    router = build_router(bus, make_store(core, "router"), retry=retry)
    services: list[Service] = [
        build_labeler(bus, make_store(core, "labeler"), labeler, retry=retry),
        router,
        metrics,
        review,
    ]

    async def ready() -> bool:
        return await all_ready(services)

    app = build_api(review, ready=ready, lifespan=lifespan_for(bus, services))
    app.title = "Labelgate (embedded)"
    app.include_router(metrics_router(metrics))
    app.include_router(router_api(router))
    return Pipeline(bus, services, app)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def serve_in_background(
    app: FastAPI, host: str = "127.0.0.1", port: int | None = None, startup_timeout_s: float = 120.0
) -> AsyncIterator[str]:
    """Serve ``app`` with uvicorn on this event loop; yields its base URL and shuts it down gracefully."""
    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False))
    task = asyncio.create_task(server.serve())
    async with asyncio.timeout(startup_timeout_s):
        while not server.started:
            if task.done() or server.should_exit:
                server.should_exit = True
                await task
                raise RuntimeError("the embedded pipeline failed to start; its log says why")
            await asyncio.sleep(0.05)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        await task


def embedded_settings(data_dir: Path) -> CoreSettings:
    return CoreSettings(bus="memory", store="sqlite", data_dir=data_dir)
