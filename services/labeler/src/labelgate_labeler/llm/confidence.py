"""Confidence from what an endpoint returns: the label tokens' log-probabilities, agreement of sampled
answers, or (last resort) the model's own stated number.

Entities and boxes get a confidence each: the share of sampled answers that contain the same span (same
offsets and type) or a matching box (same label, IoU at least ``BOX_MATCH_IOU``); else the stated one; else
the probability of the type (label) token among the task's labels. The item's confidence is, with samples,
the share of samples that give exactly the same set (the chance the whole answer is right, which is what a
reviewer confirms unchanged); otherwise that of its least confident span or box, and an answer with none
is unscored (nothing says how sure the model is that there is nothing to mark).

Multi-label items get a probability per label (``Proposal.scores``: P(label applies)), from the log-probability
of its yes/no token, else the share of samples that include it, else the stated one; the item's confidence is
that of its least certain label, ``min(max(p, 1 - p))``: one doubtful label makes the set doubtful."""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from labelgate_core.events import Box, Span, TaskSpec, TaskType

_LABEL_VALUE = re.compile(r'"label"\s*:\s*"')
BOX_MATCH_IOU = 0.5
"""Two boxes of one label are the same object when their intersection over union reaches this."""


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
    return _value_scores(content, tokens, span[0], span[1], label, task.label_names)


def _token_at(tokens: Sequence[TokenLogprob], position: int) -> tuple[int, int] | None:
    """The index of the token that holds character ``position`` of the content, and where that token starts."""
    offset = 0
    for i, token in enumerate(tokens):
        if offset <= position < offset + len(token.token):
            return i, offset
        offset += len(token.token)
    return None


def _value_scores(
    content: str, tokens: Sequence[TokenLogprob], value_start: int, value_end: int, label: str,
    names: Sequence[str],
) -> dict[str, float] | None:
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


def _json_key(name: str) -> re.Pattern[str]:
    quoted = {json.dumps(name), json.dumps(name, ensure_ascii=False)}
    return re.compile("(?:" + "|".join(re.escape(q) for q in quoted) + r")\s*:\s*")


def membership_scores(content: str, tokens: Sequence[TokenLogprob], task: TaskSpec) -> dict[str, float] | None:
    """Multi-label, from a ``{"labels": {<label>: true|false}}`` answer: P(label applies) for every label, from
    the probabilities of ``true`` and ``false`` at its value, renormalised over the two. None unless every
    label's value lines up with the tokens."""
    if task.type is not TaskType.multi_label or not tokens:
        return None
    opened = re.search(r'"labels"\s*:\s*\{', content)
    if opened is None:
        return None
    scores: dict[str, float] = {}
    for name in task.label_names:
        key = _json_key(name).search(content, opened.end())
        if key is None:
            return None
        at = _token_at(tokens, key.end())
        if at is None:
            return None
        index, offset = at
        lead = tokens[index].token[: key.end() - offset]
        alternatives = dict(tokens[index].top)
        alternatives.setdefault(tokens[index].token, tokens[index].logprob)
        yes = no = 0.0
        for alt, logprob in alternatives.items():
            piece = alt[len(lead) :].strip() if alt.startswith(lead) else ""
            if piece and ("true".startswith(piece) or piece.startswith("true")):
                yes += math.exp(logprob)
            elif piece and ("false".startswith(piece) or piece.startswith("false")):
                no += math.exp(logprob)
        if yes + no <= 0.0:
            return None
        scores[name] = yes / (yes + no)
    return scores


def item_value_probabilities(
    content: str, tokens: Sequence[TokenLogprob], key: str, chosen: Sequence[str], names: Sequence[str]
) -> list[float] | None:
    """For an answer listing objects (entities, boxes), the probability of each object's ``key`` value (its type
    or label) among ``names`` at the position where the model wrote it, in the order of the answer. None when
    the values cannot be tied to the tokens."""
    if not tokens:
        return None
    pattern = re.compile(r'"' + re.escape(key) + r'"\s*:\s*"')
    starts = [m.end() for m in pattern.finditer(content)]
    if len(starts) != len(chosen):
        return None
    out: list[float] = []
    for start, label in zip(starts, chosen, strict=True):
        if content[start : start + len(label)] != label:
            return None
        scores = _value_scores(content, tokens, start, start + len(label), label, names)
        if scores is None:
            return None
        out.append(scores[label])
    return out


def _span_key(span: Span) -> tuple[int, int, str]:
    return span.start, span.end, span.label


def span_agreement(spans: Sequence[Span], samples: Sequence[Sequence[Span] | None]) -> tuple[list[float], float]:
    """Each span's share of samples that contain it, and the share of samples with exactly the same spans
    (an invalid sample, None, contains nothing and agrees with nothing)."""
    n = len(samples)
    if n == 0:
        return [], 0.0
    keys = [{_span_key(s) for s in sample} if sample is not None else None for sample in samples]
    own = {_span_key(s) for s in spans}
    each = [sum(k is not None and _span_key(s) in k for k in keys) / n for s in spans]
    whole = sum(k == own for k in keys) / n
    return each, whole


def iou(a: Box, b: Box) -> float:
    width = min(a.x + a.width, b.x + b.width) - max(a.x, b.x)
    height = min(a.y + a.height, b.y + b.height) - max(a.y, b.y)
    if width <= 0 or height <= 0:
        return 0.0
    inter = width * height
    return inter / (a.width * a.height + b.width * b.height - inter)


def _matched(boxes: Sequence[Box], sample: Sequence[Box]) -> list[bool]:
    """Greedy one-to-one matching of ``boxes`` to ``sample`` (best overlap first): which boxes found a partner."""
    pairs = sorted(
        ((iou(a, b), i, j) for i, a in enumerate(boxes) for j, b in enumerate(sample) if a.label == b.label),
        reverse=True,
    )
    used_a: set[int] = set()
    used_b: set[int] = set()
    for overlap, i, j in pairs:
        if overlap < BOX_MATCH_IOU:
            break
        if i not in used_a and j not in used_b:
            used_a.add(i)
            used_b.add(j)
    return [i in used_a for i in range(len(boxes))]


def box_agreement(boxes: Sequence[Box], samples: Sequence[Sequence[Box] | None]) -> tuple[list[float], float]:
    """Each box's share of samples holding a matching box, and the share of samples whose boxes all match
    these one to one."""
    n = len(samples)
    if n == 0:
        return [], 0.0
    found = [_matched(boxes, sample) if sample is not None else [False] * len(boxes) for sample in samples]
    each = [sum(f[i] for f in found) / n for i in range(len(boxes))]
    whole = sum(
        sample is not None and len(sample) == len(boxes) and all(f)
        for sample, f in zip(samples, found, strict=True)
    ) / n
    return each, whole
