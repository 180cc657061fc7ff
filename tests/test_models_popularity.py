"""Popularity: contract suite plus hand-computed counts."""

from __future__ import annotations

from typing import Any

import pandas as pd
from model_contract import FallbackRankerContract, ModelContract

from ray_app.models.base import Interactions, Recommender
from ray_app.models.popularity import Popularity, PopularityConfig

# Tiny hand-checkable frame. Users' histories:
#   u1: a b      u2: a b c      u3: b c d
# Per-item user counts: a=2, b=3, c=2, d=1.
TINY = pd.DataFrame(
    {
        "user_id": ["u1", "u1", "u2", "u2", "u2", "u3", "u3", "u3"],
        "item_id": ["a", "b", "a", "b", "c", "b", "c", "d"],
        "weight": [5.0, 1.0, 1.0, 1.0, 4.0, 1.0, 4.0, 1.0],
    }
)


class TestPopularityContract(ModelContract, FallbackRankerContract):
    ml100k_ndcg = 0.14  # measured 0.149 on this split; BENCHMARKS.md has the full protocol
    # Every checkerboard item has the same popularity (n/2 - 1 users), so the ranking is pure
    # tie-breaking: popularity cannot find the held-out item. Its ranking is checked by hand
    # below and by the fallback contract's staircase instead.
    expected_ndcg = None
    scores_empty_history = True

    def model_factory(self) -> Recommender[Any]:
        return Popularity()


def test_counts_by_hand() -> None:
    model = Popularity().fit(Interactions.from_frame(TINY))
    assert model.item_scores_ is not None
    assert dict(zip(model.interactions.item_ids, model.item_scores_, strict=True)) == {
        "a": 2.0,
        "b": 3.0,
        "c": 2.0,
        "d": 1.0,
    }
    # Ties (a, c: 2 users each) go to the lower index, i.e. the item seen first.
    assert model.top_items(3) == ["b", "a", "c"]
    assert model.top_items(2, exclude={"b", "not-an-item"}) == ["a", "c"]
    assert model.top_items(10, exclude={"a", "b", "c", "d"}) == []


def test_weight_sum_by_hand() -> None:
    # Weight sums: a = 5 + 1 = 6, b = 1 + 1 + 1 = 3, c = 4 + 4 = 8, d = 1.
    model = Popularity(PopularityConfig(weighting="weight")).fit(Interactions.from_frame(TINY))
    assert model.top_items(4) == ["c", "a", "b", "d"]


def test_recommend_skips_seen() -> None:
    model = Popularity().fit(Interactions.from_frame(TINY))
    recs = model.recommend(["u1", "u3"], k=5)
    assert recs.items == [["c", "d"], ["a"]]
    assert recs.scores == [[2.0, 1.0], [2.0]]
