"""Synthetic MovieLens-shaped data at any size up to MovieLens-25M scale, for scale tests.

:mod:`ray_app.data.synth_sampler` holds the generative model (item popularity and user activity
calibrated to MovieLens-25M, demographics that predict taste); this module turns it into frames
and files. :func:`movielens_sizes` scales users and items from one parameter, the number of
interactions.
Frames match :mod:`ray_app.data.movielens`: ratings ``user_id``, ``item_id`` (str), ``rating``
(float32), ``timestamp`` (int64 s); movies ``item_id``, ``title``, ``year``, ``genres`` (list);
users ``user_id``, ``age``, ``gender``, ``occupation``.

Memory stays bounded by ``chunk_interactions`` rows at a time: with ``out_dir`` each chunk is
appended to ``ratings.parquet`` as its own row group (ids dictionary-encoded, so 25M rows of
string ids cost little) instead of being kept.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ray_app.data.synth_sampler import (
    AGES,
    GENRES,
    OCCUPATIONS,
    InteractionChunk,
    World,
    iter_chunks,
)

ML25M_SIZES = (25_000_095, 162_541, 59_047)
"""MovieLens-25M's ratings, users and rated movies."""


def movielens_sizes(n_interactions: int) -> tuple[int, int]:
    """``(n_users, n_items)`` for MovieLens-25M's shape at ``n_interactions`` ratings: users grow
    linearly (the mean history stays ~154 ratings), items with the square root (catalogues grow
    slower than audiences; the convention of ``benchmarks/knn_scale.py``)."""
    frac = n_interactions / ML25M_SIZES[0]
    n_users = max(1, round(ML25M_SIZES[1] * frac))
    n_items = max(1, round(ML25M_SIZES[2] * np.sqrt(frac)))
    # Tiny sizes: keep the matrix able to hold every interaction.
    return n_users, max(n_items, -(-n_interactions // n_users))


@dataclass(frozen=True)
class SyntheticData:
    """Generated frames. ``ratings`` is ``None`` when written to ``out_dir`` (memory-bounded);
    read ``ratings_path`` then, e.g. with ``pd.read_parquet`` or ``ray.data.read_parquet``."""

    ratings: pd.DataFrame | None
    movies: pd.DataFrame
    users: pd.DataFrame
    n_interactions: int
    seed: int
    ratings_path: Path | None = None
    movies_path: Path | None = None
    users_path: Path | None = None


def _movies(world: World) -> pd.DataFrame:
    n = len(world.item_pop)
    ids = np.arange(1, n + 1).astype(str)
    return pd.DataFrame(
        {
            "item_id": ids,
            "title": [f"Synthetic movie {i}" for i in range(1, n + 1)],
            "year": pd.array(world.item_year, dtype="Int64"),
            "genres": [[GENRES[g] for g in gs] for gs in world.item_genres],
        }
    )


def _users(world: World) -> pd.DataFrame:
    n = len(world.user_counts)
    return pd.DataFrame(
        {
            "user_id": np.arange(1, n + 1).astype(str),
            "age": pd.array(AGES[world.user_age], dtype="Int64"),
            "gender": np.where(world.user_gender == 1, "F", "M"),
            "occupation": np.asarray(OCCUPATIONS, dtype=object)[world.user_occupation],
        }
    )


def _arrow_chunk(chunk: InteractionChunk, user_dict: pa.Array, item_dict: pa.Array) -> pa.Table:
    """Ids as dictionary-encoded strings: cheap to build from codes, and read back as str."""
    return pa.table(
        {
            "user_id": pa.DictionaryArray.from_arrays(pa.array(chunk.user), user_dict),
            "item_id": pa.DictionaryArray.from_arrays(pa.array(chunk.item), item_dict),
            "rating": pa.array(chunk.rating),
            "timestamp": pa.array(chunk.timestamp),
        }
    )


def generate(
    n_interactions: int,
    n_users: int,
    n_items: int,
    seed: int = 0,
    out_dir: str | Path | None = None,
    *,
    chunk_interactions: int = 2_000_000,
    top_item_users: float = 0.5,
    popularity_tail: float = 1.7,
    activity_sigma: float = 1.4,
    genre_affinity: float = 0.5,
    min_per_user: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> SyntheticData:
    """Generate a MovieLens-shaped dataset; deterministic for a seed.

    ``top_item_users`` is the share of users expected to rate the most popular item (about
    half in MovieLens-25M), ``popularity_tail`` the power-law exponent of item popularity
    beyond its flat head, ``activity_sigma`` the log-normal spread of user activity,
    ``genre_affinity`` the share of interactions drawn from the user's favourite genre,
    ``min_per_user`` the least activity (default ``min(20, n_interactions / (4 n_users))``, at
    least 1). :func:`movielens_sizes` gives ``n_users`` and ``n_items`` for a MovieLens-25M
    shape at ``n_interactions``.

    Without ``out_dir`` the ratings frame is returned in memory. With ``out_dir`` it writes
    ``ratings.parquet`` (one row group per chunk of about ``chunk_interactions`` rows, so
    peak memory is bounded by the chunk, not the dataset), ``movies.parquet`` and
    ``users.parquet``, and returns ``ratings=None`` with the paths. ``progress(done, total)``
    is called after each chunk.
    """
    world, chunks = iter_chunks(
        n_interactions,
        n_users,
        n_items,
        seed,
        chunk_interactions=chunk_interactions,
        top_item_users=top_item_users,
        popularity_tail=popularity_tail,
        activity_sigma=activity_sigma,
        genre_affinity=genre_affinity,
        min_per_user=min_per_user,
    )
    movies, users = _movies(world), _users(world)
    user_dict = pa.array(users["user_id"].to_numpy(dtype=str))
    item_dict = pa.array(movies["item_id"].to_numpy(dtype=str))
    done = 0
    if out_dir is None:
        parts: list[InteractionChunk] = []
        for chunk in chunks:
            parts.append(chunk)
            done += len(chunk.user)
            if progress is not None:
                progress(done, n_interactions)
        user = np.concatenate([c.user for c in parts]) if parts else np.empty(0, np.int32)
        item = np.concatenate([c.item for c in parts]) if parts else np.empty(0, np.int32)
        ratings = pd.DataFrame(
            {
                "user_id": users["user_id"].to_numpy()[user],
                "item_id": movies["item_id"].to_numpy()[item],
                "rating": np.concatenate([c.rating for c in parts]),
                "timestamp": np.concatenate([c.timestamp for c in parts]),
            }
        )
        return SyntheticData(ratings, movies, users, len(ratings), seed)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ratings_path, movies_path, users_path = (
        out / "ratings.parquet",
        out / "movies.parquet",
        out / "users.parquet",
    )
    tmp = ratings_path.with_suffix(".parquet.tmp")
    writer: pq.ParquetWriter | None = None
    try:
        for chunk in chunks:
            table = _arrow_chunk(chunk, user_dict, item_dict)
            if writer is None:
                writer = pq.ParquetWriter(tmp, table.schema, compression="zstd")
            writer.write_table(table)
            done += len(chunk.user)
            if progress is not None:
                progress(done, n_interactions)
    finally:
        if writer is not None:
            writer.close()
    # Renamed only when complete, so a half-written file is never mistaken for a dataset.
    tmp.replace(ratings_path)
    movies.to_parquet(movies_path, index=False)
    users.to_parquet(users_path, index=False)
    return SyntheticData(None, movies, users, done, seed, ratings_path, movies_path, users_path)
