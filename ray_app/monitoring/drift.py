"""Data drift between the training window and a recent window of snapshot events.

Three features, each compared with a two-sample Kolmogorov–Smirnov test (scipy) and the
Population Stability Index:

* ``rating``: the rating values of rate events (PSI over the distinct rating values);
* ``user_activity``: events per active user divided by the window's mean (PSI over
  reference deciles);
* ``item_popularity``: the share of events per item (PSI over the reference's top
  ``top_items`` items plus one "other" bucket; KS over each event's reference rank).

KS is judged by its *statistic* (a distance), not its p-value: with the millions of events a
stream has, every p-value is tiny and would alert on irrelevant differences.
PSI = Σ (cur − ref) · ln(cur / ref) over buckets, with empty buckets floored at ``epsilon``;
the usual reading is < 0.1 stable, 0.1–0.25 moderate, > 0.25 major shift.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from prometheus_client import CollectorRegistry, Gauge
from pydantic import BaseModel, ConfigDict, Field
from scipy import stats

from ray_app.snapshots.read import load_snapshot_events


class DriftConfig(BaseModel):
    """Thresholds and binning of the drift checks."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    psi_threshold: float = Field(default=0.2, gt=0)
    """A feature drifts when its PSI exceeds this."""
    ks_threshold: float = Field(default=0.1, gt=0, le=1)
    """… or when its KS statistic exceeds this."""
    bins: int = Field(default=10, ge=2)
    """Quantile buckets for continuous features (user activity)."""
    top_items: int = Field(default=50, ge=1)
    """Items bucketed individually for item popularity; the rest share one bucket."""
    min_samples: int = Field(default=30, ge=1)
    """Fewer observations than this in either window: the feature is reported, not judged."""
    epsilon: float = Field(default=1e-4, gt=0)
    """Floor for empty PSI buckets (avoids log 0)."""
    seed: int = 0
    """Seed of the thinning that equalises window sizes for user activity."""


@dataclass(frozen=True)
class DriftResult:
    """One feature's comparison."""

    feature: str
    n_reference: int
    n_current: int
    ks_statistic: float
    ks_pvalue: float
    psi: float
    drifted: bool
    judged: bool


def psi(reference: np.ndarray, current: np.ndarray, epsilon: float = 1e-4) -> float:
    """PSI of two bucket-count (or share) vectors of the same buckets."""
    r = np.asarray(reference, dtype=np.float64)
    c = np.asarray(current, dtype=np.float64)
    if r.shape != c.shape or r.ndim != 1:
        raise ValueError(f"reference and current need the same 1-D shape, got {r.shape}, {c.shape}")
    if r.sum() <= 0 or c.sum() <= 0:
        return 0.0
    r = np.maximum(r / r.sum(), epsilon)
    c = np.maximum(c / c.sum(), epsilon)
    return float(np.sum((c - r) * np.log(c / r)))


def _categorical_psi(ref: pd.Series, cur: pd.Series, eps: float) -> float:
    cats = pd.Index(pd.unique(pd.concat([ref, cur], ignore_index=True)))
    r = ref.value_counts().reindex(cats, fill_value=0).to_numpy()
    c = cur.value_counts().reindex(cats, fill_value=0).to_numpy()
    return psi(r, c, eps)


def _quantile_psi(ref: np.ndarray, cur: np.ndarray, bins: int, eps: float) -> float:
    # Edges from the reference's quantiles, deduplicated (discrete data repeats quantiles).
    edges = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)))
    edges[0], edges[-1] = -np.inf, np.inf
    if len(edges) < 3:
        edges = np.array([-np.inf, float(np.median(ref)), np.inf])
    r, _ = np.histogram(ref, edges)
    c, _ = np.histogram(cur, edges)
    return psi(r, c, eps)


def _result(
    feature: str,
    ref: np.ndarray,
    cur: np.ndarray,
    p: float,
    cfg: DriftConfig,
    sizes: tuple[int, int] | None = None,
) -> DriftResult:
    n_ref, n_cur = sizes if sizes is not None else (len(ref), len(cur))
    judged = min(n_ref, n_cur) >= cfg.min_samples
    if len(ref) and len(cur):
        ks = stats.ks_2samp(ref, cur)
        ks_stat, ks_p = float(ks.statistic), float(ks.pvalue)
    else:
        ks_stat, ks_p = 0.0, 1.0
    drifted = judged and (p > cfg.psi_threshold or ks_stat > cfg.ks_threshold)
    return DriftResult(feature, n_ref, n_cur, ks_stat, ks_p, p, drifted, judged)


def compute_drift(
    reference: pd.DataFrame, current: pd.DataFrame, config: DriftConfig = DriftConfig()
) -> list[DriftResult]:
    """Compare two windows of snapshot events (columns kind, user_id, movie_id, rating)."""
    for name, frame in (("reference", reference), ("current", current)):
        missing = {"kind", "user_id", "movie_id", "rating"} - set(frame.columns)
        if missing:
            raise ValueError(f"{name} frame lacks columns {sorted(missing)}; pass snapshot rows")
    eps = config.epsilon
    out: list[DriftResult] = []

    r_rate = reference.loc[reference["kind"] == "rate", "rating"].dropna().astype(float)
    c_rate = current.loc[current["kind"] == "rate", "rating"].dropna().astype(float)
    out.append(
        _result(
            "rating",
            r_rate.to_numpy(),
            c_rate.to_numpy(),
            _categorical_psi(r_rate, c_rate, eps),
            config,
        )
    )

    # Events per user depend on the window's length, so the larger window is thinned at random
    # to the smaller one's event count first (thinning keeps each user's share), then counts
    # are divided by their mean: what is compared is the *shape* of activity.
    rng = np.random.default_rng(config.seed)
    r_users, c_users = reference["user_id"].to_numpy(), current["user_id"].to_numpy()
    m = min(len(r_users), len(c_users))
    if len(r_users) > m:
        r_users = rng.choice(r_users, m, replace=False)
    if len(c_users) > m:
        c_users = rng.choice(c_users, m, replace=False)
    r_act = pd.Series(r_users).value_counts().to_numpy(dtype=np.float64)
    c_act = pd.Series(c_users).value_counts().to_numpy(dtype=np.float64)
    r_act = r_act / r_act.mean() if len(r_act) else r_act
    c_act = c_act / c_act.mean() if len(c_act) else c_act
    p_act = _quantile_psi(r_act, c_act, config.bins, eps) if len(r_act) and len(c_act) else 0.0
    out.append(_result("user_activity", r_act, c_act, p_act, config))

    r_items = reference["movie_id"].dropna().astype(str)
    c_items = current["movie_id"].dropna().astype(str)
    top = r_items.value_counts().index[: config.top_items]
    p_pop = _categorical_psi(
        r_items.where(r_items.isin(top), "__other__"),
        c_items.where(c_items.isin(top), "__other__"),
        eps,
    )
    # KS over each event's item *rank in the reference* (unseen items rank last): independent
    # of window length, and large when traffic moves to items that used to be rare.
    ranks = pd.Series(
        np.arange(r_items.nunique(), dtype=np.float64), index=r_items.value_counts().index
    )
    r_cnt = ranks.reindex(r_items).to_numpy()
    c_cnt = ranks.reindex(c_items).fillna(float(len(ranks))).to_numpy()
    # Judged on event counts: a handful of very hot items is a real shift, not a small sample.
    sizes = (len(r_items), len(c_items))
    out.append(_result("item_popularity", r_cnt, c_cnt, p_pop, config, sizes))
    return out


def drift_registry(results: list[DriftResult], config: DriftConfig) -> CollectorRegistry:
    """Prometheus gauges (own registry): per-feature PSI/KS/drifted plus the thresholds, so
    alert rules compare against the configured values instead of copies of them."""
    reg = CollectorRegistry()
    g_psi = Gauge("ray_app_drift_psi", "PSI, reference vs recent.", ["feature"], registry=reg)
    g_ks = Gauge("ray_app_drift_ks_statistic", "KS statistic.", ["feature"], registry=reg)
    g_ksp = Gauge("ray_app_drift_ks_pvalue", "KS p-value.", ["feature"], registry=reg)
    g_d = Gauge(
        "ray_app_drift_detected", "1 when a threshold is crossed.", ["feature"], registry=reg
    )
    g_n = Gauge("ray_app_drift_samples", "Recent-window sample size.", ["feature"], registry=reg)
    Gauge("ray_app_drift_psi_threshold", "PSI alert threshold.", registry=reg).set(
        config.psi_threshold
    )
    Gauge("ray_app_drift_ks_threshold", "KS alert threshold.", registry=reg).set(
        config.ks_threshold
    )
    for r in results:
        g_psi.labels(r.feature).set(r.psi)
        g_ks.labels(r.feature).set(r.ks_statistic)
        g_ksp.labels(r.feature).set(r.ks_pvalue)
        g_d.labels(r.feature).set(float(r.drifted))
        g_n.labels(r.feature).set(r.n_current)
    return reg


def split_windows(
    events: pd.DataFrame, reference_end: datetime | None, recent: timedelta
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(events before ``reference_end``, events in the last ``recent`` of the data).

    ``reference_end=None`` uses the start of the recent window, i.e. everything older is the
    reference. Pass the training snapshot's last event time to compare with what the serving
    model was trained on.
    """
    if events.empty:
        return events, events
    ts = pd.to_datetime(events["ts"], utc=True)
    recent_start = ts.max() - pd.Timedelta(recent)
    ref_end = pd.Timestamp(reference_end) if reference_end is not None else recent_start
    if ref_end.tzinfo is None:
        ref_end = ref_end.tz_localize("UTC")
    return events[ts < ref_end], events[ts >= recent_start]


def drift_from_snapshots(
    snapshot_dir: Path | str,
    recent: timedelta,
    reference_end: datetime | None = None,
    config: DriftConfig = DriftConfig(),
) -> list[DriftResult]:
    """Load watch/rate events from snapshots and compare the two windows."""
    events = load_snapshot_events(
        snapshot_dir, ("watch", "rate"), ["kind", "user_id", "movie_id", "ts", "rating"]
    )
    ref, cur = split_windows(events, reference_end, recent)
    return compute_drift(ref, cur, config)


def results_as_dicts(results: list[DriftResult]) -> list[dict[str, Any]]:
    """JSON-able form of the results (for the CLI's ``--json`` and reports)."""
    return [asdict(r) for r in results]
