"""Pick the bus and store adapters the settings name (the only place that knows them all)."""

from __future__ import annotations

from .bus.memory import MemoryBus
from .bus.port import Bus
from .settings import CoreSettings
from .store.port import Store
from .store.sqlite import SqliteStore


class AdapterUnavailableError(RuntimeError):
    pass


def make_bus(settings: CoreSettings) -> Bus:
    if settings.bus == "memory":
        journal = settings.data_dir / "bus.db" if settings.bus_journal else None
        return MemoryBus(partitions=settings.bus_partitions, journal=journal)
    raise AdapterUnavailableError(f"LABELGATE_BUS={settings.bus} is not available in this build")


def make_store(settings: CoreSettings, service: str) -> Store:
    if settings.store == "sqlite":
        return SqliteStore(settings.data_dir / f"{service}.db")
    raise AdapterUnavailableError(f"LABELGATE_STORE={settings.store} is not available in this build")
