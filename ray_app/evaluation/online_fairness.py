"""Online fairness: conversion per user group and per variant, the parity gap between groups,
and the Prometheus gauges the ``ConversionParityGap`` alert reads.

The attributed reco events of :mod:`ray_app.evaluation.online` (one row per list shown, with
its variant and whether it converted) are joined with user groups: gender, age band and
occupation from the user profiles of a MovieLens catalogue, and the activity band from the
user's distinct watched movies in the snapshots (:func:`~ray_app.evaluation.offline.user_group_frame`).
Users without a profile count in group ``unknown``.

The parity gap of a variant over one grouping is the largest minus the smallest conversion
rate among its groups with at least ``min_requests`` mature requests (smaller groups are
exported but too noisy to judge).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from prometheus_client import CollectorRegistry, Gauge, write_to_textfile
from pydantic import BaseModel, ConfigDict, Field

from ray_app.evaluation.offline import user_group_frame
from ray_app.evaluation.online import attribute, load_attribution_events

log = logging.getLogger(__name__)

BY_GROUP_COLUMNS = ["variant", "group_kind", "group", "requests", "users", "conversions"]
PARITY_COLUMNS = ["variant", "group_kind", "groups", "gap", "ratio", "best", "worst"]


class OnlineFairnessConfig(BaseModel):
    """How conversion by group is computed and judged."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    window_s: float = Field(default=3600.0, gt=0)
    """Attribution window in seconds (as for ``ray-app online-eval``)."""
    dataset: str | None = "ml-100k"
    """MovieLens dataset whose user profiles give gender, age band and occupation (None:
    activity bands only)."""
    min_requests: int = Field(default=100, ge=1)
    """Mature requests a group needs to enter the parity gap."""
    parity_bound: float = Field(default=0.05, gt=0, le=1)
    """Largest acceptable gap in conversion rate between groups (the alert's bound)."""


def online_user_groups(events: pd.DataFrame, profiles: pd.DataFrame | None) -> pd.DataFrame:
    """Groups per user id seen in ``events``: the activity band from the user's distinct
    watched movies, and the profile groupings when ``profiles`` are given."""
    seen = pd.Index(events["user_id"].astype(str).unique(), name="user_id")
    watches = events[events["kind"] == "watch"][["user_id", "movie_id"]].drop_duplicates()
    profile = user_group_frame(pd.DataFrame({"user_id": seen}), profiles).drop(columns="activity")
    # Users with lists but no watches are the least active band, not missing.
    activity = user_group_frame(watches)["activity"].reindex(seen).fillna("<20")
    return profile.reindex(seen).assign(activity=activity).fillna("unknown")


def conversion_by_group(
    attributed: pd.DataFrame, groups: pd.DataFrame, mature_only: bool = True
) -> pd.DataFrame:
    """Per (variant, group_kind, group): requests, users, conversions and conversion_rate."""
    a = attributed[attributed["mature"].astype(bool)] if mature_only else attributed
    if a.empty or groups.empty:
        return pd.DataFrame(columns=[*BY_GROUP_COLUMNS, "conversion_rate"])
    users = a["user_id"].astype(str).to_numpy()
    parts = []
    for kind in groups.columns:
        labels = groups[kind].reindex(pd.Index(users)).fillna("unknown").to_numpy()
        g = a.assign(group=labels).groupby(["variant", "group"], sort=True)
        part = pd.DataFrame(
            {
                "requests": g.size(),
                "users": g["user_id"].nunique(),
                "conversions": g["converted"].sum().astype(np.int64),
            }
        ).reset_index()
        parts.append(part.assign(group_kind=kind))
    out = pd.concat(parts, ignore_index=True)[BY_GROUP_COLUMNS]
    out["conversion_rate"] = out["conversions"] / out["requests"]
    return out


def conversion_parity(by_group: pd.DataFrame, min_requests: int) -> pd.DataFrame:
    """Per (variant, group_kind) over groups with ``min_requests``: groups, gap (max - min
    rate), ratio (min / max; NaN when max is 0), best and worst group."""
    judged = by_group[by_group["requests"] >= min_requests]
    rows: list[dict[str, Any]] = []
    for (variant, kind), part in judged.groupby(["variant", "group_kind"], sort=True):
        if len(part) < 2:
            continue
        rates = part.set_index("group")["conversion_rate"].astype(float)
        hi, lo = float(rates.max()), float(rates.min())
        rows.append(
            {
                "variant": variant,
                "group_kind": kind,
                "groups": len(part),
                "gap": hi - lo,
                "ratio": lo / hi if hi > 0 else float("nan"),
                "best": str(rates.idxmax()),
                "worst": str(rates.idxmin()),
            }
        )
    return pd.DataFrame(rows, columns=PARITY_COLUMNS)


def group_conversion_registry(
    by_group: pd.DataFrame, parity: pd.DataFrame, config: OnlineFairnessConfig
) -> CollectorRegistry:
    """Prometheus gauges (own registry) for conversion by group and its parity gaps."""
    reg = CollectorRegistry()
    labels = ["variant", "group_kind", "group"]
    rate = Gauge(
        "ray_app_online_conversion_rate_by_group",
        "Conversion rate of mature reco events per variant and user group.",
        labels,
        registry=reg,
    )
    requests = Gauge(
        "ray_app_online_requests_by_group",
        "Mature reco events per variant and user group.",
        labels,
        registry=reg,
    )
    for row in by_group.to_dict("records"):
        key = (str(row["variant"]), str(row["group_kind"]), str(row["group"]))
        rate.labels(*key).set(float(row["conversion_rate"]))
        requests.labels(*key).set(float(row["requests"]))
    gap = Gauge(
        "ray_app_online_conversion_parity_gap",
        "Largest minus smallest conversion rate among a grouping's judged groups.",
        ["variant", "group_kind"],
        registry=reg,
    )
    ratio = Gauge(
        "ray_app_online_conversion_parity_ratio",
        "Smallest over largest conversion rate among a grouping's judged groups.",
        ["variant", "group_kind"],
        registry=reg,
    )
    for row in parity.to_dict("records"):
        key2 = (str(row["variant"]), str(row["group_kind"]))
        gap.labels(*key2).set(float(row["gap"]))
        ratio.labels(*key2).set(float(row["ratio"]))
    Gauge(
        "ray_app_online_conversion_parity_gap_bound",
        "Configured bound on the conversion parity gap.",
        registry=reg,
    ).set(config.parity_bound)
    Gauge(
        "ray_app_online_group_eval_timestamp_seconds",
        "When conversion by group was computed.",
        registry=reg,
    ).set_to_current_time()
    return reg


@dataclass
class OnlineFairnessResult:
    """The tables and the files written."""

    by_group: pd.DataFrame
    parity: pd.DataFrame
    registry: CollectorRegistry
    files: list[Path]

    def over_bound(self, bound: float) -> pd.DataFrame:
        """The parity rows whose gap exceeds ``bound``."""
        return self.parity[self.parity["gap"] > bound]


def load_profiles(dataset: str | None) -> pd.DataFrame | None:
    """User profiles of a MovieLens ``dataset`` (None when not given or not loadable)."""
    if dataset is None:
        return None
    from ray_app.data.movielens import load

    try:
        return load(dataset).users
    except Exception:  # no network and no cache: activity bands only
        log.warning("could not load %s: conversion by activity band only", dataset, exc_info=True)
        return None


def run_online_fairness(
    snapshot_dir: Path | str,
    out_dir: Path | str,
    config: OnlineFairnessConfig,
    profiles: pd.DataFrame | None = None,
) -> OnlineFairnessResult:
    """Attribute the snapshots' reco events, split conversion by user group and variant, and
    write ``conversion_by_group.parquet``, ``conversion_parity.parquet`` and ``metrics.prom``
    (textfile format) under ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    events = load_attribution_events(snapshot_dir)
    attributed = attribute(events, timedelta(seconds=config.window_s))
    groups = online_user_groups(events, profiles) if len(events) else pd.DataFrame()
    by_group = conversion_by_group(attributed, groups)
    parity = conversion_parity(by_group, config.min_requests)
    reg = group_conversion_registry(by_group, parity, config)
    files = [out / "conversion_by_group.parquet", out / "conversion_parity.parquet"]
    by_group.to_parquet(files[0], index=False)
    parity.to_parquet(files[1], index=False)
    files.append(out / "metrics.prom")
    write_to_textfile(str(files[2]), reg)
    return OnlineFairnessResult(by_group, parity, reg, files)
