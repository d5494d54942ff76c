"""The router service: label.scored in, decision.made (and label.finalized for auto-accepts) out; reviewed
outcomes in, a per-project calibration (refitted in the background) that routing decisions apply; final labels
in, label issues (likely wrong finals) sent back to review; systematic errors of the AI for the read API."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Coroutine, Mapping
from typing import Any

from prometheus_client import Counter, Gauge

from labelgate_core.consumer import Handler, HandlerContext, on
from labelgate_core.events import (
    DecisionMade,
    DecisionOutcome,
    FinalSource,
    ItemSubmitted,
    LabelFinalized,
    LabelScored,
    Proposal,
    ReviewSubmitted,
    RoutingReason,
    TaskType,
)
from labelgate_core.service import Service
from labelgate_core.store.port import Doc, DuplicateKeyError, Index
from labelgate_core.topics import encode, headers_for
from labelgate_quality.calibration import Method, ProjectCalibration

from .calibration import FittedCalibration, calibration_from_doc, fit_from_outcomes
from .correctness import ai_was_right
from .label_issues import FinalScored, Suspect, suspicious_finals
from .policy import audit_draw, decide
from .settings import RouterSettings
from .systematic import SystematicErrors, systematic_errors

log = logging.getLogger(__name__)

PRODUCER = "router"
OUTCOMES = "outcomes"
CALIBRATIONS = "calibrations"
"""One document per project: the current calibration, its version, ECE and reliability curves."""
CALIBRATION_HISTORY = "calibration_history"
"""Every version ever fitted, for audits of past decisions."""
ITEMS = "items"
"""Per item with metadata: its scalar metadata fields, the slices systematic errors are broken down by."""
LEAKS = "leaks"
"""Per item whose proposal was flagged as a (near-)duplicate of the model's own examples: kept out of
calibration and of the systematic-error figures."""
FINALS = "finals"
"""Per item: its latest final label (auto or reviewed), the input of the label-issue search."""
LABEL_ISSUES = "label_issues"
"""One document per final label sent back to review as a likely label issue (``_id`` project:item:final)."""

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
UNRELIABLE_LABELS = Gauge(
    "labelgate_router_unreliable_labels", "Labels the AI is consistently wrong on, per reviewed outcomes", ["project"]
)
LABEL_ISSUES_FLAGGED = Counter(
    "labelgate_router_label_issues_total", "Final labels sent back to review as likely label issues", ["project"]
)


class ProjectNotFoundError(LookupError):
    status_code = 404

    def __init__(self, project_id: str) -> None:
        super().__init__(f"the router has no reviewed outcome of project {project_id!r}")
        self.project_id = project_id


class RouterService(Service):
    name = "router"

    def __init__(self, *, settings: RouterSettings | None = None, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.settings = settings or RouterSettings()
        self._calibrations: dict[str, tuple[int, ProjectCalibration]] = {}
        self._new_outcomes: dict[str, int] = {}
        self._fitted_on: dict[str, int] = {}
        """Project → the outcomes its current calibration was fitted on."""
        self._targets: dict[str, float | None] = {}
        self._retarget: set[str] = set()
        self._wakeup = asyncio.Event()
        self._unreliable: dict[str, frozenset[str]] = {}
        self._issues_checked: dict[str, int] = {}
        """Project → its count of finals when label issues were last searched: no new finals, no new search."""

    def subscriptions(self) -> Mapping[str, Mapping[str, Handler]]:
        return {
            "router.decide": dict([on(LabelScored, self.on_label_scored)]),
            "router.feedback": dict(
                [on(ReviewSubmitted, self.on_review_submitted), on(LabelFinalized, self.on_label_finalized)]
            ),
            "router.items": dict([on(ItemSubmitted, self.on_item_submitted)]),
        }

    async def setup(self) -> None:
        await self.store.ensure_indexes(
            "decisions", [Index(("project_id", "item_id")), Index(("scored_event_id",), unique=True)]
        )
        await self.store.ensure_indexes(OUTCOMES, [Index(("project_id", "reasons_key"))])
        await self.store.ensure_indexes(CALIBRATION_HISTORY, [Index(("project_id", "version"), unique=True)])
        for collection in (ITEMS, LEAKS, FINALS, LABEL_ISSUES):
            await self.store.ensure_indexes(collection, [Index(("project_id", "item_id"))])
        await self.load_calibrations()
        for doc in await self.store.find(CALIBRATIONS, {}):
            project_id = doc["_id"]
            unfitted = await self.store.count(OUTCOMES, {"project_id": project_id}) - int(doc.get("n_outcomes", 0))
            if unfitted > 0:  # reviewed while the router was down, or after the last fit
                self._new_outcomes[project_id] = unfitted

    def background(self) -> list[Coroutine[Any, Any, None]]:
        return [self._keep_calibrated(), self._search_label_issues()]

    # -- calibration ---------------------------------------------------------------------------------------

    def calibration(self, project_id: str) -> tuple[int, ProjectCalibration] | None:
        """The project's current calibration and its version; None before the first fit."""
        return self._calibrations.get(project_id)

    def unreliable_labels(self, project_id: str) -> frozenset[str]:
        """Labels the AI is consistently wrong on, as of the project's last calibration fit."""
        return self._unreliable.get(project_id, frozenset())

    async def load_calibrations(self) -> None:
        """Take every stored calibration newer than the one in memory (another router instance may fit too)."""
        for doc in await self.store.find(CALIBRATIONS, {}):
            version, calibration = calibration_from_doc(doc)
            current = self._calibrations.get(doc["_id"])
            if current is None or current[0] < version:
                self._calibrations[doc["_id"]] = (version, calibration)
                self._unreliable[doc["_id"]] = frozenset(doc.get("unreliable_labels") or ())
                self._fitted_on[doc["_id"]] = int(doc.get("n_outcomes", 0))
                _export(doc)

    async def refit(self, project_id: str) -> FittedCalibration:
        """Fit the project's calibration on all its reviewed outcomes and store it as a new version."""
        self._new_outcomes.pop(project_id, None)  # outcomes arriving during the fit count for the next one
        self._retarget.discard(project_id)
        docs = await self.store.find(OUTCOMES, {"project_id": project_id})
        leaked = {str(d["item_id"]) for d in await self.store.find(LEAKS, {"project_id": project_id})}
        # A leaked item's answer was memorised: it would flatter the calibration. It still counts as an outcome
        # for the refit schedule (``n_outcomes``).
        clean = [d for d in docs if d["item_id"] not in leaked]
        current = self._calibrations.get(project_id)
        target = self._targets.get(project_id, current[1].target_precision if current else None)
        fitted = await asyncio.to_thread(
            fit_from_outcomes, project_id, clean, version=0, target_precision=target,
            min_samples=self.settings.calibration_min_samples, fitted_at=time.time(),
            bound_level=self.settings.calibration_bound_level, method=Method(self.settings.calibration_method),
        )
        fitted = dataclasses.replace(fitted, n_outcomes=len(docs))
        errors = await asyncio.to_thread(self._systematic, docs, {}, leaked)
        async with self.store.transaction() as tx:
            stored = await tx.find_one(CALIBRATIONS, {"_id": project_id})
            fitted = dataclasses.replace(fitted, version=int(stored["version"]) + 1 if stored else 1)
            doc = {**fitted.to_doc(), "unreliable_labels": sorted(errors.unreliable_labels), "leaked": len(leaked)}
            await tx.update_one(CALIBRATIONS, {"_id": project_id}, set=doc, upsert=True)
            await tx.insert(CALIBRATION_HISTORY, {**doc, "_id": f"{project_id}/{fitted.version}"})
        self._calibrations[project_id] = (fitted.version, fitted.calibration)
        self._fitted_on[project_id] = len(docs)
        self._unreliable[project_id] = errors.unreliable_labels
        _export(doc)
        log.info("calibration fitted", extra={
            "project_id": project_id, "version": fitted.version, "outcomes": fitted.n_scored,
            "method": fitted.calibration.overall.method.value, "threshold": fitted.calibration.threshold,
            "target_precision": target, "ece_raw": fitted.ece_raw, "ece_calibrated": fitted.ece_calibrated,
        })
        return fitted

    def _outcome_recorded(self, project_id: str) -> None:
        self._new_outcomes[project_id] = self._new_outcomes.get(project_id, 0) + 1
        if self._refit_due(project_id, self._new_outcomes[project_id]):
            self._wakeup.set()

    def _refit_due(self, project_id: str, new_outcomes: int) -> bool:
        """After ``calibration_every_outcomes`` new outcomes, or once they reach ``calibration_growth`` times what
        the current fit rests on (at least ``calibration_min_samples``): a young calibration, fitted on a few
        dozen outcomes, is refitted after a handful more, as a young model is retrained."""
        if new_outcomes >= self.settings.calibration_every_outcomes:
            return True
        base = max(self._fitted_on.get(project_id, 0), self.settings.calibration_min_samples)
        return self.settings.calibration_growth > 0 and new_outcomes >= self.settings.calibration_growth * base

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
        due = {p for p, n in self._new_outcomes.items() if self._refit_due(p, n) or (timed and n > 0)}
        return due | self._retarget

    async def _keep_calibrated(self) -> None:
        """Refit a project when ``_refit_due`` says so, or when its target changes, at once; every
        ``calibration_interval_s``, refit whatever got any new outcome and reload stored fits."""
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
        decision = decide(
            event.proposal, event.task, event.routing, draw, calibration, gold=event.gold,
            unreliable=self._unreliable.get(event.project_id, frozenset()),
        )
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
                "scores": dict(event.proposal.scores),
                "leakage": event.proposal.leakage,
                "proposal": event.proposal.model_dump(mode="json"),
                "submitted_at": event.submitted_at.isoformat(),
                "task_type": event.task.type.value,
                "label_names": list(event.task.label_names),
            },
        )
        if event.proposal.leakage is not None:
            await ctx.tx.update_one(
                LEAKS,
                {"_id": f"{event.project_id}:{event.item_id}"},
                set={"project_id": event.project_id, "item_id": event.item_id, "kind": event.proposal.leakage},
                upsert=True,
            )
        await ctx.emit(made)
        if decision.auto_accepted:
            await ctx.emit(
                LabelFinalized(
                    **made.caused(),
                    producer=PRODUCER,
                    labels=event.proposal.labels,
                    spans=event.proposal.spans,
                    boxes=event.proposal.boxes,
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
                "correct": ai_was_right(event),
                "reasons_key": ",".join(sorted(r.value for r in event.decision_reasons)),
                "guideline_version": event.guideline_version,
                "reviewed_ts": event.occurred_at.timestamp(),
            },
            upsert=True,
        )
        project_id = event.project_id
        ctx.after_commit(lambda: self._outcome_recorded(project_id))

    async def on_item_submitted(self, event: ItemSubmitted, ctx: HandlerContext) -> None:
        """Keep the item's scalar metadata: the slices its reviewed outcome is broken down by."""
        fields = {k: v for k, v in event.metadata.items() if isinstance(v, str | int)}  # bool is an int
        if not fields:
            return
        await ctx.tx.update_one(
            ITEMS,
            {"_id": f"{event.project_id}:{event.item_id}"},
            set={"project_id": event.project_id, "item_id": event.item_id, "metadata": fields},
            upsert=True,
        )

    async def on_label_finalized(self, event: LabelFinalized, ctx: HandlerContext) -> None:
        """Keep each item's newest final label (a re-review replaces it): what label issues are searched in."""
        key = f"{event.project_id}:{event.item_id}"
        existing = await ctx.tx.find_one(FINALS, {"_id": key})
        if existing is not None and float(existing["finalized_ts"]) > event.occurred_at.timestamp():
            return  # an older final arriving late: the newer one stands
        if existing is not None and existing["source"] == FinalSource.review.value and event.source is FinalSource.auto:
            return  # a late score of an item a human already labeled: the review API keeps the human's label too
        await ctx.tx.update_one(
            FINALS,
            {"_id": key},
            set={
                "project_id": event.project_id,
                "item_id": event.item_id,
                "final_id": event.event_id,
                "labels": list(event.labels),
                "source": event.source.value,
                "gold": event.gold,
                "finalized_ts": event.occurred_at.timestamp(),
            },
            upsert=True,
        )

    # -- systematic errors and label issues ----------------------------------------------------------------

    def _systematic(
        self, outcomes: list[Doc], metadata: Mapping[str, Mapping[str, Any]], leaked: set[str]
    ) -> SystematicErrors:
        return systematic_errors(
            outcomes, metadata, leaked,
            min_support=self.settings.unreliable_min_support, min_accuracy=self.settings.unreliable_min_accuracy,
        )

    async def systematic_errors(self, project_id: str) -> SystematicErrors:
        """Confusion of AI and human labels and per-label (and per-slice) AI accuracy, from reviewed outcomes."""
        outcomes = await self.store.find(OUTCOMES, {"project_id": project_id})
        if not outcomes:
            raise ProjectNotFoundError(project_id)
        leaked = {str(d["item_id"]) for d in await self.store.find(LEAKS, {"project_id": project_id})}
        metadata = {
            str(d["item_id"]): d.get("metadata") or {} for d in await self.store.find(ITEMS, {"project_id": project_id})
        }
        return await asyncio.to_thread(self._systematic, outcomes, metadata, leaked)

    async def find_label_issues(self, project_id: str) -> list[Suspect]:
        """Search the project's final labels for likely errors and send at most ``label_issue_max_per_run`` of
        them back to review (``decision.made``, needs_review, reason ``label_issue``); each final at most once.

        The scores are those of the item's latest proposal made before its final label: out-of-sample, as the
        model learns from reviews. A final a human gave while looking at a label-issue flag is not flagged
        again, nor are gold items (their label is the known answer) or leaked ones."""
        finals = await self.store.find(FINALS, {"project_id": project_id})
        self._issues_checked[project_id] = len(finals)
        decisions = await self.store.find(
            "decisions", {"project_id": project_id}, sort=[("decided_at", 1)]
        )
        flagged = {str(d["final_id"]) for d in await self.store.find(LABEL_ISSUES, {"project_id": project_id})}
        seen_flag = {
            str(d["item_id"])
            for d in await self.store.find(OUTCOMES, {"project_id": project_id})
            if RoutingReason.label_issue.value in str(d.get("reasons_key", "")).split(",")
        }
        by_item: dict[str, list[Doc]] = {}
        for d in decisions:
            by_item.setdefault(str(d["item_id"]), []).append(d)
        candidates: list[FinalScored] = []
        basis: dict[str, Doc] = {}
        classes: list[str] = []
        for final in finals:
            item_id = str(final["item_id"])
            labels = final.get("labels") or []
            if final.get("gold") or item_id in seen_flag or len(labels) != 1:
                continue
            scored = [
                d for d in by_item.get(item_id, [])
                if d.get("scores") and d.get("task_type") == TaskType.classification.value
                and float(d["decided_at"]) <= float(final["finalized_ts"]) and d.get("leakage") is None
            ]
            if not scored:
                continue
            decision = scored[-1]
            classes = list(decision.get("label_names") or classes)
            candidates.append(FinalScored(item_id, str(final["final_id"]), str(labels[0]), dict(decision["scores"])))
            basis[item_id] = decision
        suspects = await asyncio.to_thread(
            suspicious_finals, candidates, classes, skip=flagged,
            limit=self.settings.label_issue_max_per_run, min_finals=self.settings.label_issue_min_finals,
        )
        sent: list[Suspect] = []
        for suspect in suspects:
            if await self._send_back(project_id, suspect, basis[suspect.final.item_id]):
                sent.append(suspect)
        if sent:
            LABEL_ISSUES_FLAGGED.labels(project_id).inc(len(sent))
            log.info("label issues sent back to review", extra={"project_id": project_id, "items": len(sent)})
        return sent

    async def _send_back(self, project_id: str, suspect: Suspect, decision: Doc) -> bool:
        final = suspect.final
        made = DecisionMade(
            producer=PRODUCER,
            project_id=project_id,
            item_id=final.item_id,
            causation_id=final.final_id,
            outcome=DecisionOutcome.needs_review,
            reasons=(RoutingReason.label_issue,),
            proposal=Proposal.model_validate(decision["proposal"]),
            guideline_version=int(decision["guideline_version"]),
            submitted_at=decision["submitted_at"],
            calibrated_confidence=decision.get("calibrated_confidence"),
            calibration_version=decision.get("calibration_version"),
            threshold=decision.get("threshold"),
        )
        try:
            async with self.store.transaction() as tx:
                await tx.insert(
                    LABEL_ISSUES,
                    {
                        "_id": f"{project_id}:{final.item_id}:{final.final_id}",
                        "project_id": project_id,
                        "item_id": final.item_id,
                        "final_id": final.final_id,
                        "label": final.label,
                        "suggested": suspect.suggested,
                        "label_quality": suspect.label_quality,
                        "decision_id": made.event_id,
                        "flagged_at": made.occurred_at.timestamp(),
                    },
                )
                await tx.add_outbox(made.topic, made.key, encode(made), headers_for(made))
        except DuplicateKeyError:
            return False  # another router instance flagged this final first
        return True

    async def _search_label_issues(self) -> None:
        """Every ``label_issue_interval_s``, search each project that got new final labels since its last search."""
        while not self.stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), self.settings.label_issue_interval_s)
            if self.stopping.is_set():
                return
            try:
                projects = {str(d["project_id"]) for d in await self.store.find(CALIBRATIONS, {})}
                for project_id in sorted(projects):
                    count = await self.store.count(FINALS, {"project_id": project_id})
                    if count >= self.settings.label_issue_min_finals and count != self._issues_checked.get(project_id):
                        await self.find_label_issues(project_id)
            except Exception:
                log.exception("label-issue search failed; it runs again at the next interval")


def _export(doc: Mapping[str, Any]) -> None:
    project = doc["project_id"]
    CALIBRATION_VERSION.labels(project).set(doc["version"])
    if doc.get("ece_calibrated") is not None:
        CALIBRATION_ECE.labels(project).set(doc["ece_calibrated"])
    if doc.get("ece_raw") is not None:
        RAW_ECE.labels(project).set(doc["ece_raw"])
    UNRELIABLE_LABELS.labels(project).set(len(doc.get("unreliable_labels") or ()))
