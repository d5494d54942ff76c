"""Confidence from what an endpoint returns: the label tokens' log-probabilities, agreement of sampled
answers, or (last resort) the model's own stated number."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from labelgate_core.events import TaskSpec, TaskType

_LABEL_VALUE = re.compile(r'"label"\s*:\s*"')


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()
    """The most likely tokens at this position (the chosen one usually among them), with log-probabilities."""


@dataclass(frozen=True, slots=True)
class Scored:
    labels: tuple[str, ...]
    confidence: float | None
    scores: dict[str, float]


def _label_span(content: str, label: str) -> tuple[int, int] | None:
    match = _LABEL_VALUE.search(content)
    if match is None:
        return None
    start = match.end()
    if content[start : start + len(label)] != label:
        return None
    return start, start + len(label)


def logprob_scores(content: str, tokens: Sequence[TokenLogprob], label: str, task: TaskSpec) -> dict[str, float] | None:
    """Single-label: the distribution over the schema's labels at the position where the label starts,
    renormalised over those labels. Labels sharing the first token split its mass: the chosen one by the
    probability of its own remaining tokens, the others evenly. None when the tokens do not line up."""
    if task.type is not TaskType.classification or not tokens:
        return None
    span = _label_span(content, label)
    if span is None:
        return None
    value_start, value_end = span
    offset = 0
    first: int | None = None
    for i, token in enumerate(tokens):
        if offset <= value_start < offset + len(token.token):
            first = i
            break
        offset += len(token.token)
    if first is None:
        return None
    lead = tokens[first].token[: value_start - offset]
    # Probability of the chosen label's tokens after the first one (inside the value only).
    rest = 0.0
    end = offset + len(tokens[first].token)
    for token in tokens[first + 1 :]:
        if end >= value_end:
            break
        rest += token.logprob
        end += len(token.token)
    alternatives = dict(tokens[first].top)
    alternatives.setdefault(tokens[first].token, tokens[first].logprob)
    names = task.label_names
    mass = dict.fromkeys(names, 0.0)
    for alt, logprob in alternatives.items():
        if not alt.startswith(lead):
            continue
        piece = alt[len(lead) :]
        if not piece:
            continue
        matching = [n for n in names if n.startswith(piece) or piece.startswith(n + '"')]
        if not matching:
            continue
        p = math.exp(logprob)
        if label in matching and len(matching) > 1:
            p_rest = math.exp(rest)
            mass[label] += p * p_rest
            for other in matching:
                if other != label:
                    mass[other] += p * (1.0 - p_rest) / (len(matching) - 1)
        else:
            for n in matching:
                mass[n] += p / len(matching)
    total = sum(mass.values())
    if total <= 0.0 or mass[label] <= 0.0:
        return None
    return {n: m / total for n, m in mass.items()}


def vote(answers: Sequence[tuple[str, ...] | None], task: TaskSpec) -> Scored:
    """Self-consistency over sampled answers (None = an invalid sample, which supports no label).

    Single-label: the majority label, with the share of samples that gave it. Multi-label: the labels most
    samples included; confidence is that of the least certain label (one doubtful label makes the set doubtful)."""
    n = len(answers)
    names = task.label_names
    if n == 0:
        return Scored((), None, {})
    if task.type is TaskType.multi_label:
        counts = Counter(label for answer in answers if answer is not None for label in set(answer))
        freq = {name: counts.get(name, 0) / n for name in names}
        chosen = tuple(name for name in names if freq[name] > 0.5)
        valid = sum(answer is not None for answer in answers) / n
        confidence = min(min((max(f, 1.0 - f) for f in freq.values()), default=1.0), valid)
        return Scored(chosen, confidence, freq)
    counts = Counter(answer[0] for answer in answers if answer)
    if not counts:
        return Scored((), None, {})
    scores = {name: counts.get(name, 0) / n for name in names}
    best = max(names, key=lambda name: (scores[name], -names.index(name)))
    return Scored((best,), scores[best], scores)
