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
from ray_app.data.synth import ML25M_SIZES, generate, movielens_sizes
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
    assert top > 0.05  # the top 1 % of items take far more than 1 % of interactions
    user_counts = ratings["user_id"].value_counts()
    assert user_counts.max() > 5 * user_counts.median()


@pytest.fixture(scope="module")
def ml_shaped() -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Integer interactions at MovieLens-25M's shape, 400k of them: (users, items, ratings)."""
    n_users, n_items = movielens_sizes(400_000)
    _, chunks = iter_chunks(400_000, n_users, n_items, seed=5)
    parts = list(chunks)
    user_counts = np.bincount(np.concatenate([p.user for p in parts]), minlength=n_users)
    item_counts = np.bincount(np.concatenate([p.item for p in parts]), minlength=n_items)
    return user_counts, item_counts, np.concatenate([p.rating for p in parts]), n_users


def test_movielens_sizes_scale_from_one_parameter() -> None:
    assert movielens_sizes(ML25M_SIZES[0]) == ML25M_SIZES[1:]
    assert movielens_sizes(1_000_000) == (6_502, 11_809)  # users linear, items sqrt
    users, items = movielens_sizes(300)
    assert users * items >= 300  # a tiny size still fits its interactions


def test_top_item_is_rated_by_about_half_the_users(ml_shaped: tuple) -> None:
    _, item_counts, _, n_users = ml_shaped
    top = np.sort(item_counts)[::-1]
    # ML-25M: the most rated movie has 81,491 of 162,541 users; a plain Zipf(1) gives ~all.
    assert 0.4 < top[0] / n_users < 0.6
    assert top[9] > top[0] / 1.5  # a flat head: ML's top ten are within 1.5 x
    assert np.median(item_counts) < top[0] / 50  # and a long tail of rarely rated items


def test_user_activity_is_heavy_tailed_like_movielens(ml_shaped: tuple) -> None:
    user_counts, _, _, _ = ml_shaped
    assert user_counts.min() == 20  # MovieLens keeps users with at least 20 ratings
    assert 55 <= np.median(user_counts) <= 90  # ML-25M: median ~70, mean 154
    assert 140 <= user_counts.mean() <= 170
    assert user_counts.max() > 25 * np.median(user_counts)


def test_ratings_are_distributed_like_movielens(ml_shaped: tuple) -> None:
    _, _, ratings, _ = ml_shaped
    values, counts = np.unique(ratings, return_counts=True)
    share = dict(zip(values.tolist(), (counts / len(ratings)).tolist(), strict=True))
    assert max(share, key=share.__getitem__) in (3.0, 4.0)  # ML-25M: 4.0 26.6 %, 3.0 19.6 %
    assert 0.6 < np.mean(ratings % 1 == 0) < 0.8  # ML-25M: 70 % whole stars
    assert 3.35 < ratings.mean() < 3.7  # ML-25M: 3.53
    assert share[5.0] > share[1.0] > share[0.5]


def test_top_item_share_follows_its_parameter() -> None:
    n_users, n_items = movielens_sizes(200_000)
    for target in (0.2, 0.8):
        _, chunks = iter_chunks(200_000, n_users, n_items, seed=1, top_item_users=target)
        items = np.concatenate([c.item for c in chunks])
        assert abs(np.bincount(items).max() / n_users - target) < 0.1


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
