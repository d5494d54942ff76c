"""Typed wrappers around statsmodels, which ships no type information: the untyped calls stay in this module.

statsmodels (and pandas with it) is imported on first use: the router only calibrates, and should not pay
seconds of import time at start-up for it."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray


def proportion_lower_bound(
    successes: ArrayLike, trials: ArrayLike, confidence_level: float = 0.95, method: str = "wilson"
) -> NDArray[np.float64]:
    """One-sided lower confidence bound of a binomial proportion at ``confidence_level``.

    statsmodels gives two-sided intervals; the lower end of the two-sided (1 - 2 alpha) interval is the one-sided
    (1 - alpha) lower bound. ``method`` is ``"wilson"`` or ``"beta"`` (Clopper-Pearson)."""
    if not 0.5 <= confidence_level < 1.0:
        raise ValueError("confidence_level must be in [0.5, 1)")
    from statsmodels.stats.proportion import proportion_confint  # type: ignore[import-untyped]

    count = np.asarray(successes, dtype=np.float64)
    nobs = np.asarray(trials, dtype=np.float64)
    lower: Any
    lower, _ = proportion_confint(count, nobs, alpha=2 * (1.0 - confidence_level), method=method)
    return np.nan_to_num(np.asarray(lower, dtype=np.float64), nan=0.0)


def fleiss_kappa_of_table(table: ArrayLike) -> float:
    """Fleiss' kappa from an items x categories table of counts (each row sums to the number of raters)."""
    from statsmodels.stats.inter_rater import fleiss_kappa  # type: ignore[import-untyped, unused-ignore]

    return float(fleiss_kappa(np.asarray(table, dtype=np.float64), method="fleiss"))


def counts_table(codes: ArrayLike) -> NDArray[np.float64]:
    """An items x raters matrix of category codes (0..k-1) → items x categories counts."""
    from statsmodels.stats.inter_rater import aggregate_raters  # type: ignore[import-untyped, unused-ignore]

    table: Any
    table, _ = aggregate_raters(np.asarray(codes))
    return np.asarray(table, dtype=np.float64)
