"""What an attack did and what the screen undid: detection quality against known fakes, and a
target item's reach in a model's rankings (hit rate, median rank, exposure share)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ray_app.models.base import Recommender


def detection_quality(scores: pd.DataFrame, fakes: Collection[str]) -> dict[str, float]:
    """Precision, recall and false-positive rate (share of genuine users flagged) of the
    ``flagged`` column of ``scores`` against the known ``fakes``."""
    is_fake = scores["user_id"].astype(str).isin({str(f) for f in fakes}).to_numpy()
    flagged = scores["flagged"].to_numpy(dtype=bool)
    tp = int((flagged & is_fake).sum())
    return {
        "flagged": float(flagged.sum()),
        "precision": tp / flagged.sum() if flagged.any() else float("nan"),
        "recall": tp / is_fake.sum() if is_fake.any() else float("nan"),
        "fpr": float((flagged & ~is_fake).sum() / max((~is_fake).sum(), 1)),
    }


def target_ranks(
    model: Recommender[Any], user_ids: Sequence[str], target: str, batch_size: int = 1024
) -> np.ndarray:
    """Rank (1 = first) of ``target`` among each user's unseen catalogue items; users who
    already have the target, or whom the model cannot score, are left out."""
    inter = model.interactions
    t = inter.item_ids.get_indexer(pd.Index([str(target)]))[0]
    if t < 0:
        raise ValueError(f"target {target!r} is not in the model's catalogue")
    uidx = inter.user_ids.get_indexer(pd.Index([str(u) for u in user_ids]))
    uidx = uidx[uidx >= 0]
    uidx = uidx[model.can_score(uidx)]
    ranks = []
    for start in range(0, len(uidx), batch_size):
        rows = uidx[start : start + batch_size]
        seen = inter.matrix[rows]
        has_target = np.asarray(seen[:, t].todense()).ravel() != 0
        scores = np.array(model.score_users(rows), dtype=np.float64, copy=True)
        r = np.repeat(np.arange(len(rows)), np.diff(seen.indptr))
        scores[r, seen.indices] = -np.inf
        above = (scores > scores[:, [t]]).sum(axis=1) + 1
        ranks.append(above[~has_target])
    return np.concatenate(ranks) if ranks else np.zeros(0, dtype=np.int64)


def target_impact(
    model: Recommender[Any],
    user_ids: Sequence[str],
    target: str,
    *,
    hit_k: int = 50,
    exposure_k: int = 10,
) -> dict[str, float]:
    """``hr@hit_k`` (share of the users whose top ``hit_k`` holds the target), ``median_rank``
    and ``exposure@exposure_k`` (the target's share of all top-``exposure_k`` slots) over the
    ``user_ids`` who have not interacted with the target."""
    ranks = target_ranks(model, user_ids, target)
    if ranks.size == 0:
        nan = float("nan")
        return {f"hr@{hit_k}": nan, "median_rank": nan, f"exposure@{exposure_k}": nan}
    return {
        f"hr@{hit_k}": float((ranks <= hit_k).mean()),
        "median_rank": float(np.median(ranks)),
        f"exposure@{exposure_k}": float((ranks <= exposure_k).mean() / exposure_k),
    }


def lift_removed(clean: float, attacked: float, filtered: float) -> float:
    """Share of an attack's lift (``attacked - clean``) that filtering took away; NaN when the
    attack lifted nothing."""
    lift = attacked - clean
    if not np.isfinite(lift) or lift <= 0:
        return float("nan")
    return float(1.0 - (filtered - clean) / lift)
