"""Several providers label the same item; every member's proposal is kept and their agreement measured."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from labelgate_core.errors import RetriableError
from labelgate_core.events import Proposal

from ..provider import LabelProvider, LabelRequest
from .pricing import Usage
from .provider import ProviderUnavailableError


@dataclass(frozen=True, slots=True)
class EnsembleResult:
    combined: Proposal
    members: tuple[Proposal, ...]
    agreement: float | None


def combine(members: Sequence[Proposal], *, model_id: str) -> EnsembleResult:
    """The label set (and spans, for entities) most members proposed. Members with no labels and no error
    abstain (a local model before its first training); an invalid member counts as a dissent. ``agreement``
    is the share of voting members that proposed the chosen set; the combined confidence is the lowest among
    those that agree."""
    voters = [m for m in members if m.invalid or m.labels]
    cost = sum(m.cost_usd for m in members)
    tokens = {
        "input_tokens": sum(m.input_tokens for m in members),
        "cached_tokens": sum(m.cached_tokens for m in members),
        "output_tokens": sum(m.output_tokens for m in members),
        "attempts": sum(m.attempts for m in members),
    }
    guideline = next((m.guideline_version for m in members if m.guideline_version is not None), None)
    common = {"model_id": model_id, "model_version": 0, "cost_usd": cost, "guideline_version": guideline,
              "method": "ensemble", **tokens}
    valid = [m for m in voters if not m.invalid]
    if not valid:
        invalid = bool(voters)
        error = "; ".join(m.error for m in voters if m.error)[:500] or None
        return EnsembleResult(
            Proposal(**common, labels=(), confidence=None, invalid=invalid, error=error), tuple(members), None
        )
    counts = Counter(_answer(m) for m in valid)
    best, _ = max(counts.items(), key=lambda kv: (kv[1], -_first_index(valid, kv[0])))
    agreeing = [m for m in valid if _answer(m) == best]
    agreement = len(agreeing) / len(voters)
    confidences = [m.confidence for m in agreeing]
    confidence = None if any(c is None for c in confidences) else min(c for c in confidences if c is not None)
    first = agreeing[0]
    combined = Proposal(**common, labels=first.labels, confidence=confidence, agreement=agreement,
                        spans=first.spans, boxes=first.boxes)
    return EnsembleResult(combined, tuple(members), agreement)


_Answer = tuple[frozenset[str], frozenset[tuple[int, int, str]]]


def _answer(member: Proposal) -> _Answer:
    """What members must share to agree: the label set, and for entities the spans (offsets and type). Boxes
    agree by their labels (pixel coordinates of two models never match exactly)."""
    return frozenset(member.labels), frozenset((s.start, s.end, s.label) for s in member.spans)


def _first_index(members: Sequence[Proposal], answer: _Answer) -> int:
    return next(i for i, m in enumerate(members) if _answer(m) == answer)


class EnsembleProvider:
    runs_in_transaction = False

    def __init__(self, members: Sequence[LabelProvider]) -> None:
        if len(members) < 2:
            raise ValueError("an ensemble needs at least two providers")
        self.members = tuple(members)
        self._model_id = "ensemble:" + "+".join(m.model_id for m in self.members)

    @property
    def model_id(self) -> str:
        return self._model_id

    async def propose_all(self, request: LabelRequest) -> EnsembleResult:
        results = await asyncio.gather(*(m.propose(request) for m in self.members), return_exceptions=True)
        unavailable = [r for r in results if isinstance(r, RetriableError)]
        if unavailable:
            # The item waits for every member (a partial ensemble would hide a dissent); what the others were
            # billed is carried along so that the spend is still recorded.
            billed = sum(r.cost_usd for r in results if isinstance(r, Proposal))
            billed += sum(r.cost_usd for r in unavailable if isinstance(r, ProviderUnavailableError))
            attempts = sum(r.attempts for r in results if isinstance(r, Proposal | ProviderUnavailableError))
            raise ProviderUnavailableError(str(unavailable[0]), usage=Usage(), cost_usd=billed, attempts=attempts)
        proposals: list[Proposal] = []
        for member, result in zip(self.members, results, strict=True):
            if isinstance(result, BaseException):
                proposals.append(Proposal(model_id=member.model_id, model_version=0, labels=(), confidence=None,
                                          error=f"{type(result).__name__}: {result}"[:500]))
            else:
                proposals.append(result)
        return combine(proposals, model_id=self._model_id)

    async def propose(self, request: LabelRequest) -> Proposal:
        return (await self.propose_all(request)).combined
