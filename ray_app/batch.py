"""Batch recommendations from files: fit a model on a TRAIN table, write top-K for listed users.

This is what ``ray-app recommend-batch`` runs; it is also a plain function for notebooks and
jobs. File contract:

* TRAIN (Parquet): ``user_id``, ``item_id`` (strings; integers are accepted and converted),
  optional ``rating`` (used as the interaction weight by models configured with
  ``feedback: weighted``) and ``timestamp`` (read, not used by the current models). Every row
  counts as a positive interaction; filter (e.g. ``rating >= 4``) before writing TRAIN if
  only some should.
* USERS (Parquet): ``user_id``; optional ``age``, ``gender``, ``occupation`` which a
  feature-aware model (``two_tower``) uses to score users it has never seen.
* OUT (Parquet, written atomically): ``user_id``, ``rank`` (1..K), ``item_id``, ``score``,
  the top-K items each listed user has *not* interacted with in TRAIN, best first.

Users the model cannot score - ids absent from TRAIN, or users a history-based model cannot
rank - get the most popular TRAIN items (popularity fill); so do the remaining slots of a user
for whom the model found fewer than K candidates (e.g. item-KNN with a short history). Filled
rows have ``score = NaN`` because a popularity count is not on the model's scale; their
``rank`` continues after the model's own items. Every listed user gets ``min(K, unseen items)``
rows.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ray_app.models.base import Interactions
from ray_app.models.catalog import build_model

log = logging.getLogger(__name__)

USER_FEATURES = ("age", "gender", "occupation")


@dataclass(frozen=True)
class BatchResult:
    """Summary of one :func:`recommend_batch` run."""

    out_path: Path
    users: int
    """Distinct users listed in USERS."""
    rows: int
    """Rows written to OUT."""
    model_scored: int
    """Users whose list came (at least in part) from the model."""
    cold_scored: int
    """Unknown users scored from their features (feature-aware models only)."""
    popularity_filled: int
    """Users who got at least one popularity-filled slot."""
    train_interactions: int
    train_users: int
    train_items: int
    fit_s: float
    recommend_s: float


def _require(frame: pd.DataFrame, what: str, path: Path, columns: tuple[str, ...]) -> None:
    for col in columns:
        if col not in frame.columns:
            raise ValueError(
                f"{what} file {path} has no column {col!r} (it has {list(frame.columns)}); "
                f"rename the column that holds the {col.replace('_', ' ')} to {col!r}, e.g. "
                f"df.rename(columns={{'<your column>': {col!r}}}).to_parquet(...)"
            )


def _ids(series: pd.Series, what: str, col: str) -> pd.Series:
    if series.isna().any():
        row = int(np.flatnonzero(series.isna().to_numpy())[0])
        raise ValueError(f"{what} column {col!r} has a missing value at row {row}; drop or fill it")
    return series.astype(str)


def read_train(path: str | Path) -> pd.DataFrame:
    """TRAIN as a frame with string ids; ValueError naming any missing column and the fix."""
    p = Path(path)
    if not p.exists():
        raise ValueError(f"TRAIN file {p} does not exist")
    frame = pd.read_parquet(p)
    _require(frame, "TRAIN", p, ("user_id", "item_id"))
    if len(frame) == 0:
        raise ValueError(f"TRAIN file {p} has no rows; a model needs interactions to learn from")
    out = pd.DataFrame(
        {
            "user_id": _ids(frame["user_id"], "TRAIN", "user_id"),
            "item_id": _ids(frame["item_id"], "TRAIN", "item_id"),
        }
    )
    if "rating" in frame.columns:
        rating = pd.to_numeric(frame["rating"], errors="coerce")
        if rating.isna().any():
            raise ValueError(
                f"TRAIN column 'rating' in {p} has missing or non-numeric values; fill them or "
                "drop the column (every row then counts 1)"
            )
        out["rating"] = rating.astype(np.float32)
    if "timestamp" in frame.columns:
        out["timestamp"] = frame["timestamp"]
    return out


def read_users(path: str | Path) -> pd.DataFrame:
    """USERS with string ids, first occurrence of each id kept, order preserved."""
    p = Path(path)
    if not p.exists():
        raise ValueError(f"USERS file {p} does not exist")
    frame = pd.read_parquet(p)
    _require(frame, "USERS", p, ("user_id",))
    frame = frame.assign(user_id=_ids(frame["user_id"], "USERS", "user_id"))
    return frame.drop_duplicates("user_id").reset_index(drop=True)


def _popularity_order(inter: Interactions) -> np.ndarray:
    """Item indices by number of distinct TRAIN users, most first (ties: first seen)."""
    counts = np.diff(inter.matrix.tocsc().indptr)
    return np.argsort(-counts, kind="stable")


def _fill(
    items: np.ndarray, scores: np.ndarray, seen: np.ndarray, pop_order: np.ndarray
) -> tuple[np.ndarray, np.ndarray, bool]:
    """Append popular unseen, not-yet-listed items to a ``-1``-padded row; NaN scores."""
    valid = items >= 0
    missing = len(items) - int(valid.sum())
    if missing == 0:
        return items, scores, False
    taken = np.concatenate([seen, items[valid]])
    extra = pop_order[~np.isin(pop_order, taken)][:missing]
    new_items = np.concatenate([items[valid], extra])
    new_scores = np.concatenate([scores[valid], np.full(len(extra), np.nan)])
    pad = len(items) - len(new_items)
    if pad:
        new_items = np.concatenate([new_items, np.full(pad, -1)])
        new_scores = np.concatenate([new_scores, np.full(pad, np.nan)])
    return new_items, new_scores, len(extra) > 0


def recommend_batch(
    train_path: str | Path,
    users_path: str | Path,
    model_name: str,
    config: Mapping[str, Any] | None,
    k: int,
    out_path: str | Path,
    *,
    progress: Callable[[str], None] | None = None,
) -> BatchResult:
    """Fit ``model_name`` (with ``config`` or its defaults) on TRAIN and write the top-``k``
    unseen items of every USERS user to OUT; see the module docstring for the file contract
    and the popularity fill."""
    if k <= 0:
        raise ValueError(f"k must be a positive integer, got {k}")
    say = progress or (lambda msg: log.info("%s", msg))
    train = read_train(train_path)
    users = read_users(users_path)
    model = build_model(model_name, config)  # validates name and config before any work
    features = [c for c in USER_FEATURES if c in users.columns]
    inter = Interactions.from_frame(
        train,
        weight_col="rating" if "rating" in train.columns else None,
        user_features=users[["user_id", *features]] if features else None,
    )
    say(
        f"fitting {model_name} on {inter.nnz:,} interactions "
        f"({inter.n_users:,} users x {inter.n_items:,} items)"
    )
    start = time.perf_counter()
    model.fit(inter)
    fit_s = time.perf_counter() - start

    say(f"recommending top-{k} for {len(users):,} users")
    start = time.perf_counter()
    ids = users["user_id"].tolist()
    kk = min(k, inter.n_items)
    items = np.full((len(ids), kk), -1, dtype=np.int64)
    scores = np.full((len(ids), kk), np.nan, dtype=np.float64)
    uidx = inter.user_ids.get_indexer(pd.Index(ids))
    scorable = uidx >= 0
    if scorable.any():
        scorable[scorable] = model.can_score(uidx[scorable])
    pos = np.flatnonzero(scorable)
    if len(pos):
        top, top_scores = model.rank_items(uidx[pos], kk)
        items[pos] = top
        scores[pos] = np.where(top >= 0, top_scores, np.nan)
    # Unknown users with features: a feature-aware model scores them through its cold path.
    recommend_cold = getattr(model, "recommend_cold", None)
    cold = np.flatnonzero(uidx < 0) if features and recommend_cold else np.empty(0, np.int64)
    if len(cold) and recommend_cold is not None:
        recs = recommend_cold(users.iloc[cold], k=kk)
        item_pos = inter.item_ids
        for row, its, scs in zip(cold, recs.items, recs.scores, strict=True):
            idx = item_pos.get_indexer(pd.Index(its))
            items[row, : len(idx)] = idx
            scores[row, : len(idx)] = scs
    pop_order = _popularity_order(inter)
    filled = 0
    x = inter.matrix
    for i in range(len(ids)):
        if items[i, -1] >= 0:
            continue
        u = uidx[i]
        seen = x.indices[x.indptr[u] : x.indptr[u + 1]] if u >= 0 else np.empty(0, np.int64)
        items[i], scores[i], did = _fill(items[i], scores[i], seen, pop_order)
        filled += int(did)
    recommend_s = time.perf_counter() - start

    valid = items >= 0
    rows_per_user = valid.sum(axis=1)
    names = inter.item_ids.to_numpy()
    out = pa.table(
        {
            "user_id": pa.array(
                np.repeat(np.asarray(ids, dtype=object), rows_per_user), pa.string()
            ),
            "rank": pa.array(np.nonzero(valid)[1].astype(np.int32) + 1),
            "item_id": pa.array(names[items[valid]].astype(object), pa.string()),
            "score": pa.array(scores[valid], pa.float64()),
        }
    )
    out_file = Path(out_path)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_file.with_name(f".{out_file.name}.{os.getpid()}.tmp")
    pq.write_table(out, tmp)
    tmp.replace(out_file)  # readers never see a half-written file
    model_rows = np.isfinite(scores) & valid
    return BatchResult(
        out_path=out_file,
        users=len(ids),
        rows=out.num_rows,
        model_scored=int(model_rows[pos].any(axis=1).sum()) if len(pos) else 0,
        cold_scored=len(cold),
        popularity_filled=filled,
        train_interactions=inter.nnz,
        train_users=inter.n_users,
        train_items=inter.n_items,
        fit_s=fit_s,
        recommend_s=recommend_s,
    )


__all__ = ["BatchResult", "read_train", "read_users", "recommend_batch"]
