"""Router settings (``LABELGATE_ROUTER_…``)."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict


class RouterSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LABELGATE_ROUTER_", extra="ignore")

    # Seeds the audit draw: an item is audited, or not, the same way across restarts and replays.
    audit_seed: str = "labelgate-audit"
    host: str = "127.0.0.1"
    port: int = 8002
