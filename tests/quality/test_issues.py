"""Label-issue detection finds flipped labels; the confusion matrix names the classes the AI mixes up."""

from __future__ import annotations

import numpy as np
import pytest

from labelgate_quality.issues import (
    confusion,
    cross_validated_probabilities,
    find_label_issues,
    label_reliability,
)

pytestmark = pytest.mark.unit

SPAM = ["win a free prize now", "cheap pills online offer", "claim your lottery reward", "free money click here"]
HAM = ["meeting moved to thursday", "please review the attached report", "lunch tomorrow with the team",
       "notes from the design review"]


def corpus(n_per_class: int = 60, seed: int = 0) -> tuple[list[str], list[str]]:
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for i in range(n_per_class):
        texts.append(f"{SPAM[i % 4]} {rng.choice(['today', 'now', 'fast'])} {i}")
        labels.append("spam")
        texts.append(f"{HAM[i % 4]} {rng.choice(['thanks', 'regards', 'best'])} {i}")
        labels.append("ham")
    return texts, labels


def test_flipped_labels_are_found_from_out_of_sample_probabilities() -> None:
    texts, labels = corpus()
    flipped = {3, 10, 41, 77}
    noisy = [("ham" if label == "spam" else "spam") if i in flipped else label for i, label in enumerate(labels)]
    classes = ["ham", "spam"]
    probs = cross_validated_probabilities(texts, noisy, classes)
    assert probs.shape == (len(texts), 2)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    issues = find_label_issues(noisy, probs, classes)
    found = {issue.index for issue in issues}
    assert flipped <= found
    assert len(found) <= len(flipped) + 4
    first = issues[0]
    assert first.suggested != first.given
    assert [i.label_quality for i in issues] == sorted(i.label_quality for i in issues)


def test_find_label_issues_checks_its_input() -> None:
    with pytest.raises(ValueError, match="shape"):
        find_label_issues(["a", "b"], np.ones((3, 2)) / 2, ["a", "b"])
    with pytest.raises(ValueError, match="not among classes"):
        find_label_issues(["a", "c"], np.ones((2, 2)) / 2, ["a", "b"])


def test_confusion_names_the_classes_the_ai_mixes_up() -> None:
    human = ["billing"] * 10 + ["refund"] * 10 + ["bug"] * 10
    ai = ["billing"] * 6 + ["refund"] * 4 + ["refund"] * 9 + ["billing"] + ["bug"] * 10
    result = confusion(human, ai)
    assert result.classes == ("billing", "bug", "refund")
    assert result.matrix.sum() == 30
    assert result.top_confusions(2) == [("billing", "refund", 4), ("refund", "billing", 1)]


def test_a_label_the_ai_gets_wrong_beyond_chance_is_unreliable_and_its_slice_is_named() -> None:
    # The AI says "spam" 40 times and is right 20 times: mostly on one sender's mail it is wrong.
    ai = ["spam"] * 40 + ["ham"] * 60
    human = ["spam"] * 20 + ["ham"] * 20 + ["ham"] * 58 + ["spam"] * 2
    slices = [{"sender": "newsletter" if 20 <= i < 40 else "other", "id": f"item-{i}"} for i in range(100)]
    overall, sliced = label_reliability(ai, human, slices=slices, min_support=20, min_accuracy=0.8)
    by_label = {r.label: r for r in overall}
    assert by_label["spam"].unreliable
    assert by_label["spam"].accuracy == pytest.approx(0.5)
    assert by_label["spam"].upper_bound < 0.8
    assert by_label["spam"].mistaken_for == {"ham": 20}
    assert not by_label["ham"].unreliable
    assert overall[0].label == "spam"  # worst first
    newsletter = [r for r in sliced if r.slice_field == "sender" and r.slice_value == "newsletter"]
    assert len(newsletter) == 1
    assert newsletter[0].accuracy == 0.0
    assert newsletter[0].unreliable
    assert not [r for r in sliced if r.slice_field == "id"]  # one item per slice: below the support


def test_few_reviews_never_make_a_label_unreliable() -> None:
    overall, _ = label_reliability(["spam"] * 5, ["ham"] * 5, min_support=20)
    assert overall[0].accuracy == 0.0
    assert not overall[0].unreliable


def test_reliability_skips_unproposed_items_and_refuses_mismatched_input() -> None:
    overall, sliced = label_reliability([None, None], ["spam", "ham"])
    assert overall == []
    assert sliced == []
    with pytest.raises(ValueError, match="AI labels"):
        label_reliability(["spam"], ["spam", "ham"])
