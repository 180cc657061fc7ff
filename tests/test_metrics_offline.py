"""``evaluate``: end-to-end numbers on a tiny hand-checkable case."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from ray_app.evaluation.offline import evaluate
from ray_app.models.base import Interactions
from ray_app.models.popularity import Popularity

# Training counts: a=3, b=2, c=1, d=0 (d is in the catalogue but nobody saw it).
TRAIN = pd.DataFrame(
    {"user_id": ["u1", "u2", "u3", "u1", "u2", "u3"], "item_id": ["a", "a", "a", "b", "b", "c"]}
)


def fitted() -> tuple[Popularity, Interactions]:
    inter = Interactions.from_frame(TRAIN, weight_col=None, item_ids=["a", "b", "c", "d"])
    return Popularity().fit(inter), inter


def test_evaluate_by_hand() -> None:
    model, inter = fitted()
    # Unseen-by-popularity lists at k=2:  u1 -> [c, d]   u3 -> [b, d]
    # u1 relevant {c}: hit at rank 1 -> ndcg 1, recall 1.
    # u3 relevant {d, z} (z is not in the catalogue): hit at rank 2, IDCG over min(2, 2) slots
    #   ndcg = (1/log2 3) / (1 + 1/log2 3) = 0.3869; recall = 1 / min(2, 2) = 0.5.
    # stranger: unknown to the model -> counted, with zero hits.
    test = pd.DataFrame(
        {"user_id": ["u1", "u3", "u3", "stranger"], "item_id": ["c", "d", "z", "a"]}
    )
    out = evaluate(model, inter, test, k=2)
    ndcg_u3 = (1 / math.log2(3)) / (1 + 1 / math.log2(3))
    assert out["ndcg@2"] == pytest.approx((1.0 + ndcg_u3 + 0.0) / 3)
    assert out["recall@2"] == pytest.approx((1.0 + 0.5 + 0.0) / 3)
    assert out["precision@2"] == pytest.approx((0.5 + 0.5 + 0.0) / 3)
    assert out["hit@2"] == pytest.approx(2 / 3)
    assert out["mrr@2"] == pytest.approx((1.0 + 0.5) / 3)
    assert out["known"] == pytest.approx(2 / 3)
    assert out["users"] == 3
    assert out["coverage"] == pytest.approx(3 / 4)  # b, c, d shown
    # Exposure [a=0, b=1, c=1, d=2] -> sorted [0,1,1,2], total 4:
    # Gini = 2 * (0 + 2 + 3 + 8) / (4 * 4) - 5/4 = 26/16 - 20/16 = 0.375
    assert out["gini"] == pytest.approx(0.375)
    assert set(out) >= {"ndcg@2", "recall@2", "coverage", "novelty", "gini"}


def test_item_features_add_ild() -> None:
    model, inter = fitted()
    feats = pd.DataFrame(
        {"drama": [1.0, 1.0, 0.0], "comedy": [0.0, 0.0, 1.0]}, index=["b", "c", "d"]
    )
    out = evaluate(model, inter, pd.DataFrame({"user_id": ["u1"], "item_id": ["c"]}), 2, feats)
    # u1 gets [c, d]: drama vs comedy -> distance 1.
    assert out["ild@2"] == pytest.approx(1.0)


def test_missing_column_is_named() -> None:
    model, inter = fitted()
    with pytest.raises(ValueError, match="no column 'item_id'"):
        evaluate(model, inter, pd.DataFrame({"user_id": ["u1"]}))


def test_evaluate_by_group_splits_users_by_profile_and_activity() -> None:
    import pandas as pd

    from ray_app.evaluation.offline import evaluate, evaluate_by_group, user_group_frame
    from ray_app.models.base import Interactions
    from ray_app.models.popularity import Popularity

    rows = [(f"u{u}", f"m{(u * 7 + j) % 40}") for u in range(40) for j in range(5 + (u % 2) * 30)]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id"])
    test = frame.groupby("user_id").head(1)
    train = frame.drop(test.index)
    users = pd.DataFrame(
        {
            "user_id": [f"u{u}" for u in range(40)],
            "age": [20 + u for u in range(40)],
            "gender": ["F" if u % 2 else "M" for u in range(40)],
            "occupation": ["x"] * 40,
        }
    )
    groups = user_group_frame(train, users)
    assert set(groups.columns) == {"activity", "gender", "age_band", "occupation"}
    assert groups.loc["u1", "activity"] == "20-49" and groups.loc["u0", "activity"] == "<20"
    assert groups.loc["u0", "age_band"] == "18-24" and groups.loc["u39", "age_band"] == "55+"
    inter = Interactions.from_frame(train)
    model = Popularity().fit(inter)
    by = evaluate_by_group(model, inter, test, groups, k=10)
    assert {"gender=F", "gender=M", "activity=<20", "activity=20-49", "occupation=x"} <= set(by)
    assert by["gender=F"]["users"] == 20 and by["gender=M"]["users"] == 20
    # the whole is the user-weighted mean of its parts
    overall = evaluate(model, inter, test, k=10)["ndcg@10"]
    parts = (by["gender=F"]["ndcg@10"] + by["gender=M"]["ndcg@10"]) / 2
    assert abs(overall - parts) < 1e-9
