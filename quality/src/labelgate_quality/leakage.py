"""Leakage: items that are exact or near duplicates of few-shot examples or training data. Such items are
flagged and kept out of gold and calibration sets, where a memorised answer would flatter the model.

Exact duplicates share the hash of their normalised text (Unicode NFKC, case-folded, punctuation dropped,
whitespace collapsed). Near duplicates have a Jaccard similarity of character 5-gram shingles (of the
normalised text) at or above a threshold. Jaccard is computed exactly with sparse matrix products, in chunks:
fine for thousands of items against tens of thousands of references; beyond that, put a MinHash/LSH index
in front of it.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np
from sklearn.feature_extraction.text import CountVectorizer

_PUNCTUATION = re.compile(r"[^\w\s]", re.UNICODE)
_SPACES = re.compile(r"\s+")


def normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).casefold()
    return _SPACES.sub(" ", _PUNCTUATION.sub(" ", text)).strip()


def text_hash(text: str) -> str:
    """Hex SHA-256 of the normalised text: equal for texts that differ only in case, spacing, punctuation."""
    return hashlib.sha256(normalise(text).encode()).hexdigest()


class LeakKind(StrEnum):
    exact = "exact"
    near = "near"


@dataclass(frozen=True, slots=True)
class Leak:
    item_id: Hashable
    reference_id: Hashable
    kind: LeakKind
    jaccard: float


def find_leaks(
    items: Mapping[Any, str],
    reference: Mapping[Any, str],
    *,
    threshold: float = 0.8,
    shingle: int = 5,
    chunk: int = 512,
) -> list[Leak]:
    """For each item, its closest reference text when it is an exact or near (Jaccard ≥ ``threshold``)
    duplicate; one leak per leaking item, exact matches first."""
    if not 0.0 < threshold <= 1.0:
        raise ValueError("threshold must be in (0, 1]")
    leaks: dict[Hashable, Leak] = {}
    by_hash: dict[str, Hashable] = {}
    for ref_id, text in reference.items():
        by_hash.setdefault(text_hash(text), ref_id)
    for item_id, text in items.items():
        ref = by_hash.get(text_hash(text))
        if ref is not None:
            leaks[item_id] = Leak(item_id, ref, LeakKind.exact, 1.0)

    rest = [(i, normalise(t)) for i, t in items.items() if i not in leaks]
    refs = [(r, normalise(t)) for r, t in reference.items()]
    rest = [(i, t) for i, t in rest if t]
    refs = [(r, t) for r, t in refs if t]
    if rest and refs:
        # Pad short texts so that every non-empty text has at least one shingle.
        def pad(t: str) -> str:
            return t.ljust(shingle)

        vectorizer = CountVectorizer(analyzer="char", ngram_range=(shingle, shingle), binary=True, lowercase=False)
        vectorizer.fit([pad(t) for _, t in refs] + [pad(t) for _, t in rest])
        ref_matrix: Any = vectorizer.transform([pad(t) for _, t in refs])
        ref_sizes = np.asarray(ref_matrix.sum(axis=1)).ravel()
        for start in range(0, len(rest), chunk):
            batch = rest[start : start + chunk]
            item_matrix: Any = vectorizer.transform([pad(t) for _, t in batch])
            sizes = np.asarray(item_matrix.sum(axis=1)).ravel()
            inter = np.asarray((item_matrix @ ref_matrix.T).toarray(), dtype=np.float64)
            union = sizes[:, None] + ref_sizes[None, :] - inter
            jaccard = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
            best = jaccard.argmax(axis=1)
            for row, (item_id, _) in enumerate(batch):
                score = float(jaccard[row, best[row]])
                if score >= threshold:
                    leaks[item_id] = Leak(item_id, refs[int(best[row])][0], LeakKind.near, score)
    return sorted(leaks.values(), key=lambda leak: (leak.kind is not LeakKind.exact, -leak.jaccard))


def duplicate_groups(texts: Mapping[Any, str]) -> list[list[Hashable]]:
    """Groups (of two or more) of items whose normalised texts are identical, in input order."""
    groups: dict[str, list[Hashable]] = {}
    for item_id, text in texts.items():
        groups.setdefault(text_hash(text), []).append(item_id)
    return [ids for ids in groups.values() if len(ids) > 1]


class LeakIndex:
    """Look-ups of one text at a time against a growing reference set (a model's training items, few-shot
    examples): exact duplicates by hash, near duplicates by Jaccard of hashed character shingles.

    ``find_leaks`` compares batches; a labeler checks each item as it arrives, so this index hashes the
    shingles (no vocabulary to refit when references are added) and compares the first ``max_chars``
    normalised characters, which bounds the cost of one check however long texts are. Hash collisions in
    2**22 buckets move a Jaccard by far less than any useful threshold."""

    def __init__(self, *, threshold: float = 0.8, shingle: int = 5, max_chars: int = 4000) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError("threshold must be in (0, 1]")
        from sklearn.feature_extraction.text import HashingVectorizer

        self.threshold = threshold
        self._shingle = shingle
        self._max_chars = max_chars
        self._vectorizer = HashingVectorizer(
            analyzer="char", ngram_range=(shingle, shingle), lowercase=False, binary=True, norm=None,
            alternate_sign=False, n_features=2**22,
        )
        self._by_hash: dict[str, Hashable] = {}
        self._ids: list[Hashable] = []
        self._rows: list[Any] = []
        self._matrix: Any = None
        self._sizes: Any = None

    def __len__(self) -> int:
        return len(self._by_hash)

    def _shingled(self, texts: list[str]) -> Any:
        return self._vectorizer.transform([t[: self._max_chars].ljust(self._shingle) for t in texts])

    def add(self, reference: Mapping[Any, str]) -> None:
        """Add reference texts (ids already present are added again only if their text is new)."""
        fresh: list[tuple[Hashable, str]] = []
        for ref_id, text in reference.items():
            digest = text_hash(text)
            if digest in self._by_hash:
                continue
            self._by_hash[digest] = ref_id
            normal = normalise(text)
            if normal:
                fresh.append((ref_id, normal))
        if not fresh:
            return
        self._ids.extend(ref_id for ref_id, _ in fresh)
        self._rows.append(self._shingled([t for _, t in fresh]))
        self._matrix = None

    def check(self, text: str) -> Leak | None:
        """The text's closest reference when it is an exact or near duplicate of one; else None."""
        ref = self._by_hash.get(text_hash(text))
        if ref is not None:
            return Leak(None, ref, LeakKind.exact, 1.0)
        normal = normalise(text)
        if not normal or not self._rows:
            return None
        if self._matrix is None:
            from scipy.sparse import vstack

            stacked = vstack(self._rows).tocsr()
            self._rows = [stacked]
            self._sizes = np.asarray(stacked.sum(axis=1)).ravel()
            # Shingles x references, row-major: one item's product gathers only the rows of its own shingles.
            self._matrix = stacked.T.tocsr()
        row: Any = self._shingled([normal])
        inter = np.asarray((row @ self._matrix).toarray(), dtype=np.float64).ravel()
        union = self._sizes + float(row.sum()) - inter
        jaccard = np.divide(inter, union, out=np.zeros_like(inter, dtype=np.float64), where=union > 0)
        best = int(jaccard.argmax())
        if jaccard[best] >= self.threshold:
            return Leak(None, self._ids[best], LeakKind.near, float(jaccard[best]))
        return None
