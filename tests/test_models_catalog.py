"""Model catalogue: build by name, helpful errors, load by what model.json says."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pydantic
import pytest

from ray_app.models.base import Interactions
from ray_app.models.catalog import MODELS, build_model, load_model


def test_all_models_registered() -> None:
    assert set(MODELS) == {"popularity", "itemknn", "userknn", "ease", "two_tower"}
    for name, cls in MODELS.items():
        assert cls.name == name


def test_unknown_name_lists_valid_ones() -> None:
    with pytest.raises(
        ValueError, match=r"unknown model 'knn'.*ease, itemknn, popularity, two_tower, userknn"
    ):
        build_model("knn", None)


def test_config_is_validated() -> None:
    assert build_model("itemknn", {"k": 7}).config.k == 7  # type: ignore[attr-defined]
    with pytest.raises(pydantic.ValidationError, match="neighbours"):
        build_model("itemknn", {"neighbours": 7})


def test_load_model_dispatches_on_saved_name(tmp_path: Path) -> None:
    frame = pd.DataFrame({"user_id": ["u1", "u1", "u2"], "item_id": ["a", "b", "a"]})
    build_model("userknn", None).fit(Interactions.from_frame(frame)).save(tmp_path)
    assert load_model(tmp_path).name == "userknn"
    with pytest.raises(ValueError, match=r"model\.json"):
        load_model(tmp_path / "missing")


def test_a_model_with_nan_scores_fails_loudly_instead_of_ranking_garbage() -> None:
    import numpy as np
    import pandas as pd
    import pytest

    from ray_app.models.base import Interactions
    from ray_app.models.itemknn import ItemKNN

    frame = pd.DataFrame(
        {"user_id": ["a", "a", "b", "b", "c"], "item_id": ["x", "y", "y", "z", "x"]}
    )
    model = ItemKNN().fit(Interactions.from_frame(frame))
    assert model.similarity_ is not None
    model.similarity_.data[:] = np.nan
    with pytest.raises(FloatingPointError, match="NaN"):
        model.recommend(["a"], k=2)
