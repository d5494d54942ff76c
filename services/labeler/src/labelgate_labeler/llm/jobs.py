"""Labeling through a provider that does network I/O, without holding a store transaction during the call.

The consumer applies each event inside a store transaction, and SQLite has a single writer: a 2-second LLM
call inside it would stall every other write of the labeler (reviews, training records, other items). So the
``item.submitted`` handler only records a job, in the consumer's transaction (inbox, job and commit are
atomic). Workers then claim due jobs with a lease (one short transaction), call the provider with no
transaction open, and record the proposal, the spend and the ``label.scored`` event in a second short
transaction, guarded by the lease. A crash between the two leaves the job pending: it is claimed again
once its lease expires, so no item is lost; its ``label.scored`` is emitted once, by whoever holds the
lease when completing (a call whose lease was lost records its spend but emits nothing).

Transient provider failures reschedule the job with backoff for a bounded number of rounds (each round
itself makes a bounded number of calls); after the last one the item goes to a human with an unscored
proposal. Nothing is dead-lettered for a transient fault. Items of a project whose daily budget is spent
wait, unclaimed, and a gauge says how many."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from labelgate_core.errors import PermanentError, RetriableError
from labelgate_core.events import ItemSubmitted, LabelScored, Proposal, new_id, utcnow
from labelgate_core.store.port import Doc, Index, Store, Transaction
from labelgate_core.topics import ITEM_SUBMITTED, decode, encode, headers_for

from ..provider import LabelProvider, LabelRequest
from .budget import DEFERRED, WAITING, Budget, next_day
from .ensemble import EnsembleProvider
from .provider import ProviderUnavailableError

log = logging.getLogger(__name__)

JOBS = "label_jobs"
PENDING, WAITING_BUDGET, RUNNING, DONE = "pending", "waiting_budget", "running", "done"


@dataclass(frozen=True, slots=True)
class JobSettings:
    workers: int = 16
    """Items labeled at once (each provider also has its own concurrency and rate limits)."""
    lease_s: float = 600.0
    """Longer than one round can take (attempts x (timeout + backoff)); an expired lease is claimed again."""
    max_rounds: int = 5
    round_backoff_s: float = 5.0
    round_backoff_max_s: float = 300.0
    budget_recheck_s: float = 60.0
    poll_s: float = 0.5


class RemoteLabeling:
    def __init__(
        self,
        *,
        store: Store,
        provider: LabelProvider,
        producer: str,
        budget: Budget,
        settings: JobSettings | None = None,
        observe: Callable[[Proposal, float], None] = lambda proposal, elapsed: None,
        leakage: Callable[[str, str], Literal["exact", "near"] | None] = lambda project_id, text: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.provider = provider
        self.producer = producer
        self.budget = budget
        self.settings = settings or JobSettings()
        self.observe = observe
        self.leakage = leakage
        """(project, text) → ``exact`` or ``near`` when the text duplicates one of the project's reviewed items,
        the pool its few-shot examples are drawn from."""
        self.clock = clock
        self._wake = asyncio.Event()

    async def setup(self) -> None:
        await self.store.ensure_indexes(JOBS, [Index(("status", "due_ts")), Index(("project_id", "status"))])
        # A budget may have been raised since items started waiting: look at them again now.
        async with self.store.transaction() as tx:
            for doc in await tx.find(JOBS, {"status": WAITING_BUDGET}):
                await tx.update_one(JOBS, {"_id": doc["_id"]}, set={"status": PENDING, "due_ts": self.clock()})

    async def enqueue(self, tx: Transaction, item: ItemSubmitted) -> None:
        """Inside the consumer's transaction: the job is durable exactly when the event counts as handled."""
        await tx.insert(
            JOBS,
            {
                "_id": item.event_id,
                "project_id": item.project_id,
                "item_id": item.item_id,
                "event": encode(item).decode(),
                "status": PENDING,
                "due_ts": self.clock(),
                "rounds": 0,
                "created_ts": self.clock(),
            },
        )

    def wake(self) -> None:
        self._wake.set()

    async def pending(self) -> int:
        return await self.store.count(JOBS, {"status": {"$ne": DONE}})

    async def run(self, stopping: asyncio.Event) -> None:
        in_flight: set[asyncio.Task[None]] = set()

        def finished(task: asyncio.Task[None]) -> None:
            in_flight.discard(task)
            self._wake.set()

        while not stopping.is_set():
            self._wake.clear()
            free = self.settings.workers - len(in_flight)
            if free > 0:
                try:
                    jobs = await self._claim(free)
                except Exception:
                    log.exception("claiming labeling jobs failed; trying again")
                    jobs = []
                for job in jobs:
                    task = asyncio.create_task(self._run(job), name=f"label-job:{job['_id']}")
                    in_flight.add(task)
                    task.add_done_callback(finished)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.poll_s)
        # Let calls in flight finish and record; what does not finish is claimed again after its lease.
        if in_flight:
            await asyncio.gather(*in_flight, return_exceptions=True)

    async def _claim(self, limit: int) -> list[Doc]:
        now = self.clock()
        claimed: list[Doc] = []
        exhausted: dict[str, bool] = {}
        deferred: set[str] = set()
        async with self.store.transaction() as tx:
            docs = await tx.find(JOBS, {"status": {"$ne": DONE}, "due_ts": {"$lte": now}}, sort=[("due_ts", 1)],
                                 limit=limit * 2)
            for doc in docs:
                project = str(doc["project_id"])
                if project not in exhausted:
                    exhausted[project] = await self.budget.exhausted(tx, project)
                if exhausted[project]:
                    wait_until = min(next_day(utcnow()).timestamp(), now + self.settings.budget_recheck_s)
                    await tx.update_one(JOBS, {"_id": doc["_id"]}, set={"status": WAITING_BUDGET, "due_ts": wait_until})
                    deferred.add(project)
                    continue
                if len(claimed) >= limit:
                    continue
                lease = new_id()
                await tx.update_one(JOBS, {"_id": doc["_id"], "due_ts": doc["due_ts"]},
                                    set={"status": RUNNING, "lease": lease, "due_ts": now + self.settings.lease_s})
                claimed.append(doc | {"lease": lease})
            waiting = {p: await tx.count(JOBS, {"project_id": p, "status": WAITING_BUDGET}) for p in exhausted}
        for project in deferred:
            DEFERRED.labels(project).inc()
        for project, count in waiting.items():
            WAITING.labels(project).set(count)
        return claimed

    async def _run(self, job: Doc) -> None:
        item = decode(ITEM_SUBMITTED, str(job["event"]).encode())
        if not isinstance(item, ItemSubmitted):
            raise PermanentError(f"a labeling job holds {item.event_type}, not item.submitted")
        request = LabelRequest(project_id=item.project_id, item_id=item.item_id, text=item.text, task=item.task,
                               guideline_version=item.guideline_version, image=item.image)
        members: tuple[Proposal, ...] = ()
        agreement: float | None = None
        started = time.perf_counter()
        try:
            if isinstance(self.provider, EnsembleProvider):
                result = await self.provider.propose_all(request)
                proposal, members, agreement = result.combined, result.members, result.agreement
            else:
                proposal = await self.provider.propose(request)
        except RetriableError as exc:
            rounds = int(job.get("rounds") or 0) + 1
            billed = exc.cost_usd if isinstance(exc, ProviderUnavailableError) else 0.0
            attempts = exc.attempts if isinstance(exc, ProviderUnavailableError) else 0
            if rounds < self.settings.max_rounds:
                await self._later(job, rounds, billed, exc)
                return
            log.warning("provider unavailable for every round; the item goes to a person",
                        extra={"item_id": item.item_id, "rounds": rounds, "error": repr(exc)[:500]})
            proposal = Proposal(model_id=self.provider.model_id, model_version=0, labels=(), confidence=None,
                                error=f"provider unavailable after {rounds} rounds: {exc}"[:500],
                                cost_usd=billed, attempts=attempts)
        except Exception as exc:
            # A fault in the provider's own code must not lose the item: a person labels it instead.
            log.exception("provider failed; the item goes to a person", extra={"item_id": item.item_id})
            proposal = Proposal(model_id=self.provider.model_id, model_version=0, labels=(), confidence=None,
                                error=f"{type(exc).__name__}: {exc}"[:500])
        elapsed = time.perf_counter() - started
        proposal = proposal.model_copy(update={"latency_ms": elapsed * 1000.0})
        if proposal.confidence is not None and (leak := self.leakage(item.project_id, item.text)) is not None:
            proposal = proposal.model_copy(update={"leakage": leak})
        await self._complete(job, item, proposal, members, agreement)
        self.observe(proposal, elapsed)

    async def _later(self, job: Doc, rounds: int, billed: float, exc: Exception) -> None:
        ceiling = min(self.settings.round_backoff_max_s, self.settings.round_backoff_s * 2 ** (rounds - 1))
        due = self.clock() + random.uniform(ceiling / 2, ceiling)  # noqa: S311 -- jitter, not a secret
        async with self.store.transaction() as tx:
            await self.budget.record(tx, str(job["project_id"]), billed)
            await tx.update_one(JOBS, {"_id": job["_id"], "lease": job["lease"]},
                                set={"status": PENDING, "due_ts": due, "rounds": rounds, "last_error": repr(exc)[:500]})

    async def _complete(
        self, job: Doc, item: ItemSubmitted, proposal: Proposal, members: tuple[Proposal, ...],
        agreement: float | None,
    ) -> None:
        async with self.store.transaction() as tx:
            await self.budget.record(tx, item.project_id, proposal.cost_usd)
            current = await tx.find_one(JOBS, {"_id": job["_id"]})
            if current is None or current.get("status") == DONE or current.get("lease") != job["lease"]:
                log.info("lease lost while labeling; the holder of the new lease emits",
                         extra={"item_id": item.item_id})
                return
            fields: dict[str, Any] = {
                "status": DONE, "done_ts": self.clock(), "labels": list(proposal.labels),
                "confidence": proposal.confidence, "model_id": proposal.model_id, "cost_usd": proposal.cost_usd,
                "invalid": proposal.invalid,
            }
            await tx.update_one(JOBS, {"_id": job["_id"]}, set=fields)
            event = LabelScored(
                **item.caused(),
                producer=self.producer,
                proposal=proposal,
                task=item.task,
                routing=item.routing,
                guideline_version=item.guideline_version,
                submitted_at=item.occurred_at,
                members=members,
                agreement=agreement,
                gold=item.gold,
            )
            await tx.add_outbox(event.topic, event.key, encode(event), headers_for(event))
