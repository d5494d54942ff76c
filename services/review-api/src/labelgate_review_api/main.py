"""The review API's composition root: builds the service on the adapters it is given (or those the settings
name) and the FastAPI app around it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager

import uvicorn
from fastapi import FastAPI

from labelgate_core.adapters import make_bus, make_store
from labelgate_core.app import lifespan_for
from labelgate_core.bus.port import Bus
from labelgate_core.consumer import RetryPolicy
from labelgate_core.observability import configure_logging, ops_router
from labelgate_core.settings import CoreSettings
from labelgate_core.store.port import Store

from . import __version__
from .endpoints import ROUTERS, install_error_handlers
from .service import ReviewApiService
from .settings import ReviewApiSettings

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]

DESCRIPTION = """Labelgate's review API: create projects, submit items for AI-assisted labeling, work the
human review queue, and export final labels. Errors share one body:
`{"error": {"code": ..., "message": ..., "details": ...}}`."""


def build_review_api(
    bus: Bus,
    store: Store,
    settings: ReviewApiSettings | None = None,
    *,
    retry: RetryPolicy | None = None,
    clock: Callable[[], float] | None = None,
) -> ReviewApiService:
    return ReviewApiService(bus=bus, store=store, settings=settings, retry=retry, clock=clock)


def build_api(
    service: ReviewApiService,
    settings: ReviewApiSettings | None = None,
    *,
    ready: Callable[[], Awaitable[bool]] | None = None,
    lifespan: Lifespan | None = None,
) -> FastAPI:
    """The REST app over ``service``. It starts nothing by itself unless given a ``lifespan``: a process that
    runs several services passes its own lifespan and readiness check."""
    settings = settings or service.settings
    app = FastAPI(
        title="Labelgate review API",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.review_api = service
    app.state.review_api_settings = settings
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    app.include_router(ops_router(ready or service.ready))
    return app


def create_app() -> FastAPI:
    """The standalone review API, on the adapters ``LABELGATE_…`` settings name."""
    core, settings = CoreSettings(), ReviewApiSettings()
    bus = make_bus(core)
    service = build_review_api(
        bus, make_store(core, "review-api"), settings, retry=RetryPolicy(max_attempts=core.consumer_max_attempts)
    )
    lifespan: Lifespan = lifespan_for(bus, [service])
    return build_api(service, settings, lifespan=lifespan)


def cli() -> None:
    core, settings = CoreSettings(), ReviewApiSettings()
    configure_logging(core.log_level, core.log_format)
    uvicorn.run(create_app(), host=settings.host, port=settings.port, log_config=None)
