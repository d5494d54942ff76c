"""The router's composition root: wires adapters from settings and serves its operational endpoints and its
read API (systematic errors)."""

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

from .endpoints import router_api
from .service import RouterService
from .settings import RouterSettings


def build_router(
    bus: Bus, store: Store, settings: RouterSettings | None = None, *, retry: RetryPolicy | None = None
) -> RouterService:
    return RouterService(bus=bus, store=store, settings=settings, retry=retry)


def create_app() -> FastAPI:
    core = CoreSettings()
    bus = make_bus(core)
    retry = RetryPolicy(max_attempts=core.consumer_max_attempts)
    service = build_router(bus, make_store(core, "router"), retry=retry)
    app = ops_app("labelgate-router", bus, [service])
    app.include_router(router_api(service))
    return app


def cli() -> None:
    core, settings = CoreSettings(), RouterSettings()
    configure_logging(core.log_level, core.log_format)
    uvicorn.run(create_app(), host=settings.host, port=settings.port, log_config=None)
