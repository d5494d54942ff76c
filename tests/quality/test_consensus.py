"""Consensus labels recover the truth from a noisy crowd, and gold items measure each reviewer."""

from __future__ import annotations

import numpy as np
import pytest

from labelgate_quality.consensus import Annotation, dawid_skene, majority_vote, reviewer_accuracy

pytestmark = pytest.mark.unit

LABELS = ("bug", "billing", "other")


def synthetic_crowd(n_items: int = 300, seed: int = 0) -> tuple[list[Annotation], dict[int, str]]:
    """Two careful reviewers (95% right) and three careless ones (45% right, errors uniform over the rest),
    everyone labels every item: the careless majority often outvotes the careful pair."""
    rng = np.random.default_rng(seed)
    truth = {i: LABELS[int(rng.integers(3))] for i in range(n_items)}
    skill = {"careful1": 0.95, "careful2": 0.95, "careless1": 0.45, "careless2": 0.45, "careless3": 0.45}
    annotations = []
    for item, label in truth.items():
        for reviewer, p in skill.items():
            given = label if rng.uniform() < p else str(rng.choice([x for x in LABELS if x != label]))
            annotations.append(Annotation(item, reviewer, given))
    return annotations, truth


def accuracy(labels: dict[object, object], truth: dict[int, str]) -> float:
    return float(np.mean([labels[i] == t for i, t in truth.items()]))


def test_majority_vote_picks_the_most_frequent_label_and_flags_ties() -> None:
    votes = majority_vote(
        [Annotation(1, "a", "x"), Annotation(1, "b", "x"), Annotation(1, "c", "y"),
         Annotation(2, "a", "y"), Annotation(2, "b", "x")]
    )
    assert votes[1].label == "x"
    assert votes[1].support == pytest.approx(2 / 3)
    assert not votes[1].tied
    assert votes[2].tied
    assert votes[2].label == "x"  # stable: the smallest label wins a tie


def test_dawid_skene_beats_majority_vote_on_a_crowd_with_careless_reviewers() -> None:
    annotations, truth = synthetic_crowd()
    mv = accuracy({i: v.label for i, v in majority_vote(annotations).items()}, truth)
    result = dawid_skene(annotations)
    ds = accuracy({i: v.label for i, v in result.votes.items()}, truth)
    assert ds > mv + 0.05
    assert ds > 0.9
    assert result.reviewer_accuracy["careful1"] == pytest.approx(0.95, abs=0.05)
    assert result.reviewer_accuracy["careless1"] == pytest.approx(0.45, abs=0.08)
    for dist in result.posteriors.values():
        assert sum(dist.values()) == pytest.approx(1.0)
    assert sum(result.priors.values()) == pytest.approx(1.0)


def test_dawid_skene_of_nothing_is_empty() -> None:
    assert dawid_skene([]).votes == {}


def test_reviewer_accuracy_on_gold_items_with_a_lower_bound() -> None:
    annotations, truth = synthetic_crowd(200, seed=1)
    gold = {i: t for i, t in truth.items() if i < 100}
    stats = reviewer_accuracy(annotations, gold)
    assert stats["careful1"].n_gold == 100
    assert stats["careful1"].accuracy == pytest.approx(0.95, abs=0.06)
    assert stats["careless2"].accuracy == pytest.approx(0.45, abs=0.12)
    assert stats["careful1"].lower_bound < stats["careful1"].accuracy
    few = reviewer_accuracy([Annotation(0, "new", truth[0])] * 3, gold)
    assert few["new"].accuracy == 1.0
    assert few["new"].lower_bound < 0.6
