"""Model catalogue: build by name, helpful errors, the capabilities callers see."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ray_app.config import ConfigError
from ray_app.models.base import ColdStart, EpochTrainable, FallbackRanker, Interactions
from ray_app.models.catalog import MODELS, build_model
from ray_app.models.itemknn import ItemKNN, ItemKNNConfig


def test_all_models_registered() -> None:
    assert set(MODELS) == {"popularity", "itemknn", "userknn", "ease", "two_tower"}
    for name, cls in MODELS.items():
        assert cls.name == name
    with pytest.raises(TypeError):
        MODELS["mine"] = ItemKNN  # type: ignore[index]


def test_unknown_name_lists_valid_ones() -> None:
    with pytest.raises(
        ConfigError, match=r"unknown model 'knn'.*ease, itemknn, popularity, two_tower, userknn"
    ):
        build_model("knn", None)


def test_config_is_validated() -> None:
    assert build_model("itemknn", {"k": 7}).config.k == 7  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match=r"itemknn config: neighbours: .*valid fields are: k, "):
        build_model("itemknn", {"neighbours": 7})
    with pytest.raises(ConfigError, match=r"^itemknn config: k: .*\(got 0\)"):
        build_model("itemknn", {"k": 0})


CAPABILITIES = {
    "popularity": {FallbackRanker},
    "itemknn": set(),
    "userknn": set(),
    "ease": set(),
    "two_tower": {ColdStart, EpochTrainable},
}
"""What serving (fallback), batch scoring (cold start) and Ray Tune (epochs) rely on."""


@pytest.mark.parametrize("name", sorted(MODELS))
def test_callers_see_the_declared_capabilities(name: str) -> None:
    model = build_model(name)
    seen = {cap for cap in (ColdStart, EpochTrainable, FallbackRanker) if isinstance(model, cap)}
    assert seen == CAPABILITIES[name]


def test_a_model_with_nan_scores_fails_loudly_instead_of_ranking_garbage() -> None:
    frame = pd.DataFrame(
        {"user_id": ["a", "a", "b", "b", "c"], "item_id": ["x", "y", "y", "z", "x"]}
    )
    model = ItemKNN(ItemKNNConfig(similarity="cosine")).fit(Interactions.from_frame(frame))
    assert model.similarity_ is not None and model.similarity_.nnz > 0
    model.similarity_.data[:] = np.nan
    with pytest.raises(FloatingPointError, match="NaN"):
        model.recommend(["a"], k=2)
