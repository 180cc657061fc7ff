"""recommend_batch: file contract, unseen top-K, popularity fill, clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ray_app.batch import recommend_batch

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
    with pytest.raises(ValueError, match=match):
        recommend_batch(t, u, "popularity", None, 3, o)
    assert not o.exists()


def test_bad_model_config_and_k(tmp_path: Path) -> None:
    t, u, o = write(tmp_path, TRAIN, pd.DataFrame({"user_id": ["u1"]}))
    with pytest.raises(ValueError, match="unknown model 'knn'"):
        recommend_batch(t, u, "knn", None, 3, o)
    with pytest.raises(ValueError, match="neighbours"):
        recommend_batch(t, u, "itemknn", {"neighbours": 3}, 3, o)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        recommend_batch(t, u, "popularity", None, 0, o)
    with pytest.raises(ValueError, match="does not exist"):
        recommend_batch(tmp_path / "missing.parquet", u, "popularity", None, 3, o)


def test_cli_recommend_batch(tmp_path: Path) -> None:
    import typer
    from typer.testing import CliRunner

    from ray_app.commands.models import register

    app, data_app = typer.Typer(), typer.Typer()
    app.add_typer(data_app, name="data")
    register(app, data_app)
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
    assert result.exit_code == 2 and "neighbours" in result.output
