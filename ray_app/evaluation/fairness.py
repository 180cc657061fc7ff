"""Offline fairness of a ranking: accuracy per user group with bootstrap intervals, parity gaps,
miss-rate equality, and exposure by item-popularity bucket.

Everything reads one :class:`~ray_app.evaluation.offline.RankedHoldout` (the same top-``k``
lists the offline metrics come from) and per-user metric arrays, so the block costs one
vectorised pass per group and no re-ranking.

Definitions, at the ranking's cut-off ``k``:

* **Groups** are the columns of :func:`~ray_app.evaluation.offline.user_group_frame` (gender,
  age band, occupation, activity band). A group enters the parity figures only with at least
  ``min_group_users`` holdout users; smaller ones are listed with ``"small": true``.
* **Intervals** are percentile bootstrap intervals of the group mean (users resampled with
  replacement, ``bootstrap_samples`` times), widened to include the point estimate.
* **Parity gap** of a metric over one grouping: largest minus smallest group mean; the
  **ratio** is smallest over largest (1 is parity; ``None`` when the largest is 0).
* **Miss-rate equality difference**: largest minus smallest share of a group's users with no
  relevant item in their top ``k``.
* **Popularity buckets** (Abdollahpouri et al. 2021): items sorted by training interactions,
  most first; *head* items together make up the first ``head_share`` of all interactions,
  *tail* items the last ``tail_share`` (items never interacted with are tail), *mid* the rest.
  Each bucket reports its share of the interactions and of the recommendation slots.
* **List Gini**: Gini coefficient of how many top-``k`` slots each catalogue item gets;
  **exposure Gini** weighs each slot by the rank discount ``1 / log2(rank + 1)``, as
  position-based exposure does (Singh & Joachims 2018). **Coverage**: share of the catalogue
  in at least one list.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ray_app.evaluation import metrics as M
from ray_app.evaluation.offline import RankedHoldout, group_labels

BUCKETS = ("head", "mid", "tail")


class FairnessConfig(BaseModel):
    """How the fairness block of a model version is computed."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    enabled: bool = True
    """Compute the block and store it in every registered version's manifest."""
    bootstrap_samples: int = Field(default=1000, ge=50)
    """Bootstrap resamples per group for the intervals."""
    confidence: float = Field(default=0.95, gt=0, lt=1)
    """Coverage of the intervals."""
    min_group_users: int = Field(default=20, ge=1)
    """Holdout users a group needs to enter the parity gaps (smaller ones are listed only)."""
    head_share: float = Field(default=0.2, gt=0, lt=1)
    """Share of all interactions that the head items make up."""
    tail_share: float = Field(default=0.2, gt=0, lt=1)
    """Share of all interactions that the tail items make up."""
    seed: int = 0
    """Seed of the bootstrap."""

    @model_validator(mode="after")
    def _check_shares(self) -> FairnessConfig:
        if self.head_share + self.tail_share >= 1:
            raise ValueError(
                f"head_share {self.head_share} + tail_share {self.tail_share} must stay below 1"
            )
        return self


def _finite(x: float) -> float | None:
    """JSON has no NaN: undefined figures are ``None``."""
    return float(x) if math.isfinite(x) else None


def bootstrap_mean_interval(
    values: np.ndarray, samples: int, confidence: float, rng: np.random.Generator
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (NaNs dropped), widened to
    contain the sample mean; ``(nan, nan)`` for no values."""
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    if v.size == 0:
        return float("nan"), float("nan")
    means = v[rng.integers(0, v.size, size=(samples, v.size))].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    mean = float(v.mean())
    return min(float(lo), mean), max(float(hi), mean)


def parity(means: dict[str, float]) -> dict[str, Any]:
    """Gap (max - min), ratio (min / max) and which groups are best and worst, over the groups'
    means; ``gap`` is ``None`` with fewer than two groups."""
    defined = {g: m for g, m in means.items() if math.isfinite(m)}
    if len(defined) < 2:
        return {"gap": None, "ratio": None, "best": None, "worst": None, "groups": len(defined)}
    best = max(defined, key=lambda g: defined[g])
    worst = min(defined, key=lambda g: defined[g])
    hi, lo = defined[best], defined[worst]
    return {
        "gap": hi - lo,
        "ratio": lo / hi if hi > 0 else None,
        "best": best,
        "worst": worst,
        "groups": len(defined),
    }


def popularity_buckets(counts: np.ndarray, head_share: float, tail_share: float) -> np.ndarray:
    """Bucket index per item (0 head, 1 mid, 2 tail) from its interaction ``counts``.

    Items are ordered by count, most first (ties by index, so the split is deterministic). An
    item is head while the interactions of the items before it stay below ``head_share`` of
    the total, and tail once those before it reach ``1 - tail_share``.
    """
    counts = np.asarray(counts, dtype=np.float64)
    out = np.full(counts.size, 2, dtype=np.int64)
    total = counts.sum()
    if total <= 0:
        return out
    order = np.argsort(-counts, kind="stable")
    before = (np.cumsum(counts[order]) - counts[order]) / total
    bucket = np.where(before < head_share, 0, np.where(before < 1.0 - tail_share, 1, 2))
    out[order] = np.where(counts[order] > 0, bucket, 2)
    return out


def gini(values: np.ndarray) -> float:
    """Gini coefficient of non-negative ``values`` (0 equal; 0.0 when all are zero)."""
    x = np.sort(np.asarray(values, dtype=np.float64))
    n, total = x.size, x.sum()
    if n <= 1 or total <= 0:
        return 0.0
    ranks = np.arange(1, n + 1, dtype=np.float64)
    # Clamped: for equal values rounding can leave a -1e-16 where the answer is 0.
    return max(0.0, float(2.0 * (ranks * x).sum() / (n * total) - (n + 1.0) / n))


def slot_exposure(recommended: np.ndarray, n_items: int, *, rank_weighted: bool) -> np.ndarray:
    """Exposure per catalogue item over all lists: one per slot, or the rank discount
    ``1 / log2(rank + 1)`` per slot when ``rank_weighted``."""
    rec = np.asarray(recommended)
    weights = np.broadcast_to(
        1.0 / np.log2(np.arange(2, rec.shape[1] + 2, dtype=np.float64))
        if rank_weighted
        else np.ones(rec.shape[1]),
        rec.shape,
    )
    valid = rec >= 0
    return np.bincount(rec[valid], weights=weights[valid], minlength=n_items)


def exposure_by_bucket(
    ranked: RankedHoldout, config: FairnessConfig
) -> dict[str, dict[str, float | int]]:
    """Per popularity bucket: items, share of training interactions, share of recommendation
    slots (and of rank-weighted exposure)."""
    buckets = popularity_buckets(ranked.item_popularity, config.head_share, config.tail_share)
    pop = ranked.item_popularity
    slots = slot_exposure(ranked.recommended, ranked.n_items, rank_weighted=False)
    weighted = slot_exposure(ranked.recommended, ranked.n_items, rank_weighted=True)
    out: dict[str, dict[str, float | int]] = {}
    for b, name in enumerate(BUCKETS):
        inside = buckets == b
        out[name] = {
            "items": int(inside.sum()),
            "interaction_share": _share(pop[inside].sum(), pop.sum()),
            "recommendation_share": _share(slots[inside].sum(), slots.sum()),
            "exposure_share": _share(weighted[inside].sum(), weighted.sum()),
        }
    return out


def _share(part: float, whole: float) -> float:
    return float(part / whole) if whole > 0 else 0.0


def group_figures(
    per_user: dict[str, np.ndarray],
    labels: np.ndarray,
    config: FairnessConfig,
    rng: np.random.Generator,
) -> dict[str, dict[str, Any]]:
    """Per group label: users, each metric's mean and interval, and the miss rate."""
    out: dict[str, dict[str, Any]] = {}
    for label in sorted({str(x) for x in labels if isinstance(x, str)}):
        rows = labels == label
        entry: dict[str, Any] = {
            "users": int(rows.sum()),
            "small": bool(rows.sum() < config.min_group_users),
        }
        for name, values in per_user.items():
            v = values[rows]
            if name == "miss_rate":
                entry[name] = _finite(_mean(v))
                continue
            lo, hi = bootstrap_mean_interval(v, config.bootstrap_samples, config.confidence, rng)
            entry[name] = {"mean": _finite(_mean(v)), "ci": [_finite(lo), _finite(hi)]}
        out[label] = entry
    return out


def fairness_block(
    ranked: RankedHoldout, groups: pd.DataFrame | None, config: FairnessConfig
) -> dict[str, Any]:
    """The manifest's ``fairness`` entry for a ranking (see the module docstring)."""
    k = ranked.k
    rec, truth = ranked.recommended, ranked.truth
    hits = M.hit_at_k(rec, truth, k)
    per_user = {
        f"ndcg@{k}": M.ndcg_at_k(rec, truth, k),
        f"recall@{k}": M.recall_at_k(rec, truth, k),
        "miss_rate": np.where(np.isnan(hits), np.nan, 1.0 - hits),
    }
    accuracy = [name for name in per_user if name != "miss_rate"]
    rng = np.random.default_rng(config.seed)
    by_kind: dict[str, Any] = {}
    parity_by_kind: dict[str, Any] = {}
    frame = groups if groups is not None else pd.DataFrame(index=pd.Index([], dtype=str))
    for kind in frame.columns:
        figures = group_figures(per_user, group_labels(frame, kind, ranked.users), config, rng)
        by_kind[kind] = figures
        big = {g: f for g, f in figures.items() if not f["small"]}
        entry: dict[str, Any] = {
            name: parity({g: _nan(f[name]["mean"]) for g, f in big.items()}) for name in accuracy
        }
        miss = parity({g: _nan(f["miss_rate"]) for g, f in big.items()})
        entry["miss_rate_difference"] = miss["gap"]
        parity_by_kind[kind] = entry
    return {
        "k": k,
        "users": len(ranked.users),
        "confidence": config.confidence,
        "bootstrap_samples": config.bootstrap_samples,
        "min_group_users": config.min_group_users,
        "groups": by_kind,
        "parity": parity_by_kind,
        "parity_gap": {name: largest_gap(parity_by_kind, name) for name in accuracy},
        "exposure": {
            "head_share": config.head_share,
            "tail_share": config.tail_share,
            "buckets": exposure_by_bucket(ranked, config),
        },
        "list_gini": gini(slot_exposure(rec, ranked.n_items, rank_weighted=False)),
        "exposure_gini": gini(slot_exposure(rec, ranked.n_items, rank_weighted=True)),
        "coverage": M.catalog_coverage(rec, ranked.n_items, k),
    }


def _nan(x: float | None) -> float:
    return math.nan if x is None else x


def _mean(values: np.ndarray) -> float:
    """Mean of the defined values; NaN (not a warning) when there are none."""
    defined = values[~np.isnan(values)]
    return float(defined.mean()) if defined.size else math.nan


def gap_lower_bound(fairness: dict[str, Any], metric: str, kind: str) -> float | None:
    """The part of a grouping's parity gap of ``metric`` that its sampling noise cannot explain:
    the best group's interval low end minus the worst group's high end (0 when they overlap);
    None when the block lacks that grouping's gap or intervals."""
    entry = fairness.get("parity", {}).get(kind, {}).get(metric, {})
    groups = fairness.get("groups", {}).get(kind, {})
    try:
        best_lo = groups[entry["best"]][metric]["ci"][0]
        worst_hi = groups[entry["worst"]][metric]["ci"][1]
    except (KeyError, IndexError, TypeError):
        return None
    if best_lo is None or worst_hi is None:
        return None
    return max(0.0, float(best_lo) - float(worst_hi))


def largest_gap(
    parity_by_kind: dict[str, Any], metric: str, kinds: list[str] | None = None
) -> dict[str, Any]:
    """The largest parity gap of ``metric`` over the groupings (``kinds``, default all):
    ``{"gap", "kind"}``, both ``None`` when no grouping has a gap."""
    gaps = {
        kind: entry[metric]["gap"]
        for kind, entry in parity_by_kind.items()
        if (kinds is None or kind in kinds) and entry.get(metric, {}).get("gap") is not None
    }
    if not gaps:
        return {"gap": None, "kind": None}
    kind = max(gaps, key=lambda g: gaps[g])
    return {"gap": gaps[kind], "kind": kind}
