"""Leakage checks of the labeler: is an item to label an exact or near duplicate of an item the project's model
learned from (its reviewed items)? Such a proposal repeats a memorised answer; it is flagged on the proposal so
that the router keeps it out of calibration and reports it.

One index per project, held in memory: loaded from the stored examples on the project's first check after a
start, then grown by each committed review."""

from __future__ import annotations

import asyncio
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
        self._loading = asyncio.Lock()

    def _new_index(self) -> LeakIndex:
        return LeakIndex(threshold=self._threshold, max_chars=self._max_chars)

    async def _index(self, reader: Reader, project_id: str) -> LeakIndex:
        index = self._indexes.get(project_id)
        if index is not None:
            return index
        async with self._loading:
            index = self._indexes.get(project_id)
            if index is None:
                docs = await reader.find(self._collection, {"project_id": project_id})
                index = self._new_index()
                index.add({str(doc["_id"]): str(doc.get("text") or "") for doc in docs})
                self._indexes[project_id] = index
        return index

    async def check(self, reader: Reader, project_id: str, text: str) -> LeakageKind | None:
        """``exact`` or ``near`` when ``text`` duplicates one of the project's training items; else None."""
        if not text.strip():
            return None
        leak = (await self._index(reader, project_id)).check(text)
        if leak is None:
            return None
        return "exact" if leak.kind.value == "exact" else "near"

    def add(self, project_id: str, example_id: str, text: str) -> None:
        """A reviewed item became training data (call once its review is committed)."""
        index = self._indexes.get(project_id)
        if index is not None:  # not loaded yet: the first check loads it from the store, this one included
            index.add({example_id: text})
