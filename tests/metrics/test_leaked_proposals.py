"""Proposals for items that duplicate the model's training items are counted, by exact or near."""

from __future__ import annotations

import pytest

from labelgate_metrics.aggregates import LEAKED_PROPOSALS, Aggregates, changes_for

from .builders import scored, submitted

pytestmark = pytest.mark.unit


def test_leaked_proposals_are_counted_by_kind_in_the_series_and_the_report() -> None:
    aggregates = Aggregates()
    item = submitted("p", "a")
    for kind in ("exact", "near", "near", None):
        event = scored(item, ("sports",), after=0.1)
        event = event.model_copy(update={"proposal": event.proposal.model_copy(update={"leakage": kind})})
        aggregates.apply(changes_for(event))
    counts = {s.key.labels[0]: s.value for s in aggregates.series(LEAKED_PROPOSALS, "p")}
    assert counts == {"exact": 1, "near": 2}
    assert aggregates.report("p").leaked_proposals == {"exact": 1, "near": 2}
    assert sum(aggregates.report("p").proposals.values()) == 4
