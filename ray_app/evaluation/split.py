"""Per-user random splits of a long interactions frame (one row per user-item interaction).

Both functions are vectorised (one shuffle, one groupby rank) and deterministic for a seed.
Row order inside each returned frame follows the input frame, so downstream code does not
depend on the shuffle.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd


def _rank_within_user(
    frame: pd.DataFrame, user_col: str, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(random 0-based position of each row within its user, that user's row count)."""
    if user_col not in frame.columns:
        raise ValueError(f"frame has no column {user_col!r}; columns are {list(frame.columns)}")
    rng = np.random.default_rng(seed)
    keys = rng.random(len(frame))
    users = frame[user_col].to_numpy()
    codes, _ = pd.factorize(users)
    order = np.lexsort((keys, codes))
    sizes = np.bincount(codes, minlength=codes.max(initial=-1) + 1)
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    rank = np.empty(len(frame), dtype=np.int64)
    rank[order] = np.arange(len(frame)) - starts[codes[order]]
    return rank, sizes[codes]


def per_user_random_split(
    frame: pd.DataFrame,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    *,
    user_col: str = "user_id",
) -> tuple[pd.DataFrame, ...]:
    """Split each user's rows at random into ``len(fractions)`` parts (e.g. train/valid/test).

    Sizes follow RecBole's ``RS`` split so that numbers are comparable with its benchmarks:
    every part after the first gets ``floor(fraction * n)`` of a user's ``n`` rows, bumped to 1
    when that would be 0 but ``fraction * n > 0`` and the first part still keeps more than one
    row; the first part takes the rest. Users never disappear from the first part.
    """
    fr = np.asarray(fractions, dtype=np.float64)
    if fr.ndim != 1 or len(fr) < 2 or (fr < 0).any() or not np.isclose(fr.sum(), 1.0):
        raise ValueError(
            f"fractions must be ≥ 2 non-negative numbers summing to 1, got {tuple(fractions)}"
        )
    rank, n = _rank_within_user(frame, user_col, seed)
    # Per-row copy of each user's part sizes; a (rows x parts) array keeps this vectorised.
    counts = np.floor(fr[None, 1:] * n[:, None]).astype(np.int64)
    first = n - counts.sum(axis=1)
    for j in range(len(fr) - 1, 0, -1):
        bump = (first > 1) & (counts[:, j - 1] == 0) & (fr[j] * n > 0)
        counts[bump, j - 1] += 1
        first = first - bump
    bounds = np.cumsum(np.column_stack([first, counts]), axis=1)
    part = (rank[:, None] >= bounds).sum(axis=1)
    return tuple(frame[part == j] for j in range(len(fr)))


def per_user_holdout(
    frame: pd.DataFrame,
    test_fraction: float = 0.2,
    seed: int = 0,
    min_train: int = 1,
    *,
    user_col: str = "user_id",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Hold out ``test_fraction`` of each user's rows at random; returns ``(train, test)``.

    A user with ``n`` rows gets ``max(1, round(test_fraction * n))`` test rows, capped so that at
    least ``min_train`` rows stay in train; users with ``n <= min_train`` go entirely to train.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if min_train < 0:
        raise ValueError(f"min_train must be ≥ 0, got {min_train}")
    rank, n = _rank_within_user(frame, user_col, seed)
    n_test = np.maximum(1, np.round(test_fraction * n)).astype(np.int64)
    n_test = np.clip(n_test, 0, np.maximum(n - min_train, 0))
    is_test = rank < n_test
    return frame[~is_test], frame[is_test]
