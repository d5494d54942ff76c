"""The label-provider port (anything that proposes labels for an item) and the local model behind it.

A provider answers one item at a time and never blocks the event loop for long; the service measures each
call's latency and publishes the proposal. Language-model providers and ensembles implement the same
protocol."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

from labelgate_core.events import ImageRef, Proposal, TaskSpec

from .model import TrainedModel
from .ner import EntityModel

log = logging.getLogger(__name__)

LOCAL_MODEL_ID = "local-tfidf-linear"
LOCAL_ENTITY_MODEL_ID = "local-crf"
"""The local model of entity tasks (a CRF, see ``ner``): its proposals and versions carry this id."""


@dataclass(frozen=True, slots=True)
class LabelRequest:
    """What a provider needs to label one item."""

    project_id: str
    item_id: str
    text: str
    task: TaskSpec
    guideline_version: int
    image: ImageRef | None = None
    """Boxes tasks: the image to draw boxes on."""


class LabelProvider(Protocol):
    @property
    def model_id(self) -> str: ...

    @property
    def runs_in_transaction(self) -> bool:
        """True when ``propose`` does no network I/O and may run inside the consumer's store transaction (the
        local model). Otherwise the labeler calls it outside any transaction (see ``llm.jobs``)."""
        ...

    async def propose(self, request: LabelRequest) -> Proposal:
        """A proposal for the item; ``confidence=None`` when the provider cannot score it (it goes to review).
        Raise ``labelgate_core.errors.RetriableError`` for a transient failure."""
        ...


@dataclass(frozen=True, slots=True)
class ModelVersion:
    version: int
    model: TrainedModel | EntityModel


class LocalModelProvider:
    """The offline provider: one model per project, held in memory: TF-IDF + a linear classifier (an SVM by
    default) for classification and multi-label, a CRF for entities.

    A project without a model (cold start), or whose model was trained for another task type, gets a
    proposal with no labels and no confidence, so a human labels it and the model learns from that."""

    model_id = LOCAL_MODEL_ID
    runs_in_transaction = True

    def __init__(self) -> None:
        self._models: dict[str, ModelVersion] = {}

    def install(self, project_id: str, version: int, model: TrainedModel | EntityModel) -> None:
        """Serve ``model`` for the project from now on (a reference swap: predictions in flight are unharmed)."""
        self._models[project_id] = ModelVersion(version, model)

    def current(self, project_id: str) -> ModelVersion | None:
        return self._models.get(project_id)

    def cold_start(self) -> Proposal:
        return Proposal(model_id=self.model_id, model_version=0, labels=(), confidence=None)

    async def propose(self, request: LabelRequest) -> Proposal:
        current = self._models.get(request.project_id)
        if current is None or current.model.task is not request.task.type:
            return self.cold_start()
        if isinstance(current.model, EntityModel):
            return self._propose_entities(request, current.version, current.model)
        try:
            prediction = current.model.predict(request.text, request.task.label_names)
        except Exception:
            # A model that cannot score an item must not hold the item back: a human labels it instead.
            log.exception(
                "local model failed to predict; proposing without confidence",
                extra={"project_id": request.project_id, "item_id": request.item_id, "version": current.version},
            )
            return self.cold_start()
        return Proposal(
            model_id=self.model_id,
            model_version=current.version,
            labels=prediction.labels,
            confidence=prediction.confidence,
            scores=prediction.scores,
            cost_usd=0.0,
            method="local_model" if prediction.confidence is not None else None,
        )

    def _propose_entities(self, request: LabelRequest, version: int, model: EntityModel) -> Proposal:
        """Spans with their own confidence; the item's confidence is the probability of the whole tag sequence
        (see ``ner``). ``scores`` holds, per entity type, the confidence of its least certain span."""
        try:
            prediction = model.predict(request.text, request.task.label_names)
        except Exception:
            log.exception(
                "entity model failed to predict; proposing without confidence",
                extra={"project_id": request.project_id, "item_id": request.item_id, "version": version},
            )
            return self.cold_start()
        scores: dict[str, float] = {}
        for span in prediction.spans:
            if span.confidence is not None:
                scores[span.label] = min(scores.get(span.label, 1.0), span.confidence)
        return Proposal(
            model_id=LOCAL_ENTITY_MODEL_ID,
            model_version=version,
            labels=prediction.labels,
            confidence=prediction.confidence,
            scores=scores,
            spans=prediction.spans,
            cost_usd=0.0,
            method="local_model",
        )
