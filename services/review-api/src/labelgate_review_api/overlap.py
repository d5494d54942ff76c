"""Overlapped review: which tasks several reviewers answer, how their answers become one label (consensus), and
how well reviewers agree with each other (human-vs-human agreement, ambiguous guidelines).

An answer is the set of labels one reviewer gave; consensus and the kappas compare whole answers."""

from __future__ import annotations

import hashlib
import logging
from collections import Counter, defaultdict
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from labelgate_core.events import TaskType
from labelgate_quality.agreement import cohen_kappa, fleiss_kappa, krippendorff_alpha, label_agreement
from labelgate_quality.consensus import Annotation, dawid_skene, majority_vote

from .schemas import (
    AgreementPublic,
    AiAgreementPublic,
    ConsensusMethod,
    LabelAgreementPublic,
    ReviewerAiAgreementPublic,
    VersionAgreementPublic,
)

log = logging.getLogger(__name__)

OVERLAP_TASK_TYPES = frozenset({TaskType.classification, TaskType.multi_label})
"""Task types whose answers can be voted on as label sets (entities and boxes are reviewed once)."""

AnswerKey = tuple[str, ...]


def answer_key(labels: Sequence[str]) -> AnswerKey:
    return tuple(sorted(set(labels)))


def overlap_draw(project_id: str, item_id: str, round_no: int) -> float:
    """A uniform number in [0, 1) fixed by the item and its review round: a replayed decision draws the same."""
    digest = hashlib.sha256(f"overlap\x00{project_id}\x00{item_id}\x00{round_no}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def answers_needed(task_type: TaskType, routing: Mapping[str, Any], draw: float) -> int:
    """How many reviewers answer a new task: ``overlap_k`` for the drawn share ``overlap_rate``, else one."""
    rate = float(routing.get("overlap_rate") or 0.0)
    if task_type not in OVERLAP_TASK_TYPES or draw >= rate:
        return 1
    return int(routing.get("overlap_k") or 2)


@dataclass(frozen=True, slots=True)
class Consensus:
    labels: AnswerKey
    method: ConsensusMethod
    support: float
    """Majority: share of the answers that gave ``labels``; Dawid-Skene: its posterior probability."""
    tied: bool


def consensus(
    answers: Sequence[tuple[str, AnswerKey]],
    *,
    method: ConsensusMethod,
    history: Sequence[Annotation] = (),
    min_history: int = 50,
) -> Consensus:
    """One answer from a round's ``(reviewer, answer)`` pairs.

    Majority vote by default; a tie is reported (``tied``) so that the caller can ask one more reviewer.
    Dawid-Skene when ``method`` asks for it and ``history`` (the project's earlier overlapped answers) holds at
    least ``min_history`` answers: it estimates each reviewer's accuracy from all of them, so it needs data; it
    decides ties itself. Without crowd-kit installed it falls back to majority vote."""
    round_item = "\x00round"
    current = [Annotation(round_item, reviewer, key) for reviewer, key in answers]
    vote = majority_vote(current)[round_item]
    if method is ConsensusMethod.dawid_skene and len(history) >= min_history:
        try:
            result = dawid_skene([*history, *current])
        except ImportError:
            log.warning("Dawid-Skene needs crowd-kit (labelgate-quality[crowd]); using majority vote")
        else:
            ds_vote = result.votes[round_item]
            return Consensus(_key(ds_vote.label), ConsensusMethod.dawid_skene, ds_vote.support, tied=False)
    return Consensus(_key(vote.label), ConsensusMethod.majority, vote.support, vote.tied)


def _key(label: Hashable) -> AnswerKey:
    if not isinstance(label, tuple):
        raise TypeError(f"an answer is a tuple of labels, got {label!r}")
    return tuple(str(part) for part in label)


def _code(key: AnswerKey) -> str:
    """An answer as one nominal value for the kappas (the libraries take scalars, not tuples)."""
    return "+".join(key)


def history_annotations(reviews: Sequence[Mapping[str, object]]) -> list[Annotation]:
    """Stored overlapped answers as annotations, one item per review round."""
    return [
        Annotation(str(r["group"]), str(r["reviewer_id"]), answer_key(r["labels"]))  # type: ignore[arg-type]
        for r in reviews
    ]


def agreement_report(
    reviews: Sequence[Mapping[str, object]],
    *,
    threshold: float,
    min_support: int,
    answers: Sequence[Mapping[str, object]] = (),
    tasks: Mapping[str, Mapping[str, Any]] | None = None,
) -> AgreementPublic:
    """Human-vs-human agreement over the overlapped answers ``reviews`` (stored review documents), overall and per
    guideline version; with ``tasks`` (the answered tasks by id, which hold the proposal and the guideline version
    of each answer), human-vs-AI agreement over ``answers`` (any answers) per reviewer and per version."""
    tasks = tasks or {}
    overall = _human_agreement(reviews, threshold=threshold, min_support=min_support)
    overlapped_by_version: dict[int, list[Mapping[str, object]]] = defaultdict(list)
    for review in reviews:
        version = _version(review, tasks)
        if version is not None:
            overlapped_by_version[version].append(review)
    pairs_by_version: dict[int, list[tuple[AnswerKey, AnswerKey]]] = defaultdict(list)
    pairs_by_reviewer: dict[str, list[tuple[AnswerKey, AnswerKey]]] = defaultdict(list)
    for review in answers:
        task = tasks.get(str(review["task_id"]))
        proposed = (task or {}).get("proposal") or {}
        if task is None or not proposed.get("labels"):
            continue  # no AI label to compare with (an unscored item)
        pair = (answer_key(review["labels"]), answer_key(proposed["labels"]))  # type: ignore[arg-type]
        pairs_by_reviewer[str(review["reviewer_id"])].append(pair)
        version = _version(review, tasks)
        if version is not None:
            pairs_by_version[version].append(pair)
    versions = sorted(set(overlapped_by_version) | set(pairs_by_version))
    return AgreementPublic(
        **overall,
        by_guideline_version=[
            VersionAgreementPublic(
                guideline_version=version,
                **_human_agreement(overlapped_by_version[version], threshold=threshold, min_support=min_support),
                human_vs_ai=AiAgreementPublic(**_ai_agreement(pairs_by_version[version])),
            )
            for version in versions
        ],
        reviewers_vs_ai=[
            ReviewerAiAgreementPublic(reviewer_id=reviewer, **_ai_agreement(pairs))
            for reviewer, pairs in sorted(pairs_by_reviewer.items())
        ],
    )


def _version(review: Mapping[str, object], tasks: Mapping[str, Mapping[str, Any]]) -> int | None:
    """The guideline version an answer was given under: its task's."""
    task = tasks.get(str(review["task_id"]))
    version = (task or {}).get("guideline_version")
    return int(version) if version is not None else None


def _ai_agreement(pairs: Sequence[tuple[AnswerKey, AnswerKey]]) -> dict[str, Any]:
    """Answers against proposals, each compared as a whole label set."""
    return {
        "items": len(pairs),
        "raw_agreement": sum(human == ai for human, ai in pairs) / len(pairs) if pairs else None,
        "cohen_kappa": cohen_kappa([_code(h) for h, _ in pairs], [_code(a) for _, a in pairs]) if pairs else None,
    }


def _human_agreement(
    reviews: Sequence[Mapping[str, object]], *, threshold: float, min_support: int
) -> dict[str, Any]:
    """The human-vs-human figures of ``agreement_report`` over the overlapped answers ``reviews``."""
    rounds: dict[str, list[tuple[str, AnswerKey]]] = defaultdict(list)
    for review in sorted(reviews, key=lambda r: str(r["created_at"])):
        rounds[str(review["group"])].append(
            (str(review["reviewer_id"]), answer_key(review["labels"]))  # type: ignore[arg-type]
        )
    rated = {group: answers for group, answers in rounds.items() if len(answers) >= 2}
    pairs = [answers for answers in rated.values() if len(answers) == 2]
    cohen = cohen_kappa([_code(a[0][1]) for a in pairs], [_code(a[1][1]) for a in pairs]) if pairs else None
    fleiss = None
    if rated:
        most_common = Counter(len(answers) for answers in rated.values()).most_common(1)[0][0]
        rows = [[_code(key) for _, key in answers] for answers in rated.values() if len(answers) == most_common]
        fleiss = fleiss_kappa(rows) if len(rows) >= 2 else None
    alpha = None
    if rated:
        reviewers = sorted({reviewer for answers in rated.values() for reviewer, _ in answers})
        groups = sorted(rated)
        by_reviewer = {group: {r: _code(key) for r, key in answers} for group, answers in rated.items()}
        matrix = [[by_reviewer[group].get(reviewer) for group in groups] for reviewer in reviewers]
        alpha = krippendorff_alpha(matrix)
    per_label = label_agreement(
        {group: [label for _, key in answers for label in key] for group, answers in rated.items()},
        threshold=threshold,
        min_support=min_support,
    )
    return {
        "overlapped_items": len(rated),
        "answers": sum(len(answers) for answers in rated.values()),
        "cohen_kappa": cohen,
        "fleiss_kappa": fleiss,
        "krippendorff_alpha": alpha,
        "labels": [
            LabelAgreementPublic(
                label=a.label, support=a.support, specific_agreement=a.specific_agreement, ambiguous=a.ambiguous
            )
            for a in per_label
        ],
        "ambiguous_labels": [a.label for a in per_label if a.ambiguous],
    }
