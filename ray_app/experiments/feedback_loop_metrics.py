"""What a feedback-loop cycle is judged by, and the trend of each figure over cycles.

Per cycle, over the lists served to every simulated user (item indices, -1 padding):

* ``gini``: Gini of rank-weighted exposure (``1 / log2(rank + 1)`` per slot) over the whole
  catalogue, so never-shown items count as 0 (the fairness block's exposure Gini);
* ``coverage``: share of the catalogue shown at least once;
* ``mean_popularity``: mean share of training users who had interacted with a shown item;
* ``overlap``: mean Jaccard index of two users' lists over every pair of users;
* ``ndcg``: NDCG@k of the served lists against each user's still-hidden liked items;
* ``conversion``: share of served lists from which the user watched something.

A trend is the least-squares slope over cycles with a Student-t interval on it
(``scipy.stats.linregress``); an echo chamber is flagged when the exposure Gini's interval lies
wholly above zero: inequality of exposure grows with every retraining.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy import stats

from ray_app.evaluation.fairness import gini, slot_exposure
from ray_app.evaluation.metrics import catalog_coverage, ndcg_at_k

METRICS: tuple[str, ...] = (
    "gini",
    "coverage",
    "mean_popularity",
    "overlap",
    "ndcg",
    "conversion",
)


def list_overlap(lists: np.ndarray, n_items: int) -> float:
    """Mean Jaccard index of the item sets of every pair of rows of ``lists``."""
    n = lists.shape[0]
    if n < 2:
        return float("nan")
    valid = lists >= 0
    rows = np.repeat(np.arange(n), lists.shape[1])[valid.ravel()]
    x = sp.csr_matrix((np.ones(rows.size), (rows, lists[valid])), shape=(n, max(n_items, 1)))
    x.data[:] = 1.0  # a list that repeats an item still counts it once
    inter = (x @ x.T).toarray()
    size = np.asarray(x.sum(axis=1)).ravel()
    union = size[:, None] + size[None, :] - inter
    jac = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    upper = np.triu_indices(n, k=1)
    return float(jac[upper].mean())


def cycle_metrics(
    lists: np.ndarray,
    n_items: int,
    item_share: np.ndarray,
    hidden_liked: sp.csr_matrix,
    converted: np.ndarray,
    k: int,
) -> dict[str, float]:
    """The figures of one cycle (module docstring). ``item_share`` is each item's share of
    training users; ``hidden_liked`` the user × item matrix of liked, not yet seen items;
    ``converted`` per list, whether the user watched from it."""
    rec = lists[:, :k]
    valid = rec >= 0
    shown_share = item_share[np.maximum(rec, 0)][valid]
    ndcg = ndcg_at_k(rec, hidden_liked, k)
    return {
        "gini": gini(slot_exposure(rec, n_items, rank_weighted=True)),
        "coverage": catalog_coverage(rec, n_items),
        "mean_popularity": float(shown_share.mean()) if shown_share.size else float("nan"),
        "overlap": list_overlap(rec, n_items),
        "ndcg": float(np.nanmean(ndcg)) if np.isfinite(ndcg).any() else float("nan"),
        "conversion": float(np.mean(converted)) if len(converted) else float("nan"),
    }


@dataclass(frozen=True)
class Trend:
    """Least-squares slope of a figure over cycles with its interval."""

    slope: float
    low: float
    high: float
    intercept: float
    p_value: float
    cycles: int

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)


def fit_trend(values: Sequence[float] | np.ndarray, confidence: float = 0.95) -> Trend:
    """Slope of ``values`` against the cycle number (0, 1, …) with a two-sided Student-t
    ``confidence`` interval (n - 2 degrees of freedom); NaN bounds below three cycles."""
    y = np.asarray(values, dtype=np.float64)
    x = np.arange(len(y), dtype=np.float64)
    ok = np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(y) < 2:
        nan = float("nan")
        return Trend(nan, nan, nan, nan, nan, len(y))
    if np.ptp(y) == 0:
        return Trend(0.0, 0.0, 0.0, float(y[0]), 1.0, len(y))
    fit = stats.linregress(x, y)
    if len(y) < 3:
        nan = float("nan")
        return Trend(float(fit.slope), nan, nan, float(fit.intercept), nan, len(y))
    t = float(stats.t.ppf(0.5 + confidence / 2, len(y) - 2))
    half = t * float(fit.stderr)
    return Trend(
        float(fit.slope),
        float(fit.slope) - half,
        float(fit.slope) + half,
        float(fit.intercept),
        float(fit.pvalue),
        len(y),
    )


def echo_chamber(gini_trend: Trend) -> bool:
    """True when the exposure Gini's slope interval lies wholly above zero."""
    return bool(np.isfinite(gini_trend.low) and gini_trend.low > 0)
