"""The local model: TF-IDF features and a linear classifier, trained on a project's reviewed items.

The classifier is a linear support vector machine (scikit-learn's ``LinearSVC``, an exact solver, seeded so
that the same examples give the same model) by default, logistic regression on request. Confidence is the
probability the classifier gives (for the SVM, its margin through Platt scaling fitted on held-out folds of the
training examples), which the router may calibrate again on reviewed items. What decides the choice is how
well confidence *ranks* right above wrong, because the router auto-accepts from the top of that ranking: on the
SpamAssassin corpus, trained on 600 random emails, the margins of the SVM rank well enough that 93% of the
remaining emails can be auto-accepted at 99.5% precision, against 79% for logistic regression's probabilities
(benchmarks/README.md, "The local model's classifier").

Pure domain code (scikit-learn and numpy only). Training is CPU-bound and synchronous: callers run it in a
worker thread. A fitted model is immutable, so one thread may predict with it while another trains its
successor."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.svm import LinearSVC

from labelgate_core.events import TaskType

SUPPORTED_TASKS = frozenset({TaskType.classification, TaskType.multi_label})

Probabilities = NDArray[np.float64]


class Classifier(StrEnum):
    svm = "svm"
    """Linear SVM (squared hinge loss): margins that rank well from a few hundred examples."""
    logistic = "logistic"
    """Logistic regression (L-BFGS)."""


class TrainingError(ValueError):
    """The examples cannot make a model: too few usable ones, a single class, or no words at all."""


@dataclass(frozen=True, slots=True)
class ModelConfig:
    max_features: int = 50_000
    max_chars: int = 20_000
    """Long texts (whole emails) are cut here: the opening carries the signal, the tail costs memory."""
    max_ngram: int = 2
    classifier: Classifier = Classifier.svm
    c: float = 10.0
    """Inverse regularisation strength. Logistic regression: with a few dozen short examples C=1 leaves every
    probability near 0.5; 10 lets a separable set reach useful confidence, and the router calibrates the rest.
    SVM: 10 ranked better than 3 on SpamAssassin and as well as 30."""
    max_iter: int = 1000
    holdout_every: int = 5
    """Every n-th example (in the caller's order) is held out to measure accuracy before the final fit."""
    min_holdout: int = 5
    """Below this many held-out examples an accuracy is noise: it is reported as None."""
    threshold: float = 0.5
    """Multi-label: a label is proposed when its probability reaches this."""


@dataclass(frozen=True, slots=True)
class Prediction:
    labels: tuple[str, ...]
    confidence: float | None
    """None when the model knows none of the labels it was asked about."""
    scores: dict[str, float]


class _Scorer(Protocol):
    @property
    def labels(self) -> tuple[str, ...]:
        """The labels ``proba`` scores, in column order."""
        ...

    def proba(self, features: Any) -> Probabilities:
        """One row per row of TF-IDF ``features``, one column per label in ``labels``."""
        ...


def _fit_features(texts: Sequence[str], config: ModelConfig) -> tuple[TfidfVectorizer, Any]:
    vectorizer = TfidfVectorizer(
        sublinear_tf=True,
        ngram_range=(1, config.max_ngram),
        max_features=config.max_features,
        strip_accents="unicode",
        dtype=np.float32,
    )
    try:
        features = vectorizer.fit_transform(texts)
    except ValueError as exc:  # "empty vocabulary": no text holds a single word
        raise TrainingError(f"no usable words in the examples: {exc}") from exc
    # Older scikit-learn keeps every term cut by max_features here; models stay in memory, so drop it.
    if getattr(vectorizer, "stop_words_", None) is not None:
        vectorizer.stop_words_ = None
    return vectorizer, features


def _regression(config: ModelConfig) -> Any:
    """A scikit-learn ``LogisticRegression`` or ``LinearSVC``, unfitted."""
    if config.classifier is Classifier.logistic:
        return LogisticRegression(C=config.c, max_iter=config.max_iter)
    # Seeded: liblinear shuffles the examples, and a restarted labeler must rebuild the very same version.
    return LinearSVC(C=config.c, max_iter=config.max_iter, random_state=0)


def _sigmoid(margins: NDArray[np.float64]) -> Probabilities:
    result: Probabilities = 1.0 / (1.0 + np.exp(-margins))
    return result


def _laplace(positives: int, total: int) -> float:
    """The probability of a label seen ``positives`` times in ``total`` examples, never quite 0 or 1."""
    return (positives + 1) / (total + 2)


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


@dataclass(frozen=True, slots=True)
class _SoftmaxScorer:
    """Single-label with logistic regression: one multinomial model over the classes seen in training."""

    regression: Any
    """A fitted ``LogisticRegression``."""
    labels: tuple[str, ...]

    def proba(self, features: Any) -> Probabilities:
        return np.asarray(self.regression.predict_proba(features), dtype=np.float64)


@dataclass(frozen=True, slots=True)
class _SigmoidScorer:
    """One binary classifier per label (one-vs-rest), stacked into one weight matrix so a prediction is a
    single sparse product however many labels there are; each row gives the label's probability (an SVM's
    margin goes through its Platt scaling, folded into the weights). Multi-label: a label always or never present
    in the examples cannot be fitted; it gets zero weights and its smoothed base rate. Single-label (``exclusive``):
    two classes share one classifier (``weights`` has a row for the second label only); more are normalised to
    sum to one."""

    labels: tuple[str, ...]
    weights: NDArray[np.float32]
    intercepts: NDArray[np.float64]
    exclusive: bool = False

    def proba(self, features: Any) -> Probabilities:
        rows = _sigmoid(np.asarray(features @ self.weights.T, dtype=np.float64) + self.intercepts)
        if not self.exclusive:
            return rows
        if len(self.labels) == 2:
            return np.column_stack([1.0 - rows[:, 0], rows[:, 0]])
        result: Probabilities = rows / np.maximum(rows.sum(axis=1, keepdims=True), 1e-12)
        return result


def _fit_binary(features: Any, column: NDArray[np.int8], config: ModelConfig) -> tuple[NDArray[np.float64], float]:
    """Weights and intercept whose logistic function is the probability of the positive class. Logistic
    regression gives them directly. An SVM's margin is no probability; Platt scaling maps it to one with a
    logistic fit on margins the SVM gave examples it was not trained on (stratified folds), and the map, being
    linear in the margin, folds into the weights. Platt's map is monotone: the ranking the router relies on is the
    SVM's own."""
    regression = _regression(config).fit(features, column)
    weights = np.asarray(regression.coef_[0], dtype=np.float64)
    intercept = float(regression.intercept_[0])
    if config.classifier is Classifier.logistic:
        return weights, intercept
    folds = min(3, int(column.sum()), int(len(column) - column.sum()))
    if folds < 2:
        return weights, intercept  # too few of one class to hold any out: the plain margin
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=0)
    margins = cross_val_predict(_regression(config), features, column, cv=splitter, method="decision_function")
    # Regularised (C=1), so that a separable set gets a steep but finite slope, never probabilities of exactly 1.
    platt = LogisticRegression(C=1.0).fit(np.asarray(margins).reshape(-1, 1), column)
    slope, offset = float(platt.coef_[0, 0]), float(platt.intercept_[0])
    return weights * slope, intercept * slope + offset


def _fit_single(features: Any, targets: Sequence[str], config: ModelConfig) -> _Scorer:
    classes = tuple(sorted(set(targets)))
    if len(classes) < 2:
        raise TrainingError("single-label training needs at least two distinct labels")
    if config.classifier is Classifier.logistic:
        regression = _regression(config).fit(features, list(targets))
        return _SoftmaxScorer(regression, tuple(str(c) for c in regression.classes_))
    fitted = classes[1:] if len(classes) == 2 else classes
    weights = np.zeros((len(fitted), features.shape[1]), dtype=np.float32)
    intercepts = np.zeros(len(fitted), dtype=np.float64)
    for k, label in enumerate(fitted):
        column = np.fromiter((t == label for t in targets), dtype=np.int8, count=len(targets))
        row, intercepts[k] = _fit_binary(features, column, config)
        weights[k] = row
    return _SigmoidScorer(classes, weights, intercepts, exclusive=True)


def _fit_multi(
    features: Any, targets: Sequence[tuple[str, ...]], labels: tuple[str, ...], config: ModelConfig
) -> _SigmoidScorer:
    n = len(targets)
    weights = np.zeros((len(labels), features.shape[1]), dtype=np.float32)
    intercepts = np.zeros(len(labels), dtype=np.float64)
    for k, label in enumerate(labels):
        column = np.fromiter((label in t for t in targets), dtype=np.int8, count=n)
        positives = int(column.sum())
        if 0 < positives < n:
            row, intercepts[k] = _fit_binary(features, column, config)
            weights[k] = row
        else:
            intercepts[k] = _logit(_laplace(positives, n))
    return _SigmoidScorer(labels, weights, intercepts)


def _fit_scorer(
    features: Any, targets: Sequence[tuple[str, ...]], task: TaskType, labels: tuple[str, ...], config: ModelConfig
) -> _Scorer:
    if task is TaskType.classification:
        return _fit_single(features, [target[0] for target in targets], config)
    return _fit_multi(features, targets, labels, config)


Example = tuple[str, tuple[str, ...]]
"""A (truncated) text and the labels a reviewer gave it: exactly one in a single-label task."""


def _usable(
    texts: Sequence[str], labels: Sequence[Sequence[str]], task: TaskType, max_chars: int
) -> list[Example]:
    """The examples the task can learn from: single-label ones need exactly one label."""
    pairs = [(text[:max_chars], tuple(dict.fromkeys(ls))) for text, ls in zip(texts, labels, strict=True)]
    if task is TaskType.classification:
        return [(text, ls) for text, ls in pairs if len(ls) == 1]
    return pairs


def trainable(labels: Sequence[Sequence[str]], task: TaskType, min_examples: int) -> bool:
    """Enough usable examples, with at least two distinct labels among them."""
    if task not in SUPPORTED_TASKS:
        return False
    usable = [ls for ls in labels if len(ls) == 1] if task is TaskType.classification else list(labels)
    distinct = {label for ls in usable for label in ls}
    return len(usable) >= max(min_examples, 1) and len(distinct) >= 2


def _decide(
    task: TaskType, known: dict[str, float], space: tuple[str, ...], trained_on: int, config: ModelConfig
) -> Prediction:
    if task is TaskType.classification:
        scores = {label: known.get(label, 0.0) for label in space}
        candidates = [label for label in space if label in known]
        if not candidates:
            return Prediction((), None, scores)
        best = max(candidates, key=scores.__getitem__)
        return Prediction((best,), scores[best], scores)
    unseen = _laplace(0, trained_on)
    scores = {label: known.get(label, unseen) for label in space}
    chosen = tuple(label for label in space if scores[label] >= config.threshold)
    # The least certain label decides: one doubtful label makes the whole set doubtful.
    confidence = min((max(p, 1.0 - p) for p in scores.values()), default=None)
    return Prediction(chosen, confidence, scores)


def _decide_rows(
    task: TaskType, scorer: _Scorer, features: Any, space: tuple[str, ...], trained_on: int, config: ModelConfig
) -> list[Prediction]:
    rows = scorer.proba(features)
    return [
        _decide(task, dict(zip(scorer.labels, map(float, row), strict=True)), space, trained_on, config)
        for row in rows
    ]


@dataclass(frozen=True, slots=True)
class TrainedModel:
    task: TaskType
    labels: tuple[str, ...]
    """The label space: the task's labels at training time, then any other label the examples used."""
    trained_on: int
    holdout_accuracy: float | None
    """Single-label: share of held-out items whose label matched. Multi-label: share whose label set
    matched exactly (what a reviewer would confirm without a change). None when too few were held out."""
    train_seconds: float
    config: ModelConfig
    vectorizer: TfidfVectorizer
    scorer: _Scorer

    def predict(self, text: str, label_space: Sequence[str] = ()) -> Prediction:
        return self.predict_many([text], label_space)[0]

    def predict_many(self, texts: Sequence[str], label_space: Sequence[str] = ()) -> list[Prediction]:
        """Score ``texts`` over ``label_space`` (the item's task labels; the model's own by default).

        A label the model never learned scores 0 in a single-label task (it cannot be proposed); in a
        multi-label task it gets the base rate of a label present in none of the training examples."""
        space = tuple(dict.fromkeys(label_space)) or self.labels
        features = self.vectorizer.transform([text[: self.config.max_chars] for text in texts])
        return _decide_rows(self.task, self.scorer, features, space, self.trained_on, self.config)


def _holdout_accuracy(
    features: Any, targets: Sequence[tuple[str, ...]], task: TaskType, labels: tuple[str, ...], config: ModelConfig
) -> float | None:
    every = config.holdout_every
    if every < 2:
        return None
    held = [i for i in range(len(targets)) if i % every == every - 1]
    kept = [i for i in range(len(targets)) if i % every != every - 1]
    if len(held) < config.min_holdout:
        return None
    kept_targets = [targets[i] for i in kept]
    try:
        scorer = _fit_scorer(features[kept], kept_targets, task, labels, config)
    except TrainingError:
        return None
    predictions = _decide_rows(task, scorer, features[held], labels, len(kept), config)
    hits = sum(
        frozenset(prediction.labels) == frozenset(targets[i]) for prediction, i in zip(predictions, held, strict=True)
    )
    return hits / len(held)


def train(
    texts: Sequence[str],
    labels: Sequence[Sequence[str]],
    task: TaskType,
    *,
    label_space: Sequence[str] = (),
    config: ModelConfig | None = None,
) -> TrainedModel:
    """Fit a model on reviewed items (``labels[i]`` is what a reviewer gave ``texts[i]``).

    Keep the examples in a stable order (first review first): the held-out slice is every
    ``holdout_every``-th example, so successive versions are measured on mostly the same items. Accuracy is
    measured on a fit without the held-out slice; the model returned is then fitted on everything. The TF-IDF
    vocabulary is built once from all texts for both fits: it uses no labels, and tokenizing is most of the
    cost of training."""
    started = time.perf_counter()
    config = config or ModelConfig()
    if task not in SUPPORTED_TASKS:
        raise TrainingError(f"the local model does not handle {task.value} tasks")
    examples = _usable(texts, labels, task, config.max_chars)
    if not examples:
        raise TrainingError("no usable examples")
    targets = [target for _, target in examples]
    seen = sorted({label for target in targets for label in target})
    space = tuple(dict.fromkeys([*label_space, *seen]))
    if task is TaskType.classification and len(seen) < 2:
        raise TrainingError("single-label training needs at least two distinct labels")
    vectorizer, features = _fit_features([text for text, _ in examples], config)
    accuracy = _holdout_accuracy(features, targets, task, space, config)
    scorer = _fit_scorer(features, targets, task, space, config)
    return TrainedModel(
        task=task,
        labels=space,
        trained_on=len(examples),
        holdout_accuracy=accuracy,
        train_seconds=time.perf_counter() - started,
        config=config,
        vectorizer=vectorizer,
        scorer=scorer,
    )


@dataclass(frozen=True, slots=True)
class RetrainPolicy:
    """When a project's model is stale enough to refit: after ``every_reviews`` new reviews, or once the new
    reviews reach ``growth`` times the examples the model was trained on (a young model, trained on 20 items,
    is refitted after 5 more, not 50: it is the one that most needs them), or after any new review once
    ``interval_s`` has passed since the last training (at once if it never trained)."""

    every_reviews: int
    interval_s: float
    growth: float = 0.0

    def due(self, new_reviews: int, seconds_since_training: float | None, trained_on: int | None = None) -> bool:
        if new_reviews <= 0:
            return False
        if new_reviews >= self.every_reviews or seconds_since_training is None:
            return True
        if self.growth > 0 and trained_on is not None and new_reviews >= self.growth * trained_on:
            return True
        return seconds_since_training >= self.interval_s
