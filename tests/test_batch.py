"""Batch recommendations from files: file contract, unseen top-K, the shared popularity fill,
the ColdStart capability, clear errors (library and command line)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from helpers import interactions
from typer.testing import CliRunner

from ray_app.batch.files import BatchInputError, recommend_batch
from ray_app.batch.ranking import fill_with_popular, rank_with_fill
from ray_app.cli import app
from ray_app.config import ConfigError
from ray_app.models.base import ColdStart, Interactions, Recommendations
from ray_app.models.popularity import Popularity

# Popularity (distinct users): a=4, b=3, c=2, d=1, e=1.
TRAIN = pd.DataFrame(
    {
        "user_id": ["u1", "u1", "u2", "u2", "u2", "u3", "u3", "u4", "u4", "u5"],
        "item_id": ["a", "b", "a", "b", "c", "a", "c", "a", "d", "b"],
        "rating": [5, 4, 3, 5, 4, 2, 5, 4, 4, 1],
        "timestamp": np.arange(10),
    }
)
TRAIN = pd.concat([TRAIN, pd.DataFrame({"user_id": ["u6"], "item_id": ["e"], "rating": [3]})])


def write(tmp: Path, train: pd.DataFrame, users: pd.DataFrame) -> tuple[Path, Path, Path]:
    t, u = tmp / "train.parquet", tmp / "users.parquet"
    train.to_parquet(t)
    users.to_parquet(u)
    return t, u, tmp / "out" / "recs.parquet"


def test_popularity_known_answer(tmp_path: Path) -> None:
    t, u, o = write(tmp_path, TRAIN, pd.DataFrame({"user_id": ["u1", "u3", "nobody"]}))
    result = recommend_batch(t, u, "popularity", None, 2, o)
    out = pd.read_parquet(o)
    assert list(out.columns) == ["user_id", "rank", "item_id", "score"]
    got = {uid: g.sort_values("rank")["item_id"].tolist() for uid, g in out.groupby("user_id")}
    # u1 has seen a, b -> c (2), then d/e tie at 1 (first seen wins: d).
    assert got == {"u1": ["c", "d"], "u3": ["b", "d"], "nobody": ["a", "b"]}
    assert out.loc[out.user_id == "u1", "score"].tolist() == [2.0, 1.0]
    assert out.loc[out.user_id == "nobody", "score"].isna().all()  # popularity fill
    assert result.users == 3 and result.rows == 6
    assert result.model_scored == 2 and result.popularity_filled == 1
    assert out["rank"].tolist() == [1, 2] * 3


def test_itemknn_excludes_seen_and_fills_to_k(tmp_path: Path) -> None:
    users = pd.DataFrame({"user_id": ["u5", "u2", "u5"]})  # duplicate listed once
    t, u, o = write(tmp_path, TRAIN, users)
    recommend_batch(t, u, "itemknn", {"k": 5}, 4, o)
    out = pd.read_parquet(o)
    assert out["user_id"].unique().tolist() == ["u5", "u2"]
    seen = TRAIN.groupby("user_id")["item_id"].agg(set)
    for uid, g in out.groupby("user_id"):
        assert not set(g["item_id"]) & seen[uid]
        assert g["rank"].tolist() == list(range(1, len(g) + 1))
        assert len(g) == min(4, 5 - len(seen[uid]))
    # u2 (a b c) has only d, e left: d co-occurs with a (via u4); e with none of them.
    u2 = out[out.user_id == "u2"].set_index("item_id")["score"]
    assert u2.index.tolist() == ["d", "e"]
    assert u2["d"] > 0 and u2["e"] == 0


def test_integer_ids_are_accepted(tmp_path: Path) -> None:
    train = pd.DataFrame({"user_id": [1, 1, 2, 3], "item_id": [10, 11, 10, 12]})
    t, u, o = write(tmp_path, train, pd.DataFrame({"user_id": [2]}))
    recommend_batch(t, u, "popularity", None, 5, o)
    out = pd.read_parquet(o)
    assert out["item_id"].tolist() == ["11", "12"] and out["user_id"].tolist() == ["2", "2"]


def test_two_tower_scores_unknown_users_from_features(tmp_path: Path) -> None:
    users = pd.DataFrame(
        {
            "user_id": ["u1", "brand-new"],
            "age": [30, 30],
            "gender": ["F", "F"],
            "occupation": ["x", "x"],
        }
    )
    t, u, o = write(tmp_path, TRAIN, users)
    cfg = {"num_workers": 0, "epochs": 2, "embedding_dim": 8, "hidden": 0, "batch_size": 4}
    result = recommend_batch(t, u, "two_tower", cfg, 3, o)
    out = pd.read_parquet(o)
    assert result.cold_scored == 1
    assert np.isfinite(out.loc[out.user_id == "brand-new", "score"]).all()
    assert len(out[out.user_id == "brand-new"]) == 3


@pytest.mark.parametrize(
    ("which", "frame", "match"),
    [
        ("train", TRAIN.rename(columns={"item_id": "movie_id"}), r"TRAIN .* no column 'item_id'"),
        ("train", TRAIN.drop(columns="user_id"), r"rename the column .* to 'user_id'"),
        ("users", pd.DataFrame({"uid": ["u1"]}), r"USERS .* no column 'user_id'"),
        ("train", TRAIN.iloc[:0], "has no rows"),
        ("train", TRAIN.assign(rating=np.nan), "'rating' .* missing or non-numeric"),
    ],
)
def test_bad_files_name_the_column_and_fix(
    tmp_path: Path, which: str, frame: pd.DataFrame, match: str
) -> None:
    users = pd.DataFrame({"user_id": ["u1"]})
    train = frame if which == "train" else TRAIN
    t, u, o = write(tmp_path, train, frame if which == "users" else users)
    with pytest.raises(BatchInputError, match=match):
        recommend_batch(t, u, "popularity", None, 3, o)
    assert not o.exists()


def test_bad_model_config_and_k(tmp_path: Path) -> None:
    t, u, o = write(tmp_path, TRAIN, pd.DataFrame({"user_id": ["u1"]}))
    with pytest.raises(ConfigError, match="unknown model 'knn'"):
        recommend_batch(t, u, "knn", None, 3, o)
    with pytest.raises(ConfigError, match="neighbours"):
        recommend_batch(t, u, "itemknn", {"neighbours": 3}, 3, o)
    with pytest.raises(ConfigError, match="k must be a positive integer"):
        recommend_batch(t, u, "popularity", None, 0, o)
    with pytest.raises(BatchInputError, match=r"TRAIN file .*missing\.parquet does not exist"):
        recommend_batch(tmp_path / "missing.parquet", u, "popularity", None, 3, o)


def test_cli_recommend_batch(tmp_path: Path) -> None:
    t, u, o = write(tmp_path, TRAIN, pd.DataFrame({"user_id": ["u1", "nobody"]}))
    cfg = tmp_path / "itemknn.yaml"
    cfg.write_text("k: 3\nsimilarity: tfidf\n")
    args = ["recommend-batch", "--train", str(t), "--users", str(u), "--model", "itemknn"]
    result = CliRunner().invoke(app, [*args, "--config", str(cfg), "--k", "2", "--out", str(o)])
    assert result.exit_code == 0, result.output
    assert "rows written" in result.output
    assert len(pd.read_parquet(o)) == 4
    cfg.write_text("neighbours: 3\n")
    result = CliRunner().invoke(app, [*args, "--config", str(cfg), "--out", str(o)])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "neighbours" in lines[0]
    assert "Traceback" not in result.output


def _reference_fill(
    items: np.ndarray, seen: list[set[int]], order: list[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Row by row: listed items first, then popular items neither seen nor listed."""
    out = np.full_like(items, -1)
    filled = np.zeros(len(items), dtype=bool)
    for i, row in enumerate(items):
        listed = [int(x) for x in row if x >= 0]
        extra = [j for j in order if j not in seen[i] and j not in listed]
        extra = extra[: items.shape[1] - len(listed)]
        out[i, : len(listed) + len(extra)] = listed + extra
        filled[i] = bool(extra)
    return out, filled


@pytest.mark.parametrize("seed", range(5))
def test_vectorised_fill_matches_the_row_by_row_definition(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(seed)
    n_users, n_items, k = 40, 12, 5
    matrix = sp.random(n_users, n_items, density=0.35, format="csr", random_state=seed)
    inter = Interactions(
        pd.Index([f"u{i}" for i in range(n_users)]),
        pd.Index([f"m{j}" for j in range(n_items)]),
        matrix.astype(np.float32),
    )
    user_idx = np.where(rng.random(n_users) < 0.2, -1, np.arange(n_users))
    items = np.full((n_users, k), -1, dtype=np.int64)
    for i in range(n_users):  # a few model items per row, in arbitrary slots
        chosen = rng.choice(n_items, size=int(rng.integers(0, k + 1)), replace=False)
        items[i, rng.choice(k, size=len(chosen), replace=False)] = chosen
    scores = np.where(items >= 0, 1.0, np.nan)
    seen = [
        set(matrix.indices[matrix.indptr[u] : matrix.indptr[u + 1]].tolist()) if u >= 0 else set()
        for u in user_idx
    ]
    counts = np.diff(matrix.tocsc().indptr)
    order = sorted(range(n_items), key=lambda j: (-counts[j], j))
    compact = np.array([[*(x for x in row if x >= 0), *(x for x in row if x < 0)] for row in items])
    want, want_filled = _reference_fill(compact, seen, order)
    monkeypatch.setattr("ray_app.batch.ranking.FILL_CHUNK_CELLS", 7 * n_items)  # several chunks
    got_filled = fill_with_popular(items, scores, user_idx, inter)
    np.testing.assert_array_equal(items, want)
    np.testing.assert_array_equal(got_filled, want_filled)
    model_slots = compact >= 0
    assert (scores[model_slots] == 1.0).all(), "the model's own scores stay"
    assert np.isnan(scores[~model_slots]).all(), "filled and empty slots have no score"


class _Cold(Popularity, ColdStart):
    """Popularity that also scores unknown users from features: always items m2, m1."""

    def recommend_cold(
        self, user_features: pd.DataFrame, k: int = 10, exclude_seen: bool = True
    ) -> Recommendations:
        ids = user_features["user_id"].astype(str).tolist()
        return Recommendations(ids, [["m2", "m1"][:k]] * len(ids), [[9.0, 8.0][:k]] * len(ids))


class _ColdByName(Popularity):
    """Has a recommend_cold method but does not declare the ColdStart capability."""

    def recommend_cold(self, user_features: pd.DataFrame, k: int = 10) -> Recommendations:
        raise AssertionError("only models declaring ColdStart are asked to score cold users")


def test_cold_start_is_a_declared_capability() -> None:
    inter = interactions([("a", "m0"), ("b", "m0"), ("b", "m1"), ("c", "m2")])
    features = pd.DataFrame({"user_id": ["a", "new"], "age": [30, 40]})
    cold = rank_with_fill(_Cold().fit(inter), ["a", "new"], 3, features)
    assert cold.cold_scored.tolist() == [False, True]
    assert cold.items[1].tolist() == [2, 1, 0]  # the cold ranking, then the popularity fill
    assert cold.scores[1, :2].tolist() == [9.0, 8.0] and np.isnan(cold.scores[1, 2])
    plain = rank_with_fill(_ColdByName().fit(inter), ["a", "new"], 3, features)
    assert plain.cold_scored.tolist() == [False, False]
    assert plain.items[1].tolist() == [0, 1, 2] and np.isnan(plain.scores[1]).all()
