"""The router service: label.scored in, decision.made (and label.finalized for auto-accepts) out; reviewed
outcomes in, a per-project calibration (refitted in the background) that routing decisions apply."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Coroutine, Mapping
from typing import Any

from prometheus_client import Gauge

from labelgate_core.consumer import Handler, HandlerContext, on
from labelgate_core.events import (
    DecisionMade,
    FinalSource,
    LabelFinalized,
    LabelScored,
    ReviewSubmitted,
)
from labelgate_core.service import Service
from labelgate_core.store.port import Index
from labelgate_quality.calibration import ProjectCalibration

from .calibration import FittedCalibration, calibration_from_doc, fit_from_outcomes
from .policy import audit_draw, decide
from .settings import RouterSettings

log = logging.getLogger(__name__)

PRODUCER = "router"
OUTCOMES = "outcomes"
CALIBRATIONS = "calibrations"
"""One document per project: the current calibration, its version, ECE and reliability curves."""
CALIBRATION_HISTORY = "calibration_history"
"""Every version ever fitted, for audits of past decisions."""

CALIBRATION_ECE = Gauge(
    "labelgate_router_calibration_ece",
    "Expected calibration error of the out-of-fold calibrated confidence on the project's reviewed outcomes",
    ["project"],
)
RAW_ECE = Gauge(
    "labelgate_router_raw_confidence_ece",
    "Expected calibration error of the raw model confidence on the project's reviewed outcomes",
    ["project"],
)
CALIBRATION_VERSION = Gauge("labelgate_router_calibration_version", "Version of the project's calibration", ["project"])


class RouterService(Service):
    name = "router"

    def __init__(self, *, settings: RouterSettings | None = None, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.settings = settings or RouterSettings()
        self._calibrations: dict[str, tuple[int, ProjectCalibration]] = {}
        self._new_outcomes: dict[str, int] = {}
        self._targets: dict[str, float | None] = {}
        self._retarget: set[str] = set()
        self._wakeup = asyncio.Event()

    def subscriptions(self) -> Mapping[str, Mapping[str, Handler]]:
        return {
            "router.decide": dict([on(LabelScored, self.on_label_scored)]),
            "router.feedback": dict([on(ReviewSubmitted, self.on_review_submitted)]),
        }

    async def setup(self) -> None:
        await self.store.ensure_indexes(
            "decisions", [Index(("project_id", "item_id")), Index(("scored_event_id",), unique=True)]
        )
        await self.store.ensure_indexes(OUTCOMES, [Index(("project_id", "reasons_key"))])
        await self.store.ensure_indexes(CALIBRATION_HISTORY, [Index(("project_id", "version"), unique=True)])
        await self.load_calibrations()
        for doc in await self.store.find(CALIBRATIONS, {}):
            project_id = doc["_id"]
            unfitted = await self.store.count(OUTCOMES, {"project_id": project_id}) - int(doc.get("n_outcomes", 0))
            if unfitted > 0:  # reviewed while the router was down, or after the last fit
                self._new_outcomes[project_id] = unfitted

    def background(self) -> list[Coroutine[Any, Any, None]]:
        return [self._keep_calibrated()]

    # -- calibration ---------------------------------------------------------------------------------------

    def calibration(self, project_id: str) -> tuple[int, ProjectCalibration] | None:
        """The project's current calibration and its version; None before the first fit."""
        return self._calibrations.get(project_id)

    async def load_calibrations(self) -> None:
        """Take every stored calibration newer than the one in memory (another router instance may fit too)."""
        for doc in await self.store.find(CALIBRATIONS, {}):
            version, calibration = calibration_from_doc(doc)
            current = self._calibrations.get(doc["_id"])
            if current is None or current[0] < version:
                self._calibrations[doc["_id"]] = (version, calibration)
                _export(doc)

    async def refit(self, project_id: str) -> FittedCalibration:
        """Fit the project's calibration on all its reviewed outcomes and store it as a new version."""
        self._new_outcomes.pop(project_id, None)  # outcomes arriving during the fit count for the next one
        self._retarget.discard(project_id)
        docs = await self.store.find(OUTCOMES, {"project_id": project_id})
        current = self._calibrations.get(project_id)
        target = self._targets.get(project_id, current[1].target_precision if current else None)
        fitted = await asyncio.to_thread(
            fit_from_outcomes, project_id, docs, version=0, target_precision=target,
            min_samples=self.settings.calibration_min_samples, fitted_at=time.time(),
        )
        async with self.store.transaction() as tx:
            stored = await tx.find_one(CALIBRATIONS, {"_id": project_id})
            fitted = dataclasses.replace(fitted, version=int(stored["version"]) + 1 if stored else 1)
            doc = fitted.to_doc()
            await tx.update_one(CALIBRATIONS, {"_id": project_id}, set=doc, upsert=True)
            await tx.insert(CALIBRATION_HISTORY, {**doc, "_id": f"{project_id}/{fitted.version}"})
        self._calibrations[project_id] = (fitted.version, fitted.calibration)
        _export(doc)
        log.info("calibration fitted", extra={
            "project_id": project_id, "version": fitted.version, "outcomes": fitted.n_scored,
            "method": fitted.calibration.overall.method.value, "threshold": fitted.calibration.threshold,
            "target_precision": target, "ece_raw": fitted.ece_raw, "ece_calibrated": fitted.ece_calibrated,
        })
        return fitted

    def _outcome_recorded(self, project_id: str) -> None:
        self._new_outcomes[project_id] = self._new_outcomes.get(project_id, 0) + 1
        if self._new_outcomes[project_id] >= self.settings.calibration_every_outcomes:
            self._wakeup.set()

    def _note_target(self, project_id: str, target: float | None) -> None:
        """A project's target precision as its newest items carry it; a calibration fitted for another target
        is refitted at once (until then no threshold is known to reach the new one)."""
        if project_id in self._targets and self._targets[project_id] == target:
            return
        self._targets[project_id] = target
        current = self._calibrations.get(project_id)
        if current is not None and current[1].target_precision != target:
            self._retarget.add(project_id)
            self._wakeup.set()

    def _due(self, timed: bool) -> set[str]:
        every = self.settings.calibration_every_outcomes
        due = {p for p, n in self._new_outcomes.items() if n >= every or (timed and n > 0)}
        return due | self._retarget

    async def _keep_calibrated(self) -> None:
        """Refit a project after ``calibration_every_outcomes`` new outcomes, or when its target changes, at
        once; every ``calibration_interval_s``, refit whatever got any new outcome and reload stored fits."""
        stopping = asyncio.create_task(self.stopping.wait())
        last_timed = time.monotonic()
        try:
            while not self.stopping.is_set():
                wakeup = asyncio.create_task(self._wakeup.wait())
                await asyncio.wait({wakeup, stopping}, timeout=self.settings.calibration_interval_s,
                                   return_when=asyncio.FIRST_COMPLETED)
                wakeup.cancel()
                if self.stopping.is_set():
                    return
                self._wakeup.clear()
                timed = time.monotonic() - last_timed >= self.settings.calibration_interval_s
                if timed:
                    last_timed = time.monotonic()
                for project_id in sorted(self._due(timed)):
                    try:
                        await self.refit(project_id)
                    except Exception:
                        log.exception("calibration fit failed", extra={"project_id": project_id})
                if timed:
                    try:
                        await self.load_calibrations()
                    except Exception:
                        log.exception("loading calibrations failed")
        finally:
            stopping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stopping

    # -- consumers -----------------------------------------------------------------------------------------

    async def on_label_scored(self, event: LabelScored, ctx: HandlerContext) -> None:
        self._note_target(event.project_id, event.routing.target_precision)
        draw = audit_draw(self.settings.audit_seed, event.project_id, event.item_id)
        current = self._calibrations.get(event.project_id)
        version, calibration = current if current else (None, None)
        decision = decide(event.proposal, event.task, event.routing, draw, calibration)
        made = DecisionMade(
            **event.caused(),
            producer=PRODUCER,
            outcome=decision.outcome,
            reasons=decision.reasons,
            proposal=event.proposal,
            guideline_version=event.guideline_version,
            submitted_at=event.submitted_at,
            calibrated_confidence=decision.calibrated_confidence,
            calibration_version=version if decision.calibrated_confidence is not None else None,
            threshold=decision.threshold,
        )
        await ctx.tx.insert(
            "decisions",
            {
                "_id": made.event_id,
                "scored_event_id": event.event_id,
                "project_id": event.project_id,
                "item_id": event.item_id,
                "outcome": decision.outcome.value,
                "reasons": [r.value for r in decision.reasons],
                "confidence": event.proposal.confidence,
                "calibrated_confidence": decision.calibrated_confidence,
                "calibration_version": made.calibration_version,
                "threshold": decision.threshold,
                "labels": list(event.proposal.labels),
                "model_version": event.proposal.model_version,
                "guideline_version": event.guideline_version,
                "decided_at": made.occurred_at.timestamp(),
            },
        )
        await ctx.emit(made)
        if decision.auto_accepted:
            await ctx.emit(
                LabelFinalized(
                    **made.caused(),
                    producer=PRODUCER,
                    labels=event.proposal.labels,
                    source=FinalSource.auto,
                    guideline_version=event.guideline_version,
                    model_id=event.proposal.model_id,
                    model_version=event.proposal.model_version,
                    confidence=event.proposal.confidence,
                    submitted_at=event.submitted_at,
                )
            )

    async def on_review_submitted(self, event: ReviewSubmitted, ctx: HandlerContext) -> None:
        """Keep each reviewed outcome (AI said, human said, at what confidence): the data calibration learns
        from. A re-review of an item replaces its outcome.

        Every review counts (audits, cold start, low confidence), so the outcomes over-represent confidences
        below the threshold: calibration conditions on the confidence, so the curve stays unbiased where there
        are outcomes, but precision above a candidate threshold is estimated mostly from the items just above
        it, which errs on the cautious side."""
        await ctx.tx.update_one(
            OUTCOMES,
            {"_id": f"{event.project_id}:{event.item_id}"},
            set={
                "project_id": event.project_id,
                "item_id": event.item_id,
                "ai_labels": list(event.ai_labels),
                "labels": list(event.labels),
                "confidence": event.ai_confidence,
                "correct": sorted(event.ai_labels) == sorted(event.labels),
                "reasons_key": ",".join(sorted(r.value for r in event.decision_reasons)),
                "guideline_version": event.guideline_version,
                "reviewed_ts": event.occurred_at.timestamp(),
            },
            upsert=True,
        )
        project_id = event.project_id
        ctx.after_commit(lambda: self._outcome_recorded(project_id))


def _export(doc: Mapping[str, Any]) -> None:
    project = doc["project_id"]
    CALIBRATION_VERSION.labels(project).set(doc["version"])
    if doc.get("ece_calibrated") is not None:
        CALIBRATION_ECE.labels(project).set(doc["ece_calibrated"])
    if doc.get("ece_raw") is not None:
        RAW_ECE.labels(project).set(doc["ece_raw"])
