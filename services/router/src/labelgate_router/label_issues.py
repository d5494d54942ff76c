"""Label issues among a project's final labels: confident learning (cleanlab, via labelgate_quality.issues)
over the model's out-of-sample probabilities.

The scores a proposal carried when the item was scored are out-of-sample for that item: the model had not
been trained on it (it learns from reviews, and an item is reviewed after it is scored). So the finals of a
project and the scores of their proposals are what ``find_label_issues`` needs, with no model of our own.

Pure code: the router's background task reads the documents and emits the re-review decisions."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np

from labelgate_quality.issues import find_label_issues


@dataclass(frozen=True, slots=True)
class FinalScored:
    """One final label with the class probabilities its item was scored with."""

    item_id: str
    final_id: str
    """The event id of the final label: one final is flagged at most once."""
    label: str
    scores: dict[str, float]


@dataclass(frozen=True, slots=True)
class Suspect:
    final: FinalScored
    suggested: str
    label_quality: float
    """The probability the model gave the final label (lower is more suspicious)."""


def suspicious_finals(
    finals: Sequence[FinalScored],
    classes: Sequence[str],
    *,
    skip: Collection[str] = (),
    limit: int,
    min_finals: int,
) -> list[Suspect]:
    """The finals most likely wrong, worst first, at most ``limit``, none whose ``final_id`` is in ``skip``.

    Runs only with at least ``min_finals`` usable finals, every class among them at least twice: confident
    learning estimates per-class noise rates, which a handful of items cannot give. A final whose scores miss a
    class counts that class as 0; rows are normalised to sum to 1."""
    names = list(dict.fromkeys(classes))
    usable = [f for f in finals if f.label in names and any(f.scores.get(c, 0.0) > 0.0 for c in names)]
    if len(usable) < max(min_finals, 2) or limit <= 0:
        return []
    counts = dict.fromkeys(names, 0)
    for f in usable:
        counts[f.label] += 1
    present = [c for c in names if counts[c] > 0]
    if len(present) < 2 or min(counts[c] for c in present) < 2:
        return []
    usable = [f for f in usable if f.label in present]
    probs = np.array([[max(f.scores.get(c, 0.0), 0.0) for c in present] for f in usable], dtype=np.float64)
    probs = probs / probs.sum(axis=1, keepdims=True)
    issues = find_label_issues([f.label for f in usable], probs, present)
    out: list[Suspect] = []
    for issue in issues:
        final = usable[issue.index]
        if final.final_id in skip:
            continue
        out.append(Suspect(final, str(issue.suggested), issue.label_quality))
        if len(out) >= limit:
            break
    return out
