"""Economics: what a final label costs with the gate (LLM spend plus reviewer time) against labeling every
item by hand at the same hourly rate."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CostReport:
    n_final: int
    llm_cost_usd: float
    review_cost_usd: float
    baseline_cost_usd: float
    """Every final label made by a person, at ``baseline_seconds_per_label`` each."""
    baseline_seconds_per_label: float

    @property
    def total_cost_usd(self) -> float:
        return self.llm_cost_usd + self.review_cost_usd

    @property
    def cost_per_label_usd(self) -> float | None:
        return self.total_cost_usd / self.n_final if self.n_final else None

    @property
    def baseline_per_label_usd(self) -> float | None:
        return self.baseline_cost_usd / self.n_final if self.n_final else None

    @property
    def savings_usd(self) -> float:
        return self.baseline_cost_usd - self.total_cost_usd

    @property
    def savings_share(self) -> float | None:
        """Share of the all-human cost saved (negative when the gate costs more)."""
        return self.savings_usd / self.baseline_cost_usd if self.baseline_cost_usd else None


def cost_report(
    *,
    n_final: int,
    llm_cost_usd: float,
    reviewer_seconds: float,
    n_reviewed: int,
    hourly_rate_usd: float,
    human_seconds_per_label: float | None = None,
) -> CostReport:
    """Cost per final label = (LLM cost + reviewer seconds x hourly rate / 3600) / final labels.

    The all-human baseline labels all ``n_final`` items at ``human_seconds_per_label`` each; by default the
    observed seconds per review, which is conservative: checking a proposal is usually faster than labeling
    from scratch, so the real baseline costs more."""
    if min(n_final, n_reviewed) < 0 or min(llm_cost_usd, reviewer_seconds, hourly_rate_usd) < 0:
        raise ValueError("counts, costs, seconds and rates must be non-negative")
    if n_reviewed > n_final:
        raise ValueError("more reviewed items than final labels")
    per_label = human_seconds_per_label
    if per_label is None:
        per_label = reviewer_seconds / n_reviewed if n_reviewed else 0.0
    per_second = hourly_rate_usd / 3600.0
    return CostReport(
        n_final=n_final,
        llm_cost_usd=llm_cost_usd,
        review_cost_usd=reviewer_seconds * per_second,
        baseline_cost_usd=n_final * per_label * per_second,
        baseline_seconds_per_label=per_label,
    )
