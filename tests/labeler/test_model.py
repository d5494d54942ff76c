"""The local model learns from reviewed items and says how sure it is."""

from __future__ import annotations

import random

import pytest

from labelgate_core.events import TaskType
from labelgate_labeler.model import Classifier, ModelConfig, RetrainPolicy, TrainingError, train, trainable

pytestmark = pytest.mark.unit

VOCAB = {
    "billing": [
        "invoice", "refund", "charge", "payment", "card", "overcharged", "receipt", "billing", "price", "subscription",
    ],
    "shipping": [
        "parcel", "delivery", "courier", "tracking", "shipped", "arrived", "package", "late", "address", "warehouse",
    ],
    "account": [
        "password", "login", "locked", "reset", "username", "email", "verification", "twofactor", "profile", "signin",
    ],
}
FILLER = ["the", "a", "my", "of", "and", "to", "in", "for", "on", "with", "is", "was", "please", "hello", "thanks"]


def text_about(topics: list[str], rng: random.Random, words: int = 14) -> str:
    pool = [w for topic in topics for w in VOCAB[topic]]
    return " ".join(rng.choice(pool + FILLER) for _ in range(words))


def single_label_set(n_per_class: int, seed: int = 0) -> tuple[list[str], list[tuple[str, ...]]]:
    rng = random.Random(seed)
    texts: list[str] = []
    labels: list[tuple[str, ...]] = []
    for _ in range(n_per_class):
        for topic in VOCAB:
            texts.append(text_about([topic], rng))
            labels.append((topic,))
    return texts, labels


@pytest.mark.parametrize("classifier", list(Classifier))
def test_single_label_model_learns_a_separable_set(classifier: Classifier) -> None:
    texts, labels = single_label_set(12)
    model = train(
        texts, labels, TaskType.classification, label_space=("billing", "shipping", "account"),
        config=ModelConfig(classifier=classifier),
    )

    test_texts, truth = single_label_set(5, seed=99)
    predictions = model.predict_many(test_texts)
    assert [p.labels for p in predictions] == truth
    for p in predictions:
        assert p.confidence is not None
        assert p.confidence == max(p.scores.values())
        assert p.confidence > 0.5
        assert sum(p.scores.values()) == pytest.approx(1.0)
    assert model.trained_on == 36


def test_single_label_score_covers_every_label_of_the_task_even_unseen_ones() -> None:
    texts, labels = single_label_set(8)
    model = train(texts, labels, TaskType.classification)

    prediction = model.predict("my parcel never arrived, tracking says late", ("billing", "shipping", "returns"))

    assert prediction.labels == ("shipping",)
    assert set(prediction.scores) == {"billing", "shipping", "returns"}
    assert prediction.scores["returns"] == 0.0


def test_single_label_model_proposes_nothing_when_it_knows_none_of_the_task_labels() -> None:
    texts, labels = single_label_set(8)
    model = train(texts, labels, TaskType.classification)

    prediction = model.predict("hello", ("positive", "negative"))

    assert prediction.labels == ()
    assert prediction.confidence is None


def test_single_label_training_needs_two_distinct_labels() -> None:
    with pytest.raises(TrainingError):
        train(["refund my invoice"] * 10, [("billing",)] * 10, TaskType.classification)


def test_texts_without_any_word_cannot_train() -> None:
    with pytest.raises(TrainingError):
        train(["!!", "?"] * 10, [("a",), ("b",)] * 10, TaskType.classification)


def test_multi_label_model_proposes_the_subset_that_applies() -> None:
    rng = random.Random(1)
    combos = [["billing"], ["shipping"], ["account"], ["billing", "shipping"], ["shipping", "account"]]
    texts: list[str] = []
    labels: list[tuple[str, ...]] = []
    for _ in range(15):
        for combo in combos:
            texts.append(text_about(combo, rng, words=20))
            labels.append(tuple(combo))
    model = train(texts, labels, TaskType.multi_label, label_space=("billing", "shipping", "account"))

    prediction = model.predict(
        "I was charged twice on my invoice and my parcel delivery is late, courier tracking shows nothing"
        " refund the payment card charge and check the shipped package"
    )

    assert set(prediction.labels) == {"billing", "shipping"}
    assert set(prediction.scores) == {"billing", "shipping", "account"}
    assert prediction.confidence == pytest.approx(min(max(p, 1 - p) for p in prediction.scores.values()))
    assert prediction.scores["account"] < 0.5


def test_multi_label_label_present_in_every_or_no_example_is_handled() -> None:
    # "urgent" is on every example and "spam" on none: no regression can be fitted for either.
    rng = random.Random(2)
    texts = [text_about([t], rng) for t in ("billing", "shipping") for _ in range(12)]
    labels = [("urgent", t) for t in ("billing", "shipping") for _ in range(12)]
    model = train(texts, labels, TaskType.multi_label, label_space=("billing", "shipping", "urgent", "spam"))

    prediction = model.predict("refund the invoice charge on my card")

    assert "urgent" in prediction.labels
    assert "spam" not in prediction.labels
    assert "billing" in prediction.labels
    # Base rates, smoothed: near-certain, never absolute.
    assert 0.9 < prediction.scores["urgent"] < 1.0
    assert 0.0 < prediction.scores["spam"] < 0.1


def test_multi_label_label_unknown_to_the_model_gets_a_low_base_rate() -> None:
    rng = random.Random(3)
    texts = [text_about([t], rng) for t in ("billing", "account") for _ in range(10)]
    labels = [(t,) for t in ("billing", "account") for _ in range(10)]
    model = train(texts, labels, TaskType.multi_label)

    prediction = model.predict("reset my password", ("billing", "account", "added_later"))

    assert "added_later" not in prediction.labels
    assert 0.0 < prediction.scores["added_later"] < 0.1


def test_holdout_accuracy_is_measured_when_enough_items_are_held_out() -> None:
    texts, labels = single_label_set(15)  # 45 items: 9 held out
    model = train(texts, labels, TaskType.classification)

    assert model.holdout_accuracy is not None
    assert model.holdout_accuracy >= 0.8
    assert model.trained_on == 45  # the final fit uses everything


def test_holdout_accuracy_reflects_labels_the_model_cannot_learn() -> None:
    rng = random.Random(4)
    texts = [text_about(["billing", "shipping", "account"], rng) for _ in range(50)]
    labels = [(rng.choice(["x", "y"]),) for _ in range(50)]  # noise: nothing to learn
    model = train(texts, labels, TaskType.classification)

    assert model.holdout_accuracy is not None
    assert model.holdout_accuracy < 0.9


def test_holdout_accuracy_is_none_with_too_few_items() -> None:
    texts, labels = single_label_set(4)  # 12 items: 2 held out
    model = train(texts, labels, TaskType.classification)

    assert model.holdout_accuracy is None


def test_long_texts_are_judged_by_their_opening() -> None:
    # Each email quotes a long thread about the *other* topic after the first few hundred characters: only a
    # model that reads the opening (and not the tail) learns the right thing.
    rng = random.Random(5)
    other = {"billing": "shipping", "shipping": "billing"}
    texts: list[str] = []
    labels: list[tuple[str, ...]] = []
    for _ in range(12):
        for topic in ("billing", "shipping"):
            opening = text_about([topic], rng, words=10)
            quoted = " ".join(VOCAB[other[topic]] * 300)  # ~20 KB
            texts.append(f"{opening} {' ' * (200 - len(opening))}{quoted}")
            labels.append((topic,))
    model = train(texts, labels, TaskType.classification, config=ModelConfig(max_chars=200))

    assert model.predict("refund the invoice charge on my card " + "x" * 100_000).labels == ("billing",)
    assert model.predict("where is my parcel, the courier tracking says late").labels == ("shipping",)


def test_single_label_examples_without_exactly_one_label_are_skipped() -> None:
    texts, labels = single_label_set(8)
    model = train([*texts, "refund", "parcel"], [*labels, (), ("billing", "shipping")], TaskType.classification)

    assert model.trained_on == len(texts)


def test_unsupported_task_types_are_refused() -> None:
    texts, labels = single_label_set(8)
    with pytest.raises(TrainingError):
        train(texts, labels, TaskType.entities)


def test_trainable_needs_enough_examples_and_two_labels() -> None:
    assert trainable([("a",), ("b",)] * 10, TaskType.classification, 20)
    assert not trainable([("a",), ("b",)] * 9, TaskType.classification, 20)
    assert not trainable([("a",)] * 30, TaskType.classification, 20)
    assert not trainable([("a", "b")] * 9 + [()], TaskType.classification, 5)
    assert trainable([("a", "b")] * 20, TaskType.multi_label, 20)
    assert not trainable([("a",), ("b",)] * 20, TaskType.boxes, 20)


@pytest.mark.parametrize(
    ("new_reviews", "since", "due"),
    [
        (0, None, False),
        (0, 1e6, False),
        (1, None, True),  # never trained: as soon as there is anything to learn
        (1, 10.0, False),
        (1, 30.0, True),
        (50, 0.0, True),
        (49, 29.0, False),
    ],
)
def test_retrain_policy(new_reviews: int, since: float | None, due: bool) -> None:
    assert RetrainPolicy(every_reviews=50, interval_s=30.0).due(new_reviews, since) is due


@pytest.mark.parametrize(
    ("new_reviews", "trained_on", "due"),
    [
        (5, 20, True),  # a quarter of what the model knows
        (4, 20, False),
        (49, 400, False),  # an older model waits for the count (or the interval)
        (50, 400, True),
        (5, None, False),  # no record of what it was trained on: the other rules only
    ],
)
def test_retrain_policy_refits_a_young_model_sooner(new_reviews: int, trained_on: int | None, due: bool) -> None:
    policy = RetrainPolicy(every_reviews=50, interval_s=30.0, growth=0.25)
    assert policy.due(new_reviews, 1.0, trained_on) is due


@pytest.mark.parametrize("classifier", list(Classifier))
def test_the_same_examples_make_the_same_model(classifier: Classifier) -> None:
    # A restarted labeler rebuilds its model from the stored examples and keeps the version number: it must be
    # the very same model.
    texts, labels = single_label_set(15)
    config = ModelConfig(classifier=classifier)
    first = train(texts, labels, TaskType.classification, config=config)
    second = train(texts, labels, TaskType.classification, config=config)
    probe, _ = single_label_set(4, seed=7)
    assert [p.scores for p in first.predict_many(probe)] == [p.scores for p in second.predict_many(probe)]
