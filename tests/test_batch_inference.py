"""Ray Data batch inference over a registry version (real local Ray)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from ray_app.models.base import Interactions
from ray_app.models.itemknn import ItemKNN
from ray_app.registry.store import Registry
from ray_app.training.batch_inference import recommend_all

pytestmark = pytest.mark.integration


def test_every_user_scored_in_parallel_equals_the_model(ray_session: None, tmp_path: Path) -> None:
    rows = [(f"u{u}", f"m{(u * 3 + j) % 50}") for u in range(300) for j in range(6)]
    inter = Interactions.from_frame(pd.DataFrame(rows, columns=["user_id", "item_id"]))
    model = ItemKNN().fit(inter)
    reg = Registry(tmp_path / "reg")
    mv = reg.register(model)
    stats = recommend_all(str(tmp_path / "reg"), "itemknn", tmp_path / "out", k=5, batch_size=64)
    assert stats["users"] == 300 and stats["users_scored"] == 300
    out = pd.read_parquet(tmp_path / "out").sort_values(["user_id", "rank"])
    assert set(out["model_version"]) == {mv.version}
    direct = model.recommend(["u7", "u123"], k=5)
    for user, items in zip(direct.user_ids, direct.items, strict=True):
        assert out[out.user_id == user]["item_id"].tolist() == items

    # a tampered artifact scores nobody: every actor verifies before loading
    state = mv.path / "artifact" / "state.npz"
    data = bytearray(state.read_bytes())
    data[len(data) // 2] ^= 0xFF
    state.write_bytes(bytes(data))
    with pytest.raises(Exception, match=r"state\.npz"):  # SignatureError, raised in the actors
        recommend_all(str(tmp_path / "reg"), "itemknn", tmp_path / "out2", users=["u1"], k=5)
