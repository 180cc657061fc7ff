"""Reading snapshots: the one place that lists durable files and opens them.

Ingest writes (:mod:`ray_app.snapshots.store`); training, online evaluation, experiments and
drift read through the functions here, so what counts as durable (a batch with a commit marker,
or a finished compaction) is decided once. Every function takes a snapshot location (a path or
URI, see :class:`~ray_app.snapshots.store.SnapshotStore`) or an open store.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ray_app.snapshots.protocol import BatchId
from ray_app.snapshots.store import SnapshotStore, StoredFile

if TYPE_CHECKING:
    import ray.data

SnapshotLocation = str | Path | SnapshotStore
"""A snapshot location: a path, a pyarrow filesystem URI, or an open store."""

BYTES_PER_READ_TASK = 64 * 1024 * 1024
"""Parquet bytes one Ray Data read task gets (at least): a few small files are one task."""
FILES_PER_READ_TASK = 512
"""Files one Ray Data read task gets at most, so that many small files still spread over the
cluster (fewer per task cost more in task overhead; see BENCHMARKS.md)."""


def snapshot_files(location: SnapshotLocation, kinds: Iterable[str] | None = None) -> list[str]:
    """Durable snapshot files (events only; of ``kinds``, default all), store-relative and
    sorted."""
    return [f.rel for f in SnapshotStore.at(location).durable(_kinds(kinds))]


def snapshot_provenance(location: SnapshotLocation, files: Sequence[str]) -> dict[str, Any]:
    """What a model version was trained on: the location (without credentials), its files and
    the offset ranges of every committed batch (what retraining compares to find new data)."""
    store = SnapshotStore.at(location)
    return {
        "dir": store.name,
        "files": list(files),
        "offset_ranges": [
            {"topic": b.topic, "partition": b.partition, "first": b.first, "last": b.last}
            for b in store.committed_batches()
        ],
    }


def unseen_batches(
    location: SnapshotLocation, offset_ranges: Iterable[Mapping[str, Any]]
) -> list[BatchId]:
    """Committed batches whose offset range is not among ``offset_ranges`` (the
    ``offset_ranges`` of a :func:`snapshot_provenance`): the data a model has not seen."""
    seen = {(r["topic"], r["partition"], r["first"], r["last"]) for r in offset_ranges}
    return [
        b
        for b in SnapshotStore.at(location).committed_batches()
        if (b.topic, b.partition, b.first, b.last) not in seen
    ]


def read_snapshot_dataset(
    location: SnapshotLocation, files: Sequence[StoredFile], columns: Sequence[str]
) -> ray.data.Dataset:
    """Durable files (from :meth:`SnapshotStore.durable`) as a Ray Data dataset of
    ``columns``, read through the store's filesystem (so object stores work on every node),
    with one read task per :data:`BYTES_PER_READ_TASK` of Parquet or
    :data:`FILES_PER_READ_TASK` files, whichever makes more tasks.

    Hive partition keys in the paths are not added as columns: ``kind`` is already a column of
    every file, and adding it again would clash.
    """
    import ray.data

    store = SnapshotStore.at(location)
    by_size = math.ceil(sum(f.size for f in files) / BYTES_PER_READ_TASK)
    by_count = math.ceil(len(files) / FILES_PER_READ_TASK)
    tasks = max(1, min(len(files), max(by_size, by_count)))
    # Ray 2.60's default Parquet datasource (V2) is several times slower than V1 on many small
    # files and reads each file of a task on a thread of its own (BENCHMARKS.md). Which one
    # serves a read is decided when read_parquet is called, so switch only around that call.
    process_ctx = ray.data.DataContext.get_current()
    v2, process_ctx.use_datasource_v2 = process_ctx.use_datasource_v2, False
    try:
        ds = ray.data.read_parquet(
            [store.path(f.rel) for f in files],
            filesystem=store.fs,
            partitioning=None,
            override_num_blocks=tasks,
        ).select_columns(list(columns))
    finally:
        process_ctx.use_datasource_v2 = v2
    # Callers print their own summary; Ray Data's bars and banners would interleave with it.
    ds.context.enable_progress_bars = False  # this dataset's context, not the process's
    ds.context.print_on_execution_start = False
    return ds


def load_snapshot_events(
    location: SnapshotLocation,
    kinds: Sequence[str] = ("watch", "rate", "reco"),
    columns: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Durable snapshot rows of the given kinds as one frame (empty frame if there are none)."""
    store = SnapshotStore.at(location)
    files = snapshot_files(store, kinds)
    cols = list(columns) if columns is not None else None
    if not files:
        return pd.DataFrame(columns=cols or ["kind", "user_id", "movie_id", "ts"])
    table = store.read_table(files, cols)
    if "kind" in table.column_names:
        table = table.filter(pc.is_in(table["kind"], pa.array(list(kinds))))
    return table.to_pandas()


def _kinds(kinds: Iterable[str] | None) -> set[str] | None:
    return set(kinds) if kinds is not None else None
