"""The labeler service: proposes a label for every submitted item and learns from every review.

Store collections (the labeler's own):
- ``examples``: one reviewed item per project and item (``_id`` ``<project>:<item>``), with its labels and,
  for entity tasks, its spans; a later review of the same item replaces them.
- ``projects``: per project, its latest task spec and guideline version, the reviews not yet trained on
  (``new_reviews``), the current model version, when it was trained and on how many examples.
- ``model_versions``: one record per trained version (``<project>:<version>``).

Models live in memory. At start-up each project's model is rebuilt from its stored examples: with no review
since the last version, the examples are exactly those that version was trained on and training is
deterministic, so the rebuilt model *is* that version and keeps its number (the router's calibration and the
metrics per model version carry on undisturbed). If reviews arrived since, the rebuilt model differs from every
recorded one, so it is recorded as a new version and announced with ``model.updated``."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from prometheus_client import Counter, Histogram

from labelgate_core.bus.port import Bus
from labelgate_core.consumer import Handler, HandlerContext, RetryPolicy
from labelgate_core.errors import PermanentError
from labelgate_core.events import (
    Event,
    GuidelineChanged,
    ItemSubmitted,
    LabelScored,
    ModelUpdated,
    Proposal,
    ReviewSubmitted,
    Span,
    TaskSpec,
    TaskType,
    utcnow,
)
from labelgate_core.service import Service
from labelgate_core.store.port import Doc, Index, Store, Transaction
from labelgate_core.topics import GUIDELINE_CHANGED, ITEM_SUBMITTED, REVIEW_SUBMITTED, encode, headers_for

from . import unscored
from .leakage import TrainingLeaks
from .llm.budget import Budget
from .llm.jobs import JobSettings, RemoteLabeling
from .model import Classifier, ModelConfig, RetrainPolicy, TrainedModel, TrainingError, train, trainable
from .ner import EntityModel, EntityModelConfig, EntityTrainingError, entity_trainable, train_entities
from .provider import LOCAL_ENTITY_MODEL_ID, LOCAL_MODEL_ID, LabelProvider, LabelRequest, LocalModelProvider
from .settings import LabelerSettings

log = logging.getLogger(__name__)

EXAMPLES = "examples"
UNSCORED_PER_VERSION = 2000
"""Items waiting unscored (cold start) that a new model version scores at most, in one transaction."""
PROJECTS = "projects"
MODEL_VERSIONS = "model_versions"

PROPOSALS = Counter(
    "labelgate_labeler_predictions_total",
    "Items a provider labeled, by model and whether it could score them (business totals per project: metrics)",
    ["model_id", "scored"],
)
PROPOSAL_SECONDS = Histogram(
    "labelgate_labeler_proposal_latency_seconds",
    "Time a provider took to propose labels for one item",
    ["model_id"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
REVIEWS = Counter("labelgate_labeler_reviews_total", "Reviewed items stored as training examples")
TRAININGS = Counter("labelgate_labeler_model_trainings_total", "Local model trainings, by result", ["result"])
TRAIN_SECONDS = Histogram(
    "labelgate_labeler_model_train_seconds",
    "Time to train one local model version (holdout fit included)",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)

E = TypeVar("E", bound=Event)


def _expect(event: Event, kind: type[E]) -> E:
    if not isinstance(event, kind):
        raise PermanentError(f"expected {kind.__name__}, got {event.event_type}")
    return event


def _observe(proposal: Proposal, elapsed: float) -> None:
    scored = "true" if proposal.confidence is not None else "false"
    PROPOSALS.labels(proposal.model_id, scored).inc()
    PROPOSAL_SECONDS.labels(proposal.model_id).observe(elapsed)


def example_id(project_id: str, item_id: str) -> str:
    return f"{project_id}:{item_id}"


def _seconds_since(iso: object, now: datetime) -> float | None:
    if not isinstance(iso, str):
        return None
    return (now - datetime.fromisoformat(iso)).total_seconds()


@dataclass(frozen=True, slots=True)
class _Fitted:
    model: TrainedModel | EntityModel
    counted: int
    """How many new reviews the project had counted when its examples were read: they are trained on now."""
    guideline_version: int | None


class LabelerService(Service):
    name = "labeler"

    def __init__(
        self,
        *,
        bus: Bus,
        store: Store,
        settings: LabelerSettings | None = None,
        retry: RetryPolicy | None = None,
        provider: LabelProvider | None = None,
    ) -> None:
        super().__init__(bus=bus, store=store, retry=retry)
        self.settings = settings or LabelerSettings()
        self.local = LocalModelProvider()
        self.provider: LabelProvider = provider or self.local
        """Who labels items. The local model is always trained from reviews, whoever labels."""
        self.policy = RetrainPolicy(
            self.settings.retrain_every_reviews, self.settings.retrain_interval_s, self.settings.retrain_growth
        )
        self.train_config = ModelConfig(
            classifier=Classifier(self.settings.classifier),
            max_features=self.settings.max_features,
            max_chars=self.settings.max_text_chars,
            holdout_every=self.settings.holdout_every,
        )
        self.entity_config = EntityModelConfig(
            max_chars=self.settings.max_text_chars, holdout_every=self.settings.holdout_every
        )
        self._training = asyncio.Lock()
        self._reviewed = asyncio.Event()
        """Set when a review is stored: the schedule is checked at once rather than at the next tick, so a
        project's first model (and a young one's successor) does not wait a tick while items go unscored."""
        self._untrainable: dict[str, int] = {}
        self.leaks = TrainingLeaks(EXAMPLES)
        """Duplicates of training items: flagged on the proposal, kept out of calibration by the router."""
        """Project → its new-review count when training last proved impossible: no retry until it moves."""
        self.remote: RemoteLabeling | None = None
        """For providers that call out over the network: items are labeled outside the store transaction."""
        if not self.provider.runs_in_transaction:
            s = self.settings
            self.remote = RemoteLabeling(
                store=store,
                provider=self.provider,
                producer=self.name,
                budget=Budget(
                    default_usd_per_day=s.llm_budget_usd_per_day,
                    per_project={p: c.budget_usd_per_day for p, c in s.llm_projects.items()},
                ),
                settings=JobSettings(
                    workers=s.llm_workers, lease_s=s.llm_job_lease_s, max_rounds=s.llm_job_max_rounds,
                    round_backoff_s=s.llm_job_backoff_s, round_backoff_max_s=s.llm_job_backoff_max_s,
                    budget_recheck_s=s.llm_budget_recheck_s,
                ),
                observe=_observe,
                leakage=self.leaks.check,
            )

    # -- wiring ------------------------------------------------------------------------------------------------

    def subscriptions(self) -> Mapping[str, Mapping[str, Handler]]:
        return {
            "labeler.label": {ITEM_SUBMITTED: self._on_item_submitted},
            "labeler.feedback": {
                REVIEW_SUBMITTED: self._on_review_submitted,
                GUIDELINE_CHANGED: self._on_guideline_changed,
            },
        }

    async def setup(self) -> None:
        await self.store.ensure_indexes(EXAMPLES, [Index(("project_id", "task_type"))])
        await self.store.ensure_indexes(unscored.UNSCORED, [Index(("project_id",))])
        await self.leaks.load(self.store)
        await self.store.ensure_indexes(PROJECTS, [Index(("new_reviews",))])
        await self.store.ensure_indexes(MODEL_VERSIONS, [Index(("project_id", "version"), unique=True)])
        for project in await self.store.find(PROJECTS, {"model_version": {"$gt": 0}}):
            await self._restore(project)
        if self.remote is not None:
            await self.remote.setup()

    def background(self) -> list[Coroutine[Any, Any, None]]:
        if self.remote is not None:
            return [self._retrain_loop(), self.remote.run(self.stopping)]
        return [self._retrain_loop()]

    async def stop(self, grace_s: float = 25.0) -> None:
        await super().stop(grace_s)
        close = getattr(self.provider, "close", None)
        if close is not None:
            await close()

    # -- handlers ----------------------------------------------------------------------------------------------

    async def _on_item_submitted(self, event: Event, ctx: HandlerContext) -> None:
        item = _expect(event, ItemSubmitted)
        if self.remote is not None:
            await self.remote.enqueue(ctx.tx, item)
            ctx.after_commit(self.remote.wake)
            return
        request = LabelRequest(
            project_id=item.project_id,
            item_id=item.item_id,
            text=item.text,
            task=item.task,
            guideline_version=item.guideline_version,
            image=item.image,
        )
        started = time.perf_counter()
        proposal = await self.provider.propose(request)
        elapsed = time.perf_counter() - started
        proposal = proposal.model_copy(update={"latency_ms": elapsed * 1000.0})
        if proposal.confidence is not None:
            leakage = self.leaks.check(item.project_id, item.text)
            if leakage is not None:
                proposal = proposal.model_copy(update={"leakage": leakage})
        elif self.settings.score_waiting_items and not proposal.invalid:
            await unscored.remember(ctx.tx, item)  # scored once a model exists, unless reviewed first
        await ctx.emit(
            LabelScored(
                **item.caused(),
                producer=self.name,
                proposal=proposal,
                task=item.task,
                routing=item.routing,
                guideline_version=item.guideline_version,
                submitted_at=item.occurred_at,
                gold=item.gold,
            )
        )
        ctx.after_commit(lambda: _observe(proposal, elapsed))

    async def _on_review_submitted(self, event: Event, ctx: HandlerContext) -> None:
        review = _expect(event, ReviewSubmitted)
        if review.gold:
            return  # a gold item checks the reviewer: its answer is known, and must not be learned from
        key = example_id(review.project_id, review.item_id)
        existing = await ctx.tx.find_one(EXAMPLES, {"_id": key})
        if existing is not None:
            if existing.get("review_id") == review.review_id:
                return  # the same review published again under a new event id
            if datetime.fromisoformat(str(existing["reviewed_at"])) > review.occurred_at:
                return  # an older review arriving after a newer one: the newer label stands
        fields: Doc = {
            "project_id": review.project_id,
            "item_id": review.item_id,
            "review_id": review.review_id,
            "text": review.text,
            "labels": list(review.labels),
            "spans": [span.model_dump(mode="json") for span in review.spans],
            "task_type": review.task.type.value,
            "guideline_version": review.guideline_version,
            "reviewed_at": review.occurred_at.isoformat(),
            "action": review.action.value,
        }
        if existing is None:
            await ctx.tx.insert(EXAMPLES, {"_id": key, **fields, "first_reviewed_ts": review.occurred_at.timestamp()})
        else:
            await ctx.tx.update_one(EXAMPLES, {"_id": key}, set=fields)
        await self._note_task(ctx.tx, review.project_id, review.task, review.guideline_version, new_review=True)
        ctx.after_commit(REVIEWS.inc)
        if self.settings.retrain_on_review:
            ctx.after_commit(self._reviewed.set)
        await unscored.forget(ctx.tx, review.project_id, review.item_id)
        ctx.after_commit(lambda: self.leaks.add(review.project_id, key, review.text))

    async def _on_guideline_changed(self, event: Event, ctx: HandlerContext) -> None:
        change = _expect(event, GuidelineChanged)
        await self._note_task(
            ctx.tx, change.project_id, change.task, change.version, new_review=False, guidelines=change.text
        )

    async def _note_task(
        self,
        tx: Transaction,
        project_id: str,
        task: TaskSpec,
        guideline_version: int,
        *,
        new_review: bool,
        guidelines: str | None = None,
    ) -> None:
        """Keep the project's newest task spec and guidelines (by guideline version), and count the review if
        there is one."""
        project = await tx.find_one(PROJECTS, {"_id": project_id})
        fields: Doc = {"project_id": project_id}
        if project is None or guideline_version >= int(project.get("guideline_version") or 0):
            fields |= {"task": task.model_dump(mode="json"), "guideline_version": guideline_version}
            if guidelines is not None:
                fields |= {"guidelines": guidelines, "guidelines_version": guideline_version}
        inc = {"new_reviews": 1, "reviews_total": 1} if new_review else None
        await tx.update_one(PROJECTS, {"_id": project_id}, set=fields, inc=inc, upsert=True)

    # -- training ----------------------------------------------------------------------------------------------

    async def retrain(self, project_id: str) -> int | None:
        """Train the project's model now if it has enough reviewed items; the new version, or None."""
        async with self._training:
            fitted = await self._fit(project_id, enforce_minimum=True)
            if fitted is None:
                return None
            version = await self._record(project_id, fitted)
            if self.remote is None and self.settings.score_waiting_items:
                async with self.store.transaction() as tx:
                    await unscored.score_waiting(tx, self.provider, project_id, self.name, UNSCORED_PER_VERSION)
            return version

    async def retrain_due(self) -> dict[str, int]:
        """Retrain every project the schedule says is due; project → the version made."""
        made: dict[str, int] = {}
        now = utcnow()
        for project in await self.store.find(PROJECTS, {"new_reviews": {"$gt": 0}}):
            project_id = str(project["_id"])
            new_reviews = int(project["new_reviews"])
            if self._untrainable.get(project_id) == new_reviews:
                continue
            since = _seconds_since(project.get("last_trained_at"), now)
            if not self.policy.due(new_reviews, since, project.get("trained_on")):
                continue
            if self.stopping.is_set():
                break
            version = await self.retrain(project_id)
            if version is None:
                self._untrainable[project_id] = new_reviews
            else:
                self._untrainable.pop(project_id, None)
                made[project_id] = version
        return made

    async def _retrain_loop(self) -> None:
        while not self.stopping.is_set():
            stopping = asyncio.ensure_future(self.stopping.wait())
            reviewed = asyncio.ensure_future(self._reviewed.wait())
            try:
                await asyncio.wait((stopping, reviewed), timeout=self.settings.retrain_check_s,
                                   return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopping.cancel()
                reviewed.cancel()
            if self.stopping.is_set():
                return
            self._reviewed.clear()
            try:
                await self.retrain_due()
            except Exception:
                log.exception("retraining failed; it will be tried again", extra={"service": self.name})

    async def _fit(self, project_id: str, *, enforce_minimum: bool) -> _Fitted | None:
        project = await self.store.find_one(PROJECTS, {"_id": project_id})
        if project is None or project.get("task") is None:
            return None
        task = TaskSpec.model_validate(project["task"])
        # Read the count before the examples: a review landing in between is trained on and still counted,
        # which costs at most one extra training; the other order could lose a review from the schedule.
        counted = int(project.get("new_reviews") or 0)
        docs = await self.store.find(
            EXAMPLES,
            {"project_id": project_id, "task_type": task.type.value},
            sort=[("first_reviewed_ts", 1), ("_id", 1)],
        )
        texts = [str(doc["text"]) for doc in docs]
        minimum = self.settings.min_train_examples if enforce_minimum else 1
        if task.type is TaskType.entities:
            return await self._fit_entities(project_id, project, task, counted, texts, docs, minimum)
        labels = [tuple(str(label) for label in doc["labels"]) for doc in docs]
        if not trainable(labels, task.type, minimum):
            TRAININGS.labels("not_enough_data").inc()
            return None
        try:
            model = await asyncio.to_thread(
                train, texts, labels, task.type, label_space=task.label_names, config=self.train_config
            )
        except TrainingError as exc:
            TRAININGS.labels("not_enough_data").inc()
            log.info("model not trained", extra={"project_id": project_id, "reason": str(exc)})
            return None
        return _Fitted(model, counted, project.get("guideline_version"))

    async def _fit_entities(
        self, project_id: str, project: Doc, task: TaskSpec, counted: int, texts: list[str], docs: list[Doc],
        minimum: int,
    ) -> _Fitted | None:
        spans = [tuple(Span.model_validate(span) for span in doc.get("spans") or ()) for doc in docs]
        if not entity_trainable(spans, minimum):
            TRAININGS.labels("not_enough_data").inc()
            return None
        try:
            model = await asyncio.to_thread(
                train_entities, texts, spans, label_space=task.label_names, config=self.entity_config
            )
        except EntityTrainingError as exc:
            TRAININGS.labels("not_enough_data").inc()
            log.info("entity model not trained", extra={"project_id": project_id, "reason": str(exc)})
            return None
        return _Fitted(model, counted, project.get("guideline_version"))

    async def _record(self, project_id: str, fitted: _Fitted) -> int:
        model = fitted.model
        model_id = LOCAL_ENTITY_MODEL_ID if isinstance(model, EntityModel) else LOCAL_MODEL_ID
        trained_at = utcnow()
        async with self.store.transaction() as tx:
            project = await tx.find_one(PROJECTS, {"_id": project_id})
            version = int((project or {}).get("model_version") or 0) + 1
            await tx.insert(
                MODEL_VERSIONS,
                {
                    "_id": f"{project_id}:{version}",
                    "project_id": project_id,
                    "version": version,
                    "model_id": model_id,
                    "task_type": model.task.value,
                    "guideline_version": fitted.guideline_version,
                    "trained_on": model.trained_on,
                    "holdout_accuracy": model.holdout_accuracy,
                    "train_seconds": model.train_seconds,
                    "trained_at": trained_at.isoformat(),
                    "labels": list(model.labels),
                },
            )
            await tx.update_one(
                PROJECTS,
                {"_id": project_id},
                set={
                    "model_version": version,
                    "last_trained_at": trained_at.isoformat(),
                    "trained_on": model.trained_on,
                },
                inc={"new_reviews": -fitted.counted},
            )
            event = ModelUpdated(
                producer=self.name,
                project_id=project_id,
                item_id=project_id,
                occurred_at=trained_at,
                model_id=model_id,
                model_version=version,
                trained_on=model.trained_on,
                holdout_accuracy=model.holdout_accuracy,
                train_seconds=model.train_seconds,
            )
            await tx.add_outbox(event.topic, event.key, encode(event), headers_for(event))
        self.local.install(project_id, version, model)
        TRAININGS.labels("ok").inc()
        TRAIN_SECONDS.observe(model.train_seconds)
        log.info(
            "model version trained",
            extra={"project_id": project_id, "version": version, "trained_on": model.trained_on,
                   "holdout_accuracy": model.holdout_accuracy, "train_seconds": round(model.train_seconds, 3)},
        )
        return version

    async def _restore(self, project: Doc) -> None:
        """Rebuild a project's model at start-up (see the module docstring for the version it gets)."""
        project_id = str(project["_id"])
        last = int(project["model_version"])
        async with self._training:
            fitted = await self._fit(project_id, enforce_minimum=False)
            if fitted is None:
                log.warning("model not rebuilt: no usable examples for the project's current task",
                            extra={"project_id": project_id, "version": last})
                return
            recorded = await self.store.find_one(MODEL_VERSIONS, {"project_id": project_id, "version": last})
            unchanged = (
                fitted.counted == 0
                and recorded is not None
                and recorded.get("trained_on") == fitted.model.trained_on
                and recorded.get("task_type") == fitted.model.task.value
            )
            if unchanged:
                self.local.install(project_id, last, fitted.model)
                log.info("model rebuilt", extra={"project_id": project_id, "version": last})
            else:
                await self._record(project_id, fitted)
