"""Snapshot events → implicit-feedback interactions, one weight per (user, movie).

The first aggregation runs as Ray Data ``map_batches`` over the snapshot dataset (map-side
combine per block with pyarrow ``group_by``); only the reduced per-(user, movie) table reaches
the driver, where a second ``group_by`` finishes the job. Snapshots smaller than
:data:`LOCAL_READ_MAX_BYTES` skip Ray Data: the same aggregation runs here, because starting
Ray Data's read and map tasks costs more than reading a few files.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field

from ray_app.errors import UserError
from ray_app.snapshots.read import SnapshotLocation, read_snapshot_dataset
from ray_app.snapshots.store import SnapshotStore, StoredFile

LOCAL_READ_MAX_BYTES = 64 * 1024 * 1024
"""Snapshots up to this many Parquet bytes (a few million events) are aggregated in this
process, larger ones with Ray Data across the cluster (see BENCHMARKS.md)."""


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
_READ_COLUMNS = ["kind", "user_id", "movie_id", "rating", "ts"]
TRAINING_KINDS = ("watch", "rate")
"""Event kinds interactions are built from."""


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
            # Whole seconds, truncated: live events carry microseconds, which a safe cast refuses.
            "ts": pc.cast(
                pc.cast(batch["ts"], pa.timestamp("s", tz="UTC"), safe=False), pa.int64()
            ),
        }
    )
    g = t.group_by(["user_id", "movie_id"]).aggregate(
        [("watch", "sum"), ("rating", "max"), ("ts", "max")]
    )
    return g.rename_columns(
        {"watch_sum": "minutes", "rating_max": "rating", "ts_max": "last_ts"}
    ).select(_AGG_COLUMNS)


def read_interactions(
    location: SnapshotLocation, files: Sequence[StoredFile], feedback: FeedbackConfig
) -> pd.DataFrame:
    """Long frame ``user_id, item_id, weight, rating, minutes, timestamp`` from durable
    snapshot ``files`` (from :meth:`SnapshotStore.durable`) at ``location``.

    Raises :class:`UserError` when there are no files or they hold no watch or rate events.
    """
    store = SnapshotStore.at(location)
    if not files:
        raise UserError(
            f"no snapshot files to train on under {store.name}: run `ray-app ingest` first"
        )
    if sum(f.size for f in files) <= LOCAL_READ_MAX_BYTES:
        tables = [_partial_aggregate(store.read_table([f.rel for f in files], _READ_COLUMNS))]
    else:
        import ray

        ds = read_snapshot_dataset(store, files, _READ_COLUMNS)
        reduced = ds.map_batches(_partial_aggregate, batch_format="pyarrow").to_arrow_refs()
        tables = ray.get(reduced)
    tables = [t for t in tables if t.num_rows]
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
