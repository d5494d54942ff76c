"""The metrics service's composition root: wires the bus and store the settings name, serves /metrics."""

from __future__ import annotations

import uvicorn
from fastapi import FastAPI

from labelgate_core.adapters import make_bus, make_store
from labelgate_core.app import ops_app
from labelgate_core.bus.port import Bus
from labelgate_core.consumer import RetryPolicy
from labelgate_core.observability import configure_logging
from labelgate_core.settings import CoreSettings
from labelgate_core.store.port import Store

from .endpoints import metrics_router
from .service import MetricsService
from .settings import MetricsSettings

__all__ = ["build_metrics", "cli", "create_app", "metrics_router"]


def build_metrics(
    bus: Bus, store: Store, settings: MetricsSettings | None = None, *, retry: RetryPolicy | None = None
) -> MetricsService:
    return MetricsService(bus=bus, store=store, settings=settings, retry=retry)


def create_app(core: CoreSettings | None = None, settings: MetricsSettings | None = None) -> FastAPI:
    """The metrics service alone: its ops endpoints (``/metrics`` included) and its read API."""
    core = core or CoreSettings()
    bus = make_bus(core)
    service = build_metrics(
        bus, make_store(core, "metrics"), settings, retry=RetryPolicy(max_attempts=core.consumer_max_attempts)
    )
    app = ops_app("Labelgate metrics", bus, [service])
    app.include_router(metrics_router(service))
    return app


def cli() -> None:
    core = CoreSettings()
    settings = MetricsSettings()
    configure_logging(core.log_level, core.log_format)
    uvicorn.run(create_app(core, settings), host=settings.host, port=settings.port, log_config=None)
