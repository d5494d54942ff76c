"""The labeler's composition root: builds the service on the adapters the settings name, and serves it."""

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

from .llm.factory import build_provider
from .provider import LocalModelProvider
from .service import LabelerService
from .settings import LabelerSettings


def build_labeler(
    bus: Bus, store: Store, settings: LabelerSettings | None = None, *, retry: RetryPolicy | None = None
) -> LabelerService:
    """The labeler on a given bus and store (the embedded ``labelgate run`` shares one bus between services).

    The settings' ``provider`` picks who labels: the local model (default), a language model over an
    OpenAI-compatible API, or an ensemble of those; the local model is trained from reviews in every case."""
    settings = settings or LabelerSettings()
    local = LocalModelProvider()
    provider = build_provider(settings, store, local)
    service = LabelerService(bus=bus, store=store, settings=settings, retry=retry, provider=provider)
    service.local = local
    return service


def create_app(core: CoreSettings | None = None, settings: LabelerSettings | None = None) -> FastAPI:
    """The standalone labeler: operational endpoints only (``/healthz``, ``/readyz``, ``/metrics``)."""
    core = core or CoreSettings()
    bus = make_bus(core)
    store = make_store(core, "labeler")
    service = build_labeler(bus, store, settings, retry=RetryPolicy(max_attempts=core.consumer_max_attempts))
    return ops_app("labelgate-labeler", bus, [service])


def cli() -> None:
    core = CoreSettings()
    settings = LabelerSettings()
    configure_logging(core.log_level, core.log_format)
    uvicorn.run(create_app(core, settings), host=settings.host, port=settings.port, log_config=None)


if __name__ == "__main__":
    cli()
