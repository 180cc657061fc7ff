"""Synthetic data: exact sizes, MovieLens-shaped frames, determinism, chunked Parquet."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from ray_app.cli import app
from ray_app.config import ConfigError
from ray_app.data.synth import generate
from ray_app.data.synth_sampler import GENRES, iter_chunks


@pytest.fixture(scope="module")
def small() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    d = generate(60_000, 800, 1_500, seed=3)
    assert d.ratings is not None
    return d.ratings, d.movies, d.users


def test_exact_sizes_and_no_repeated_pairs(small: tuple[pd.DataFrame, ...]) -> None:
    ratings, movies, users = small
    assert len(ratings) == 60_000
    assert len(movies) == 1_500 and len(users) == 800
    assert not ratings.duplicated(["user_id", "item_id"]).any()
    assert set(ratings["user_id"]) <= set(users["user_id"])
    assert set(ratings["item_id"]) <= set(movies["item_id"])


def test_frames_match_movielens_layout(small: tuple[pd.DataFrame, ...]) -> None:
    ratings, movies, users = small
    assert list(ratings.columns) == ["user_id", "item_id", "rating", "timestamp"]
    assert ratings["rating"].dtype == np.float32 and ratings["timestamp"].dtype == np.int64
    assert isinstance(ratings["user_id"].iloc[0], str)
    assert ratings["rating"].between(0.5, 5.0).all()
    assert (ratings["rating"] * 2 % 1 == 0).all()  # half stars
    assert list(movies.columns) == ["item_id", "title", "year", "genres"]
    assert movies["genres"].map(lambda g: 1 <= len(g) <= 3 and set(g) <= set(GENRES)).all()
    assert movies["year"].between(1902, 2019).all()
    assert list(users.columns) == ["user_id", "age", "gender", "occupation"]
    assert set(users["gender"]) == {"F", "M"}


def test_popularity_is_skewed_and_activity_is_spread(small: tuple[pd.DataFrame, ...]) -> None:
    ratings, _, _ = small
    item_counts = ratings["item_id"].value_counts().to_numpy()
    top = item_counts[: len(item_counts) // 100].sum() / len(ratings)
    assert top > 0.1  # the top 1 % of items take far more than 1 % of interactions
    user_counts = ratings["user_id"].value_counts()
    assert user_counts.max() > 5 * user_counts.median()


def test_deterministic_for_a_seed() -> None:
    a = generate(5_000, 100, 300, seed=7).ratings
    b = generate(5_000, 100, 300, seed=7).ratings
    c = generate(5_000, 100, 300, seed=8).ratings
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(c)


def test_dense_corner_every_user_rates_every_item() -> None:
    d = generate(20 * 30, 20, 30, seed=0)
    assert d.ratings is not None
    assert d.ratings.groupby("user_id").size().eq(30).all()


def test_parquet_is_written_in_chunks_and_reads_back(tmp_path: Path) -> None:
    in_memory = generate(30_000, 400, 900, seed=1, chunk_interactions=7_000)
    seen: list[int] = []
    on_disk = generate(
        30_000, 400, 900, seed=1, out_dir=tmp_path, chunk_interactions=7_000,
        progress=lambda done, total: seen.append(done),
    )  # fmt: skip
    assert on_disk.ratings is None and on_disk.ratings_path is not None
    assert pq.ParquetFile(on_disk.ratings_path).metadata.num_row_groups >= 4
    assert seen[-1] == 30_000 and seen == sorted(seen)
    back = pd.read_parquet(on_disk.ratings_path)
    for col in ("user_id", "item_id"):
        back[col] = back[col].astype(str)
    assert in_memory.ratings is not None
    pd.testing.assert_frame_equal(back, in_memory.ratings)
    assert {p.name for p in tmp_path.iterdir()} == {
        "ratings.parquet",
        "movies.parquet",
        "users.parquet",
    }


def test_integer_chunks_cover_all_users_once() -> None:
    world, chunks = iter_chunks(10_000, 300, 500, seed=2, chunk_interactions=1_000)
    parts = list(chunks)
    assert len(parts) >= 5
    users = np.concatenate([p.user for p in parts])
    counts = np.bincount(users, minlength=300)
    np.testing.assert_array_equal(counts, world.user_counts)
    firsts = [int(p.user.min()) for p in parts]
    lasts = [int(p.user.max()) for p in parts]
    assert all(a > b for a, b in zip(firsts[1:], lasts[:-1], strict=True))


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((0, 10, 10), "n_interactions must be a positive integer"),
        ((101, 10, 10), "exceeds n_users x n_items"),
        ((50, 10, 10, 0, 6), "min_per_user=6 x n_users=10 exceeds"),
    ],
)
def test_invalid_sizes_name_the_problem(args: tuple[int, ...], match: str) -> None:
    n, u, i, *rest = args
    kwargs = {"seed": rest[0], "min_per_user": rest[1]} if rest else {}
    with pytest.raises(ConfigError, match=match):
        generate(n, u, i, **kwargs)


def test_cli_synth(tmp_path: Path) -> None:
    args = ["data", "synth", "--interactions", "2000", "--users", "50", "--items", "80"]
    result = CliRunner().invoke(app, [*args, "--seed", "1", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert len(pd.read_parquet(tmp_path / "ratings.parquet")) == 2000
    result = CliRunner().invoke(app, ["data", "synth", "--interactions", "10", "--users", "5",
                                      "--items", "1", "--out", str(tmp_path)])  # fmt: skip
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "exceeds n_users x n_items" in lines[0]
