"""The ASGI shell around one or more services: a lifespan that starts the bus, then the services, and stops
them in reverse order (drain, commit, publish the outbox) when the server shuts down."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from fastapi import FastAPI

from .bus.port import Bus
from .observability import ops_router
from .service import Service


def lifespan_for(bus: Bus, services: Sequence[Service], grace_s: float = 25.0):  # type: ignore[no-untyped-def]
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await bus.start()
        started: list[Service] = []
        try:
            for service in services:
                await service.start()
                started.append(service)
            yield
        finally:
            for service in reversed(started):
                await service.stop(grace_s)
            await bus.stop()

    return lifespan


async def all_ready(services: Sequence[Service]) -> bool:
    for service in services:
        if not await service.ready():
            return False
    return True


def ops_app(title: str, bus: Bus, services: Sequence[Service]) -> FastAPI:
    """An app with only the operational endpoints, for services that serve no API of their own."""

    async def ready() -> bool:
        return await all_ready(services)

    app = FastAPI(title=title, lifespan=lifespan_for(bus, services))
    app.include_router(ops_router(ready))
    return app
