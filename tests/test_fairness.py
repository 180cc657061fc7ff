"""The fairness block: known answers on a hand-computed four-user ranking, properties with
Hypothesis, and the block as the training step produces it."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from ray_app.evaluation.fairness import (
    FairnessConfig,
    bootstrap_mean_interval,
    fairness_block,
    gini,
    parity,
    popularity_buckets,
)
from ray_app.evaluation.offline import RankedHoldout, user_group_frame
from ray_app.training.fit import FitInputs, fit_and_evaluate

DISCOUNT_2 = 1.0 / math.log2(3.0)


def _ranked() -> RankedHoldout:
    """Four users, top 2 over four items.

    a: [0, 1], truth {0}    → hit, NDCG 1, recall 1
    b: [0, 2], truth {3}    → miss, 0, 0
    c: [1, 3], truth {1, 3} → hit, NDCG 1 (both hits, ideal), recall 1
    d: unknown, truth {2}   → miss, 0, 0
    Item popularity 5, 3, 1, 1 (10 interactions).
    """
    rec = np.array([[0, 1], [0, 2], [1, 3], [-1, -1]])
    truth = sp.csr_matrix(
        (np.ones(5, dtype=bool), ([0, 1, 2, 2, 3], [0, 3, 1, 3, 2])), shape=(4, 4)
    )
    pop = np.array([5.0, 3.0, 1.0, 1.0])
    return RankedHoldout(np.array(["a", "b", "c", "d"]), rec, truth, 4, 2, pop, 4)


def _groups() -> pd.DataFrame:
    return pd.DataFrame(
        {"gender": ["F", "M", "F", "M"], "occupation": ["x", "x", "x", "y"]},
        index=pd.Index(["a", "b", "c", "d"], name="user_id"),
    )


def _mean_abs_difference_gini(x: list[float]) -> float:
    """Gini as the mean absolute difference over twice the mean (an independent formula)."""
    n, mean = len(x), sum(x) / len(x)
    return sum(abs(a - b) for a in x for b in x) / (2 * n * n * mean)


def test_known_answer_groups_parity_and_miss_rates() -> None:
    block = fairness_block(_ranked(), _groups(), FairnessConfig(min_group_users=2))
    f, m = block["groups"]["gender"]["F"], block["groups"]["gender"]["M"]
    assert f["users"] == 2 and m["users"] == 2
    assert f["ndcg@2"]["mean"] == pytest.approx(1.0) and m["ndcg@2"]["mean"] == 0.0
    assert f["ndcg@2"]["ci"] == [pytest.approx(1.0), pytest.approx(1.0)]
    assert f["recall@2"]["mean"] == 1.0 and m["recall@2"]["mean"] == 0.0
    assert f["miss_rate"] == 0.0 and m["miss_rate"] == 1.0
    gender = block["parity"]["gender"]
    assert gender["ndcg@2"] == {"gap": 1.0, "ratio": 0.0, "best": "F", "worst": "M", "groups": 2}
    assert gender["miss_rate_difference"] == 1.0
    # occupation y has one user: listed, flagged small, and left out of the gap.
    assert block["groups"]["occupation"]["y"]["small"] is True
    assert block["parity"]["occupation"]["ndcg@2"]["gap"] is None
    assert block["parity_gap"]["ndcg@2"] == {"gap": 1.0, "kind": "gender"}


def test_known_answer_exposure_buckets_gini_and_coverage() -> None:
    block = fairness_block(_ranked(), None, FairnessConfig())
    buckets = block["exposure"]["buckets"]
    # Sorted by count: item 0 (before 0.0) is head; item 1 (0.5) mid; items 2, 3 (0.8, 0.9) tail.
    assert [buckets[b]["items"] for b in ("head", "mid", "tail")] == [1, 1, 2]
    assert buckets["head"]["interaction_share"] == pytest.approx(0.5)
    assert buckets["mid"]["interaction_share"] == pytest.approx(0.3)
    assert buckets["tail"]["interaction_share"] == pytest.approx(0.2)
    # Slots: item 0 twice, item 1 twice, items 2 and 3 once each (6 slots).
    for name in ("head", "mid", "tail"):
        assert buckets[name]["recommendation_share"] == pytest.approx(2 / 6)
    weighted = {0: 2.0, 1: 1.0 + DISCOUNT_2, 2: DISCOUNT_2, 3: DISCOUNT_2}
    total = sum(weighted.values())
    assert buckets["head"]["exposure_share"] == pytest.approx(2.0 / total)
    assert block["list_gini"] == pytest.approx(_mean_abs_difference_gini([2, 2, 1, 1]))
    assert block["exposure_gini"] == pytest.approx(
        _mean_abs_difference_gini(list(weighted.values()))
    )
    assert block["coverage"] == 1.0 and block["groups"] == {} and block["k"] == 2


def test_block_is_strict_json() -> None:
    json.dumps(fairness_block(_ranked(), _groups(), FairnessConfig()), allow_nan=False)


def test_shares_that_leave_no_mid_bucket_are_refused() -> None:
    with pytest.raises(ValueError, match="must stay below 1"):
        FairnessConfig(head_share=0.6, tail_share=0.4)


@settings(max_examples=60, deadline=None)
@given(
    values=arrays(np.float64, st.integers(1, 40), elements=st.floats(0, 1)),
    groups=st.integers(2, 5),
)
def test_gap_is_zero_when_every_group_holds_the_same_users(values: np.ndarray, groups: int) -> None:
    # Each group gets the same multiset of per-user values, in a different order.
    rng = np.random.default_rng(0)
    means = {f"g{g}": float(rng.permutation(values).mean()) for g in range(groups)}
    result = parity(means)
    assert result["gap"] == pytest.approx(0.0, abs=1e-12)
    assert result["groups"] == groups


@settings(max_examples=60, deadline=None)
@given(
    values=arrays(np.float64, st.integers(1, 60), elements=st.floats(0, 1) | st.just(float("nan"))),
    seed=st.integers(0, 2**16),
)
def test_interval_contains_the_point_estimate(values: np.ndarray, seed: int) -> None:
    lo, hi = bootstrap_mean_interval(values, 200, 0.95, np.random.default_rng(seed))
    finite = values[~np.isnan(values)]
    if finite.size == 0:
        assert math.isnan(lo) and math.isnan(hi)
    else:
        assert lo <= finite.mean() <= hi
        assert finite.min() - 1e-12 <= lo and hi <= finite.max() + 1e-12


@settings(max_examples=60, deadline=None)
@given(counts=arrays(np.int64, st.integers(1, 50), elements=st.integers(0, 1000)))
def test_buckets_follow_popularity_and_their_shares(counts: np.ndarray) -> None:
    buckets = popularity_buckets(counts, 0.2, 0.2)
    order = np.argsort(-counts, kind="stable")
    assert (np.diff(buckets[order]) >= 0).all(), "head, then mid, then tail by popularity"
    assert (buckets[counts == 0] == 2).all(), "never-seen items are tail"
    total = counts.sum()
    if total:
        assert counts[buckets == 0].sum() / total >= 0.2 - 1e-12
        assert counts[buckets == 2].sum() / total <= 0.2 + 1e-12


@settings(max_examples=60, deadline=None)
@given(values=arrays(np.float64, st.integers(1, 50), elements=st.floats(0, 100)))
def test_gini_is_between_zero_and_one(values: np.ndarray) -> None:
    g = gini(values)
    assert 0.0 <= g < 1.0 + 1e-12
    if values.sum() > 0 and (values == values[0]).all():
        assert g == pytest.approx(0.0, abs=1e-9)


def test_the_training_step_returns_the_block_from_its_holdout_ranking() -> None:
    rng = np.random.default_rng(1)
    rows = [(f"u{u}", f"m{int(i)}") for u in range(60) for i in rng.choice(30, 12, replace=False)]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id"])
    test = frame.groupby("user_id").head(3)
    train = frame.drop(test.index)
    profiles = pd.DataFrame(
        {
            "user_id": [f"u{u}" for u in range(60)],
            "age": [20 + u % 40 for u in range(60)],
            "gender": ["F" if u % 3 == 0 else "M" for u in range(60)],
            "occupation": ["writer"] * 60,
        }
    )
    inputs = FitInputs(
        train=train,
        test=test,
        catalog=sorted(frame["item_id"].unique()),
        k=5,
        user_groups=user_group_frame(train, profiles),
        fairness=FairnessConfig(bootstrap_samples=100, min_group_users=10),
    )
    fitted = fit_and_evaluate("itemknn", {}, inputs)
    block = fitted.fairness
    assert block["users"] == 60 and block["k"] == 5
    assert set(block["parity"]) == {"activity", "gender", "age_band", "occupation"}
    assert block["groups"]["gender"]["F"]["users"] == 20
    # The overall metric is the user-weighted mean of the gender groups' means.
    f, m = block["groups"]["gender"]["F"], block["groups"]["gender"]["M"]
    overall = (20 * f["ndcg@5"]["mean"] + 40 * m["ndcg@5"]["mean"]) / 60
    assert overall == pytest.approx(fitted.metrics["ndcg@5"])
    assert block["coverage"] == pytest.approx(fitted.metrics["coverage"])
    without = fit_and_evaluate("itemknn", {}, FitInputs(train, test, inputs.catalog, 5))
    assert without.fairness == {}
