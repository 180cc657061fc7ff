"""Ray Data batch inference over a registry version (real local Ray)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from ray_app.batch.all_users import recommend_all
from ray_app.models.base import Interactions
from ray_app.models.itemknn import ItemKNN
from ray_app.registry.signing import SignatureError
from ray_app.registry.store import Registry

pytestmark = pytest.mark.integration


def test_every_user_scored_in_parallel_equals_the_model(ray_session: None, tmp_path: Path) -> None:
    rows = [(f"u{u}", f"m{(u * 3 + j) % 50}") for u in range(300) for j in range(6)]
    inter = Interactions.from_frame(pd.DataFrame(rows, columns=["user_id", "item_id"]))
    model = ItemKNN().fit(inter)
    reg = Registry(tmp_path / "reg")
    mv = reg.register(model)
    result = recommend_all(str(tmp_path / "reg"), "itemknn", tmp_path / "out", k=5, batch_size=64)
    assert result.users == 300 and result.model_scored == 300 and result.version == mv.version
    out = pd.read_parquet(tmp_path / "out").sort_values(["user_id", "rank"])
    assert result.rows == len(out) and set(out["model_version"]) == {mv.version}
    direct = model.recommend(["u7", "u123"], k=5)
    for user, items in zip(direct.user_ids, direct.items, strict=True):
        assert out[out.user_id == user]["item_id"].tolist() == items

    # a second run into the same directory counts only its own rows
    again = recommend_all(str(tmp_path / "reg"), "itemknn", tmp_path / "out", users=["u1"], k=5)
    assert again.users == 1 and again.rows == 5

    # a tampered artifact scores nobody: the version is verified before any actor starts
    state = mv.path / "artifact" / "state.npz"
    data = bytearray(state.read_bytes())
    data[len(data) // 2] ^= 0xFF
    state.write_bytes(bytes(data))
    with pytest.raises(SignatureError, match=r"state\.npz"):
        recommend_all(str(tmp_path / "reg"), "itemknn", tmp_path / "out2", users=["u1"], k=5)
    assert not (tmp_path / "out2").exists()


def test_users_the_model_cannot_score_get_popular_items(ray_session: None, tmp_path: Path) -> None:
    # m0 is the most popular item (3 users), then m1 (2); "quiet" is a known user with an
    # empty history, which item-KNN cannot score, and "stranger" is not known at all.
    matrix = sp.csr_matrix(
        np.array([[1, 1, 0, 0], [1, 1, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]], dtype=np.float32)
    )
    inter = Interactions(
        pd.Index(["a", "b", "c", "quiet"]), pd.Index(["m0", "m1", "m2", "m3"]), matrix
    )
    Registry(tmp_path / "reg").register(ItemKNN().fit(inter))
    users = ["a", "quiet", "stranger"]
    result = recommend_all(str(tmp_path / "reg"), "itemknn", tmp_path / "out", users=users, k=2)
    out = pd.read_parquet(tmp_path / "out").sort_values(["user_id", "rank"])
    lists = {u: g["item_id"].tolist() for u, g in out.groupby("user_id")}
    assert lists["quiet"] == ["m0", "m1"] and lists["stranger"] == ["m0", "m1"]
    assert out.loc[out.user_id != "a", "score"].isna().all(), "filled rows have no model score"
    assert np.isfinite(out.loc[out.user_id == "a", "score"]).any()
    assert result.model_scored == 1 and result.popularity_filled == 2 and result.rows == 6
