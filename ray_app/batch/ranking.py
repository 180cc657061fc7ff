"""Top-K lists for a batch of users with a popularity fill: the core both batch paths share.

A user's list is the model's own ranking of unseen items; a :class:`ColdStart` model scores
users it never saw from their features; whatever slots are still empty (unknown users, users a
history-based model cannot rank, short candidate lists) are filled with the most popular items
the user has not seen, by number of distinct users in the model's interactions. Filled slots
have score NaN because a popularity count is not on the model's scale.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from ray_app.models.base import ColdStart, Interactions, Recommender

FILL_CHUNK_CELLS = 1 << 22
"""Users x items cells the fill works on at once (bounds its memory on big catalogues)."""


@dataclass(frozen=True)
class RankedLists:
    """Top-K item indices per user, best first, as the model's interactions index them."""

    items: np.ndarray
    """``users x k`` item indices; ``-1`` where no unseen item was left."""
    scores: np.ndarray
    """Model scores; NaN for popularity-filled and empty slots."""
    model_scored: np.ndarray
    """Per user: at least one slot came from the model's ranking of a known user."""
    cold_scored: np.ndarray
    """Per user: scored from features by a :class:`ColdStart` model."""
    filled: np.ndarray
    """Per user: at least one slot came from the popularity fill."""


def popularity_order(inter: Interactions) -> np.ndarray:
    """Item indices by number of distinct users, most first (ties: lower index first)."""
    counts = np.diff(inter.matrix.tocsc().indptr)
    return np.argsort(-counts, kind="stable")


def fill_with_popular(
    items: np.ndarray, scores: np.ndarray, user_idx: np.ndarray, inter: Interactions
) -> np.ndarray:
    """Fill the ``-1`` slots of ``items`` in place with popular items each user has not seen
    (per ``user_idx``; ``-1``: an unknown user, who has seen nothing) and that the row does not
    already list; their scores become NaN. A row's listed items move to its front in order.
    Returns which rows got at least one filled slot."""
    n_users, k = items.shape
    filled = np.zeros(n_users, dtype=bool)
    rows = np.flatnonzero((items < 0).any(axis=1))
    if len(rows) == 0 or inter.n_items == 0:
        return filled
    order = popularity_order(inter)
    matrix = inter.matrix
    chunk = max(1, FILL_CHUNK_CELLS // inter.n_items)
    for start in range(0, len(rows), chunk):
        r = rows[start : start + chunk]
        front = np.argsort(items[r] < 0, axis=1, kind="stable")
        its = np.take_along_axis(items[r], front, axis=1)
        scs = np.take_along_axis(scores[r], front, axis=1)
        taken = np.zeros((len(r), inter.n_items), dtype=bool)
        known = np.flatnonzero(user_idx[r] >= 0)
        seen = matrix[user_idx[r][known]]
        taken[np.repeat(known, np.diff(seen.indptr)), seen.indices] = True
        li, lj = np.nonzero(its >= 0)
        taken[li, its[li, lj]] = True
        free = ~taken[:, order]  # columns in popularity order
        nth = np.cumsum(free, axis=1, dtype=np.int32)
        listed = (its >= 0).sum(axis=1)
        pick = free & (nth <= (k - listed)[:, None])
        pi, pj = np.nonzero(pick)
        slot = listed[pi] + nth[pi, pj] - 1
        its[pi, slot] = order[pj]
        scs[pi, slot] = np.nan
        items[r] = its
        scores[r] = scs
        filled[r] = pick.any(axis=1)
    return filled


def rank_with_fill(
    model: Recommender[Any],
    user_ids: Sequence[str],
    k: int,
    user_features: pd.DataFrame | None = None,
) -> RankedLists:
    """Top-``min(k, items)`` unseen items for every id in ``user_ids`` (see the module doc).

    ``user_features`` (rows aligned with ``user_ids``: ``user_id`` and feature columns) lets a
    :class:`ColdStart` model score the ids it never saw.
    """
    if k <= 0:
        raise ValueError(f"k must be a positive integer, got {k}")
    inter = model.interactions
    n, kk = len(user_ids), min(k, inter.n_items)
    items = np.full((n, kk), -1, dtype=np.int64)
    scores = np.full((n, kk), np.nan, dtype=np.float64)
    uidx = inter.user_ids.get_indexer(pd.Index([str(u) for u in user_ids]))
    scorable = uidx >= 0
    if scorable.any():
        scorable[scorable] = model.can_score(uidx[scorable])
    warm = np.flatnonzero(scorable)
    if len(warm):
        top, top_scores = model.rank_items(uidx[warm], kk)
        items[warm] = top
        scores[warm] = np.where(top >= 0, top_scores, np.nan)
    model_scored = np.asarray(np.isfinite(scores).any(axis=1))
    cold_scored = np.zeros(n, dtype=bool)
    if user_features is not None and isinstance(model, ColdStart) and kk:
        cold = np.flatnonzero(uidx < 0)
        if len(cold):
            recs = model.recommend_cold(user_features.iloc[cold], k=kk)
            for row, its, scs in zip(cold, recs.items, recs.scores, strict=True):
                idx = inter.item_ids.get_indexer(pd.Index(its))
                items[row, : len(idx)] = idx
                scores[row, : len(idx)] = np.where(idx >= 0, scs, np.nan)
            cold_scored[cold] = True
    filled = fill_with_popular(items, scores, uidx, inter)
    return RankedLists(items, scores, model_scored, cold_scored, filled)


def lists_table(user_ids: Sequence[str], ranked: RankedLists, item_ids: pd.Index) -> pa.Table:
    """Long format, one row per listed item: ``user_id, rank (1..), item_id, score``."""
    valid = ranked.items >= 0
    names = item_ids.to_numpy()
    return pa.table(
        {
            "user_id": pa.array(
                np.repeat(np.asarray(user_ids, dtype=object), valid.sum(axis=1)), pa.string()
            ),
            "rank": pa.array(np.nonzero(valid)[1].astype(np.int32) + 1),
            "item_id": pa.array(names[ranked.items[valid]].astype(object), pa.string()),
            "score": pa.array(ranked.scores[valid], pa.float64()),
        }
    )
