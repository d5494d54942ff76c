"""Per-project spending limits in USD per UTC day. When a project's day is spent, its items wait (they are
never dropped) until the next day or a higher limit."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta

from prometheus_client import Counter, Gauge

from labelgate_core.events import utcnow
from labelgate_core.store.port import Reader, Transaction

SPEND = "llm_spend"

WAITING = Gauge("labelgate_llm_budget_waiting_items", "Items waiting for a project's daily LLM budget",
                ["project_id"])
DEFERRED = Counter("labelgate_llm_budget_deferrals_total", "Times an item was held back by a spent daily budget",
                   ["project_id"])
SPENT = Gauge("labelgate_llm_budget_spent_usd", "USD spent today on a project's LLM calls", ["project_id"])


def day_of(at: datetime) -> str:
    return at.astimezone(UTC).date().isoformat()


def next_day(at: datetime) -> datetime:
    start = datetime.combine(at.astimezone(UTC).date(), datetime.min.time(), tzinfo=UTC)
    return start + timedelta(days=1)


class Budget:
    def __init__(
        self,
        *,
        default_usd_per_day: float | None,
        per_project: Mapping[str, float | None] | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.default = default_usd_per_day
        self.per_project = dict(per_project or {})
        self.clock = clock

    def limit(self, project_id: str) -> float | None:
        own = self.per_project.get(project_id)
        return own if own is not None else self.default

    async def spent_today(self, reader: Reader, project_id: str) -> float:
        doc = await reader.find_one(SPEND, {"_id": f"{project_id}:{day_of(self.clock())}"})
        return float(doc["usd"]) if doc is not None else 0.0

    async def exhausted(self, reader: Reader, project_id: str) -> bool:
        limit = self.limit(project_id)
        if limit is None:
            return False
        return await self.spent_today(reader, project_id) >= limit

    async def record(self, tx: Transaction, project_id: str, usd: float) -> None:
        if usd <= 0:
            return
        day = day_of(self.clock())
        await tx.update_one(SPEND, {"_id": f"{project_id}:{day}"}, set={"project_id": project_id, "day": day},
                            inc={"usd": usd}, upsert=True)
