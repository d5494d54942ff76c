"""The local model for entity extraction: a linear-chain CRF over word tokens with BIO tags and lexical
features, trained on a project's reviewed items.

Pure domain code (python-crfsuite only). Training is CPU-bound and synchronous: callers run it in a worker
thread. A fitted model is immutable; each prediction opens its own tagger on the model's bytes, so one thread
may predict while another trains its successor.

Confidence:
- per span, the lowest marginal probability, over the span's tokens, of the tag the model gave the token
  (``B-type`` then ``I-type``). The chance that every token of the span is tagged so is at most this, so it
  is an optimistic bound; the router's calibration maps it to P(correct) per project.
- per item (``Proposal.confidence``), the probability the CRF gives to the whole tag sequence it chose: the
  chance that the item's entire labelling (every span, and no span elsewhere) is right, which is what a
  reviewer confirms without a change. An item with no entity gets it too: it is the chance there is none."""

from __future__ import annotations

import os
import re
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass

import pycrfsuite

from labelgate_core.events import Span, TaskType

TOKEN = re.compile(r"\w+|[^\w\s]", re.UNICODE)
OUTSIDE = "O"

Token = tuple[str, int, int]
"""A word or punctuation mark and its ``[start, end)`` characters in the text."""

Features = dict[str, str | float | bool]


class EntityTrainingError(ValueError):
    """The examples cannot make a model: too few of them, or no entity in any."""


@dataclass(frozen=True, slots=True)
class EntityModelConfig:
    max_chars: int = 20_000
    """Long texts are cut here, as for the classification model."""
    c1: float = 0.05
    """L1 regularisation: drops features that never help (keeps the model small)."""
    c2: float = 0.01
    """L2 regularisation. Small: with a few dozen examples a stronger one leaves every marginal near uniform."""
    max_iterations: int = 200
    holdout_every: int = 5
    min_holdout: int = 5


def tokenize(text: str) -> list[Token]:
    return [(m.group(), m.start(), m.end()) for m in TOKEN.finditer(text)]


def _shape(word: str) -> str:
    shape = re.sub(r"[A-Z]", "X", word)
    shape = re.sub(r"[a-z]", "x", shape)
    shape = re.sub(r"\d", "d", shape)
    return re.sub(r"(.)\1+", r"\1\1", shape)


def _word_features(word: str, prefix: str) -> Features:
    lower = word.lower()
    return {
        f"{prefix}lower": lower,
        f"{prefix}suffix3": lower[-3:],
        f"{prefix}title": word.istitle(),
        f"{prefix}upper": word.isupper(),
        f"{prefix}digit": word.isdigit(),
        f"{prefix}shape": _shape(word),
    }


def features(tokens: Sequence[Token]) -> list[Features]:
    """Each token's own word, suffixes, case and shape, and those of its neighbours (one each side)."""
    out: list[Features] = []
    for i, (word, _, _) in enumerate(tokens):
        row: Features = {
            "bias": 1.0,
            "prefix2": word[:2].lower(),
            "suffix2": word[-2:].lower(),
            "alpha": word.isalpha(),
            "length": float(min(len(word), 20)) / 20.0,
        }
        row |= _word_features(word, "")
        if i > 0:
            row |= _word_features(tokens[i - 1][0], "-1:")
        else:
            row["BOS"] = True
        if i + 1 < len(tokens):
            row |= _word_features(tokens[i + 1][0], "+1:")
        else:
            row["EOS"] = True
        out.append(row)
    return out


def bio_tags(tokens: Sequence[Token], spans: Sequence[Span]) -> list[str]:
    """BIO tags of ``tokens`` from character spans. A token is inside a span when it overlaps it; a span that
    covers part of a token still tags the whole token (the CRF works on whole tokens)."""
    tags = [OUTSIDE] * len(tokens)
    for span in sorted(spans, key=lambda s: (s.start, s.end)):
        inside = [i for i, (_, start, end) in enumerate(tokens) if start < span.end and end > span.start]
        if not inside or any(tags[i] != OUTSIDE for i in inside):
            continue  # overlapping spans cannot both be BIO-tagged: the first one wins
        tags[inside[0]] = f"B-{span.label}"
        for i in inside[1:]:
            tags[i] = f"I-{span.label}"
    return tags


def spans_from_tags(text: str, tokens: Sequence[Token], tags: Sequence[str]) -> list[tuple[Span, list[int]]]:
    """The spans a tag sequence marks, each with the indexes of its tokens. An ``I-`` that does not continue a
    span of its type starts one (a lenient reading, as the CoNLL evaluation does)."""
    found: list[tuple[str, list[int]]] = []
    for i, tag in enumerate(tags):
        if tag == OUTSIDE:
            continue
        kind, _, label = tag.partition("-")
        if kind == "I" and found and found[-1][0] == label and found[-1][1][-1] == i - 1:
            found[-1][1].append(i)
        else:
            found.append((label, [i]))
    out: list[tuple[Span, list[int]]] = []
    for label, indexes in found:
        start, end = tokens[indexes[0]][1], tokens[indexes[-1]][2]
        out.append((Span(start=start, end=end, label=label, text=text[start:end]), indexes))
    return out


@dataclass(frozen=True, slots=True)
class EntityPrediction:
    spans: tuple[Span, ...]
    confidence: float
    """The probability of the whole tag sequence (see the module docstring)."""

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(span.label for span in self.spans))


def _key(span: Span) -> tuple[int, int, str]:
    return span.start, span.end, span.label


EntityExample = tuple[str, tuple[Span, ...]]


@dataclass(frozen=True, slots=True)
class EntityModel:
    task: TaskType
    labels: tuple[str, ...]
    """The entity types the examples used (the task's labels first)."""
    trained_on: int
    holdout_accuracy: float | None
    """Share of held-out items whose spans the model found exactly (every one, and no other)."""
    train_seconds: float
    config: EntityModelConfig
    model_bytes: bytes

    def predict(self, text: str, label_space: Sequence[str] = ()) -> EntityPrediction:
        return self.predict_many([text], label_space)[0]

    def predict_many(self, texts: Sequence[str], label_space: Sequence[str] = ()) -> list[EntityPrediction]:
        """Spans of ``texts``; with a ``label_space`` (the item's task labels) spans of other types are dropped,
        since a type the task no longer has cannot be proposed."""
        allowed = set(label_space)
        tagger = pycrfsuite.Tagger()
        tagger.open_inmemory(self.model_bytes)
        try:
            return [self._predict(tagger, text[: self.config.max_chars], allowed) for text in texts]
        finally:
            tagger.close()

    @staticmethod
    def _predict(tagger: pycrfsuite.Tagger, text: str, allowed: set[str]) -> EntityPrediction:
        tokens = tokenize(text)
        if not tokens:
            return EntityPrediction((), 1.0)
        tags = [str(tag) for tag in tagger.tag(features(tokens))]
        sequence = float(tagger.probability(tags))
        spans: list[Span] = []
        for span, indexes in spans_from_tags(text, tokens, tags):
            if allowed and span.label not in allowed:
                continue
            confidence = min(float(tagger.marginal(tags[i], i)) for i in indexes)
            spans.append(span.model_copy(update={"confidence": min(max(confidence, 0.0), 1.0)}))
        return EntityPrediction(tuple(spans), min(max(sequence, 0.0), 1.0))


def entity_trainable(spans: Sequence[Sequence[Span]], min_examples: int) -> bool:
    """Enough reviewed items, and at least one entity among them (an all-``O`` model would propose nothing)."""
    return len(spans) >= max(min_examples, 1) and any(spans)


def _fit(examples: Sequence[EntityExample], config: EntityModelConfig) -> bytes:
    trainer = pycrfsuite.Trainer(verbose=False)
    for text, spans in examples:
        tokens = tokenize(text)
        if tokens:
            trainer.append(features(tokens), bio_tags(tokens, spans))
    trainer.set_params(
        {
            "c1": config.c1,
            "c2": config.c2,
            "max_iterations": config.max_iterations,
            "feature.possible_transitions": True,
        }
    )
    # crfsuite writes its model to a file; the bytes are kept in memory and the file removed at once.
    handle, path = tempfile.mkstemp(prefix="labelgate-crf-", suffix=".crfsuite")
    os.close(handle)
    try:
        trainer.train(path)
        with open(path, "rb") as file:
            return file.read()
    finally:
        os.unlink(path)


def _holdout_accuracy(examples: Sequence[EntityExample], config: EntityModelConfig) -> float | None:
    every = config.holdout_every
    if every < 2:
        return None
    held = [examples[i] for i in range(len(examples)) if i % every == every - 1]
    kept = [examples[i] for i in range(len(examples)) if i % every != every - 1]
    if len(held) < config.min_holdout or not any(spans for _, spans in kept):
        return None
    model = EntityModel(TaskType.entities, (), len(kept), None, 0.0, config, _fit(kept, config))
    predictions = model.predict_many([text for text, _ in held])
    hits = sum(
        {_key(s) for s in prediction.spans} == {_key(s) for s in spans}
        for prediction, (_, spans) in zip(predictions, held, strict=True)
    )
    return hits / len(held)


def train_entities(
    texts: Sequence[str],
    spans: Sequence[Sequence[Span]],
    *,
    label_space: Sequence[str] = (),
    config: EntityModelConfig | None = None,
) -> EntityModel:
    """Fit a CRF on reviewed items (``spans[i]`` are the entities a reviewer marked in ``texts[i]``).

    As for classification, keep the examples in a stable order: every ``holdout_every``-th one is held out to
    measure accuracy on a first fit, and the model returned is fitted on all of them."""
    started = time.perf_counter()
    config = config or EntityModelConfig()
    examples = [
        (text[: config.max_chars], tuple(s for s in item_spans if s.end <= config.max_chars))
        for text, item_spans in zip(texts, spans, strict=True)
    ]
    if not any(item_spans for _, item_spans in examples):
        raise EntityTrainingError("no entity in any example")
    seen = sorted({s.label for _, item_spans in examples for s in item_spans})
    accuracy = _holdout_accuracy(examples, config)
    model_bytes = _fit(examples, config)
    return EntityModel(
        task=TaskType.entities,
        labels=tuple(dict.fromkeys([*label_space, *seen])),
        trained_on=len(examples),
        holdout_accuracy=accuracy,
        train_seconds=time.perf_counter() - started,
        config=config,
        model_bytes=model_bytes,
    )
