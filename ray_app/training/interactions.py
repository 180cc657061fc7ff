"""Snapshot events → implicit-feedback interactions, one weight per (user, movie).

The first aggregation runs as Ray Data ``map_batches`` over the snapshot dataset (map-side
combine per block with pyarrow ``group_by``); only the reduced per-(user, movie) table reaches
the driver, where a second ``group_by`` finishes the job.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field

from ray_app.errors import UserError
from ray_app.snapshots.read import read_snapshot_dataset


class FeedbackConfig(BaseModel):
    """How watch minutes and ratings become one implicit weight per (user, movie)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    binary: bool = True
    """All observed (user, movie) pairs weigh 1 (the usual top-N protocol)."""
    full_watch_minutes: int = Field(default=3, ge=1)
    """Minutes watched that count as a complete watch (weight saturates there)."""
    watch_weight: float = Field(default=1.0, ge=0)
    """Weight of a complete watch when ``binary`` is false."""
    rating_weight: float = Field(default=1.0, ge=0)
    """Weight per rating point above ``rating_center`` when ``binary`` is false."""
    rating_center: float = 0.0
    """Rating that adds no weight (only points above it count)."""
    min_rating: float | None = None
    """Keep only pairs whose rating is at least this (explicit filter; None keeps all)."""


_AGG_COLUMNS = ["user_id", "movie_id", "minutes", "rating", "last_ts"]


def _partial_aggregate(batch: pa.Table) -> pa.Table:
    batch = batch.filter(pc.is_valid(batch["movie_id"]))
    batch = batch.filter(pc.is_in(batch["kind"], pa.array(["watch", "rate"])))
    if batch.num_rows == 0:
        return pa.table(
            {
                "user_id": pa.array([], pa.string()),
                "movie_id": pa.array([], pa.string()),
                "minutes": pa.array([], pa.int64()),
                "rating": pa.array([], pa.float32()),
                "last_ts": pa.array([], pa.int64()),
            }
        )
    is_watch = pc.equal(batch["kind"], "watch")
    t = pa.table(
        {
            "user_id": batch["user_id"],
            "movie_id": batch["movie_id"],
            "watch": pc.cast(is_watch, pa.int64()),
            "rating": batch["rating"],
            "ts": pc.cast(pc.cast(batch["ts"], pa.timestamp("s", tz="UTC")), pa.int64()),
        }
    )
    g = t.group_by(["user_id", "movie_id"]).aggregate(
        [("watch", "sum"), ("rating", "max"), ("ts", "max")]
    )
    return g.rename_columns(
        {"watch_sum": "minutes", "rating_max": "rating", "ts_max": "last_ts"}
    ).select(_AGG_COLUMNS)


def read_interactions(snapshot_files: list[Path], feedback: FeedbackConfig) -> pd.DataFrame:
    """Long frame ``user_id, item_id, weight, rating, minutes, timestamp`` from snapshot files.

    Raises :class:`UserError` when there are no files or they hold no watch or rate events.
    """
    import ray

    if not snapshot_files:
        raise UserError("no snapshot files to train on: run `ray-app ingest` first")
    ds = read_snapshot_dataset(snapshot_files, ["kind", "user_id", "movie_id", "rating", "ts"])
    reduced = ds.map_batches(_partial_aggregate, batch_format="pyarrow").to_arrow_refs()
    tables = [t for t in ray.get(reduced) if t.num_rows]
    if not tables:
        raise UserError(
            "the snapshots hold no watch or rate events to train on: ingest activity first"
        )
    merged = (
        pa.concat_tables(tables)
        .group_by(["user_id", "movie_id"])
        .aggregate([("minutes", "sum"), ("rating", "max"), ("last_ts", "max")])
    )
    df = merged.to_pandas()
    df.columns = [c.replace("_sum", "").replace("_max", "") for c in df.columns]
    df = df.rename(columns={"movie_id": "item_id", "last_ts": "timestamp"})
    return apply_feedback(df, feedback)


def apply_feedback(df: pd.DataFrame, feedback: FeedbackConfig) -> pd.DataFrame:
    """Add ``weight`` and apply the optional explicit-rating filter."""
    if feedback.min_rating is not None:
        df = df[df["rating"].fillna(-np.inf) >= feedback.min_rating]
    if feedback.binary:
        weight = np.ones(len(df), dtype=np.float32)
    else:
        watch = np.minimum(df["minutes"].to_numpy(), feedback.full_watch_minutes)
        watch = feedback.watch_weight * watch / feedback.full_watch_minutes
        rated = df["rating"].fillna(feedback.rating_center).to_numpy()
        weight = watch + feedback.rating_weight * np.maximum(rated - feedback.rating_center, 0)
        weight = np.maximum(weight, 1e-3).astype(np.float32)
    out = df.assign(weight=weight)
    return out[["user_id", "item_id", "weight", "rating", "minutes", "timestamp"]].reset_index(
        drop=True
    )
