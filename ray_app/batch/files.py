"""Batch recommendations from files: fit a model on a TRAIN table, write top-K for listed users.

This is what ``ray-app recommend-batch`` runs; it is also a plain function for notebooks and
jobs. File contract:

* TRAIN (Parquet): ``user_id``, ``item_id`` (strings; integers are accepted and converted),
  optional ``rating`` (used as the interaction weight by models configured with
  ``feedback: weighted``) and ``timestamp`` (read, not used by the current models). Every row
  counts as a positive interaction; filter (e.g. ``rating >= 4``) before writing TRAIN if
  only some should.
* USERS (Parquet): ``user_id``; optional ``age``, ``gender``, ``occupation`` which a
  :class:`~ray_app.models.base.ColdStart` model (``two_tower``) uses to score users it has
  never seen.
* OUT (Parquet, written atomically): ``user_id``, ``rank`` (1..K), ``item_id``, ``score``,
  the top-K items each listed user has *not* interacted with in TRAIN, best first.

Users the model cannot score get the most popular TRAIN items, and so do the remaining slots of
a user for whom the model found fewer than K candidates (:mod:`ray_app.batch.ranking`). Every
listed user gets ``min(K, unseen items)`` rows.
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
import pyarrow.parquet as pq

from ray_app.batch.ranking import lists_table, rank_with_fill
from ray_app.config import ConfigError
from ray_app.errors import UserError
from ray_app.models.base import Interactions
from ray_app.models.catalog import build_model

log = logging.getLogger(__name__)

USER_FEATURES = ("age", "gender", "occupation")


class BatchInputError(UserError, ValueError):
    """A TRAIN or USERS file does not follow the file contract; the message says how to fix it."""


@dataclass(frozen=True)
class BatchResult:
    """Summary of one :func:`recommend_batch` run."""

    out_path: Path
    users: int
    """Distinct users listed in USERS."""
    rows: int
    """Rows written to OUT."""
    model_scored: int
    """Known users whose list came (at least in part) from the model."""
    cold_scored: int
    """Unknown users scored from their features (:class:`ColdStart` models only)."""
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
            raise BatchInputError(
                f"{what} file {path} has no column {col!r} (it has {list(frame.columns)}); "
                f"rename the column that holds the {col.replace('_', ' ')} to {col!r}, e.g. "
                f"df.rename(columns={{'<your column>': {col!r}}}).to_parquet(...)"
            )


def _ids(series: pd.Series, what: str, col: str) -> pd.Series:
    if series.isna().any():
        row = int(np.flatnonzero(series.isna().to_numpy())[0])
        raise BatchInputError(
            f"{what} column {col!r} has a missing value at row {row}; drop or fill it"
        )
    return series.astype(str)


def _read(path: str | Path, what: str) -> tuple[Path, pd.DataFrame]:
    p = Path(path)
    if not p.exists():
        raise BatchInputError(f"{what} file {p} does not exist; check the --{what.lower()} path")
    return p, pd.read_parquet(p)


def read_train(path: str | Path) -> pd.DataFrame:
    """TRAIN as a frame with string ids; :class:`BatchInputError` names any missing column and
    the fix."""
    p, frame = _read(path, "TRAIN")
    _require(frame, "TRAIN", p, ("user_id", "item_id"))
    if len(frame) == 0:
        raise BatchInputError(
            f"TRAIN file {p} has no rows; a model needs interactions to learn from"
        )
    out = pd.DataFrame(
        {
            "user_id": _ids(frame["user_id"], "TRAIN", "user_id"),
            "item_id": _ids(frame["item_id"], "TRAIN", "item_id"),
        }
    )
    if "rating" in frame.columns:
        rating = pd.to_numeric(frame["rating"], errors="coerce")
        if rating.isna().any():
            raise BatchInputError(
                f"TRAIN column 'rating' in {p} has missing or non-numeric values; fill them or "
                "drop the column (every row then counts 1)"
            )
        out["rating"] = rating.astype(np.float32)
    if "timestamp" in frame.columns:
        out["timestamp"] = frame["timestamp"]
    return out


def read_users(path: str | Path) -> pd.DataFrame:
    """USERS with string ids, first occurrence of each id kept, order preserved."""
    p, frame = _read(path, "USERS")
    _require(frame, "USERS", p, ("user_id",))
    frame = frame.assign(user_id=_ids(frame["user_id"], "USERS", "user_id"))
    return frame.drop_duplicates("user_id").reset_index(drop=True)


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
        raise ConfigError(f"k must be a positive integer, got {k}")
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
    ranked = rank_with_fill(model, ids, k, users if features else None)
    recommend_s = time.perf_counter() - start

    out = lists_table(ids, ranked, inter.item_ids)
    out_file = Path(out_path)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_file.with_name(f".{out_file.name}.{os.getpid()}.tmp")
    pq.write_table(out, tmp)
    tmp.replace(out_file)  # readers never see a half-written file
    return BatchResult(
        out_path=out_file,
        users=len(ids),
        rows=out.num_rows,
        model_scored=int(ranked.model_scored.sum()),
        cold_scored=int(ranked.cold_scored.sum()),
        popularity_filled=int(ranked.filled.sum()),
        train_interactions=inter.nnz,
        train_users=inter.n_users,
        train_items=inter.n_items,
        fit_s=fit_s,
        recommend_s=recommend_s,
    )
