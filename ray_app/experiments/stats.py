"""Statistics for conversion-rate A/B tests (fixed-horizon, frequentist).

We use a fixed-horizon design: the sample size per variant is planned up front and no winner
is declared before it is reached, because repeatedly peeking at a fixed-horizon p-value
inflates the false-positive rate far above ``alpha``. The test is the pooled two-proportion
z-test, the normal approximation that is accurate at the hundreds-to-millions of requests an
online experiment collects.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats


def _check_counts(successes: int, n: int, name: str = "") -> None:
    if n < 0 or successes < 0 or successes > n:
        raise ValueError(f"{name}successes={successes}, n={n}: need 0 ≤ successes ≤ n")


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion; ``(0, 1)`` when ``n == 0``.

    Preferred over the Wald interval because it stays inside [0, 1] and keeps its coverage
    near rates of 0 or 1.
    """
    _check_counts(successes, n)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n == 0:
        return 0.0, 1.0
    z = float(stats.norm.ppf(0.5 + confidence / 2))
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # Exact ends at 0 and n: floating-point rounding must not exclude the point estimate.
    lo = 0.0 if successes == 0 else max(0.0, centre - half)
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return lo, hi


def two_proportion_ztest(s1: int, n1: int, s2: int, n2: int) -> tuple[float, float]:
    """Pooled two-sided z-test of ``p1 == p2``; returns ``(z, p_value)`` with z for p2 − p1.

    Degenerate inputs (an empty group, or a pooled rate of 0 or 1) give ``(0.0, 1.0)``: there
    is no evidence of a difference.
    """
    _check_counts(s1, n1, "group 1: ")
    _check_counts(s2, n2, "group 2: ")
    if n1 == 0 or n2 == 0:
        return 0.0, 1.0
    pooled = (s1 + s2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return 0.0, 1.0
    z = (s2 / n2 - s1 / n1) / se
    return z, float(2 * stats.norm.sf(abs(z)))


def cohens_h(p1: float, p2: float) -> float:
    """Cohen's h effect size for two proportions, ``2·asin(√p2) − 2·asin(√p1)``."""
    for name, p in (("p1", p1), ("p2", p2)):
        if not 0 <= p <= 1:
            raise ValueError(f"{name} must be a proportion in [0, 1], got {p}")
    return 2 * math.asin(math.sqrt(p2)) - 2 * math.asin(math.sqrt(p1))


def required_sample_size(p1: float, p2: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """Requests per variant to detect ``p1`` vs ``p2`` (two-sided), via Cohen's h.

    ``n = 2·((z_{1−α/2} + z_{power}) / h)²`` (each arcsine-transformed rate has variance
    ``1/(4n)``, so their difference ``h`` has ``2/n`` after the factor 2); infinite when
    ``p1 == p2``. Matches Cohen's (1988) tables and statsmodels' ``NormalIndPower``.
    """
    if not 0 < alpha < 1 or not 0 < power < 1:
        raise ValueError(f"alpha and power must be in (0, 1), got alpha={alpha}, power={power}")
    h = abs(cohens_h(p1, p2))
    if h == 0:
        return math.inf
    z = float(stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power))
    return 2 * (z / h) ** 2


def srm_test(counts: Sequence[int], weights: Sequence[float]) -> tuple[float, float]:
    """Sample-ratio-mismatch chi-square test of observed counts against configured weights.

    Returns ``(chi2, p_value)``. A tiny p-value (conventionally < 0.001) means assignment is
    broken — a bucketing bug or a variant that drops traffic — and the comparison is not
    trustworthy whatever its p-value.
    """
    obs = np.asarray(counts, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    if obs.shape != w.shape or obs.ndim != 1 or len(obs) < 2:
        raise ValueError(
            f"need ≥ 2 variants with one weight each, got {len(obs)} counts, {len(w)} weights"
        )
    if (w <= 0).any():
        raise ValueError(f"weights must be positive, got {list(weights)}")
    if obs.sum() == 0:
        return 0.0, 1.0
    expected = w / w.sum() * obs.sum()
    chi2, p = stats.chisquare(obs, expected)
    return float(chi2), float(p)
