"""Few-shot examples for a prompt: the project's reviewed items most similar to the item (TF-IDF cosine),
reviewers' corrections first among near-equals, since they show the model where it goes wrong."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer

from .prompt import Example

CORRECTION_BONUS = 0.15
"""Added to a correction's cosine similarity: a correction slightly less similar still comes first."""


@dataclass
class _Index:
    built_at: float
    examples: list[Example]
    vectorizer: TfidfVectorizer | None
    matrix: Any


Loader = Callable[[str, str], Awaitable[Sequence[Example]]]
"""(project id, task type) → the project's reviewed items of that task type."""


class FewShotBank:
    def __init__(self, load: Loader, *, refresh_s: float = 5.0, max_pool: int = 5_000) -> None:
        self._load = load
        self._refresh_s = refresh_s
        self._max_pool = max_pool
        self._indexes: dict[tuple[str, str], _Index] = {}

    async def select(self, project_id: str, task_type: str, text: str, k: int) -> list[Example]:
        if k <= 0:
            return []
        index = await self._index(project_id, task_type)
        if not index.examples:
            return []
        candidates = [i for i, example in enumerate(index.examples) if example.text != text]
        if index.vectorizer is None or index.matrix is None:
            ranked = candidates[::-1]  # no vocabulary: most recent first
        else:
            query = index.vectorizer.transform([text])
            similarity = np.asarray((index.matrix @ query.T).toarray()).ravel()
            score = {i: float(similarity[i]) + (CORRECTION_BONUS if index.examples[i].corrected else 0.0)
                     for i in candidates}
            ranked = sorted(candidates, key=lambda i: (-score[i], -i))
        return [index.examples[i] for i in ranked[:k]]

    async def _index(self, project_id: str, task_type: str) -> _Index:
        key = (project_id, task_type)
        now = time.monotonic()
        index = self._indexes.get(key)
        if index is not None and now - index.built_at < self._refresh_s:
            return index
        examples = list(await self._load(project_id, task_type))[-self._max_pool :]
        vectorizer: TfidfVectorizer | None = None
        matrix: Any = None
        if examples:
            vectorizer = TfidfVectorizer(sublinear_tf=True, strip_accents="unicode", dtype=np.float32)
            try:
                matrix = vectorizer.fit_transform([example.text for example in examples])
            except ValueError:  # no words at all
                vectorizer, matrix = None, None
        index = _Index(now, examples, vectorizer, matrix)
        self._indexes[key] = index
        return index
