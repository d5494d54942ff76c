"""Leakage checks of the labeler: is an item to label an exact or near duplicate of an item the project's model
learned from (its reviewed items), or that a language model may have been shown as a few-shot example (drawn
from the same reviewed items)? Such a proposal repeats a memorised answer; it is flagged on the proposal, on
both the local-model and the language-model path, so that the router keeps it out of calibration and reports it.

One index per project, held in memory: loaded from the stored examples at start-up, then grown by each
committed review."""

from __future__ import annotations

from typing import Literal

from labelgate_core.store.port import Reader
from labelgate_quality.leakage import LeakIndex

LeakageKind = Literal["exact", "near"]


class TrainingLeaks:
    def __init__(self, examples_collection: str, *, threshold: float = 0.8, max_chars: int = 4000) -> None:
        self._collection = examples_collection
        self._threshold = threshold
        self._max_chars = max_chars
        self._indexes: dict[str, LeakIndex] = {}

    def _index(self, project_id: str) -> LeakIndex:
        index = self._indexes.get(project_id)
        if index is None:
            index = self._indexes[project_id] = LeakIndex(threshold=self._threshold, max_chars=self._max_chars)
        return index

    async def load(self, reader: Reader) -> None:
        """Index every stored training item (at start-up, before any item is labeled)."""
        for doc in await reader.find(self._collection, {}):
            self._index(str(doc["project_id"])).add({str(doc["_id"]): str(doc.get("text") or "")})

    def check(self, project_id: str, text: str) -> LeakageKind | None:
        """``exact`` or ``near`` when ``text`` duplicates one of the project's training items; else None.

        Synchronous on purpose: a handler that awaited here could let a later item of another partition
        overtake this one."""
        index = self._indexes.get(project_id)
        if index is None or not text.strip():
            return None
        leak = index.check(text)
        if leak is None:
            return None
        return "exact" if leak.kind.value == "exact" else "near"

    def add(self, project_id: str, example_id: str, text: str) -> None:
        """A reviewed item became training data (call once its review is committed)."""
        self._index(project_id).add({example_id: text})
