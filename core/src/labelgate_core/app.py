"""The ASGI shell around one or more services: a lifespan that starts the bus, then the services, and at shutdown
stops the services together (drain, commit, publish the outbox) and then the bus, within one grace period."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from fastapi import FastAPI

from .bus.port import Bus
from .observability import ops_router
from .service import Service

log = logging.getLogger(__name__)


def lifespan_for(bus: Bus, services: Sequence[Service], grace_s: float = 25.0):  # type: ignore[no-untyped-def]
    """Start the bus, then the services; at shutdown stop the services (each drains and commits) and then the bus,
    all within ``grace_s`` even when Kafka or the store no longer answers: a bus that cannot flush what it has in
    flight is abandoned, and the outbox, which forgets an entry only once the bus acknowledged it, publishes it
    again after the restart."""

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
            deadline = time.monotonic() + grace_s
            kept_for_bus = min(3.0, grace_s / 5)
            # Concurrently: in the embedded process several services share the grace period.
            await asyncio.gather(*(service.stop(grace_s - kept_for_bus) for service in reversed(started)))
            try:
                await asyncio.wait_for(bus.stop(), max(deadline - time.monotonic(), 0.5))
            except TimeoutError:
                log.warning("the bus did not stop within the grace period; what it had in flight stays in the "
                            "outbox and is published after the restart")

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
