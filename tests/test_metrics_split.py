"""Per-user splits: partition, sizes, determinism."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ray_app.evaluation.split import per_user_holdout, per_user_random_split


def frame_with_counts(counts: list[int]) -> pd.DataFrame:
    users = np.repeat([f"u{i}" for i in range(len(counts))], counts)
    items = np.concatenate([np.arange(c) for c in counts]) if counts else np.array([], int)
    return pd.DataFrame({"user_id": users, "item_id": items.astype(str)})


def sizes(part: pd.DataFrame) -> dict[str, int]:
    return {str(k): int(v) for k, v in part.groupby("user_id").size().items()}


def test_sizes_follow_recbole_rule() -> None:
    # n=10 -> 8/1/1; n=20 -> 16/2/2; n=5: floor(0.5) = 0 -> bumped to 1 each -> 3/1/1;
    # n=2: test gets bumped to 1, then train would be left with 1 row, so valid stays 0 -> 1/0/1;
    # n=1: nothing to spare -> 1/0/0.
    frame = frame_with_counts([10, 20, 5, 2, 1])
    train, valid, test = per_user_random_split(frame, (0.8, 0.1, 0.1), seed=0)
    assert sizes(train) == {"u0": 8, "u1": 16, "u2": 3, "u3": 1, "u4": 1}
    assert sizes(valid) == {"u0": 1, "u1": 2, "u2": 1}
    assert sizes(test) == {"u0": 1, "u1": 2, "u2": 1, "u3": 1}


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 40), min_size=1, max_size=12), st.integers(0, 10_000))
def test_split_is_a_partition(counts: list[int], seed: int) -> None:
    frame = frame_with_counts(counts)
    parts = per_user_random_split(frame, (0.7, 0.2, 0.1), seed=seed)
    joined = pd.concat(parts)
    assert len(joined) == len(frame)
    assert joined.index.sort_values().equals(frame.index)
    # Every user keeps at least one training row.
    assert set(parts[0]["user_id"]) == set(frame["user_id"])


def test_split_is_seeded() -> None:
    frame = frame_with_counts([30, 30, 30])
    a = per_user_random_split(frame, seed=1)
    b = per_user_random_split(frame, seed=1)
    c = per_user_random_split(frame, seed=2)
    assert all(x.equals(y) for x, y in zip(a, b, strict=True))
    assert not a[2].index.equals(c[2].index)


def test_split_rejects_bad_fractions() -> None:
    with pytest.raises(ValueError, match="fractions"):
        per_user_random_split(frame_with_counts([3]), (0.5, 0.2))
    with pytest.raises(ValueError, match="no column 'user'"):
        per_user_random_split(frame_with_counts([3]), user_col="user")


def test_holdout_sizes_and_min_train() -> None:
    # n=10 at 0.2 -> 2 test; n=3 -> max(1, round(0.6)) = 1; n=2 with min_train=2 -> 0 test.
    frame = frame_with_counts([10, 3, 2])
    train, test = per_user_holdout(frame, test_fraction=0.2, seed=0, min_train=2)
    assert sizes(test) == {"u0": 2, "u1": 1}
    assert sizes(train) == {"u0": 8, "u1": 2, "u2": 2}
    assert len(train) + len(test) == len(frame)


def test_holdout_validates_arguments() -> None:
    with pytest.raises(ValueError, match="test_fraction"):
        per_user_holdout(frame_with_counts([3]), test_fraction=1.0)
    with pytest.raises(ValueError, match="min_train"):
        per_user_holdout(frame_with_counts([3]), min_train=-1)
