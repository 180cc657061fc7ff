"""Reading snapshots: the one place that lists durable files and opens them.

Ingest writes (:mod:`ray_app.snapshots.protocol`); training, online evaluation, experiments
and drift read through the functions here, so what counts as durable (a batch with a commit
marker, or a finished compaction) is decided once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ray_app.events.schema import SNAPSHOT_SCHEMA
from ray_app.snapshots.protocol import BatchId, committed_batches, compacted_stems, events_dir

if TYPE_CHECKING:
    import ray.data


def snapshot_files(root: Path) -> list[Path]:
    """Durable snapshot Parquet files (events only), sorted by name."""
    durable = {b.stem for b in committed_batches(root)} | compacted_stems(root)
    d = events_dir(root)
    if not d.exists():
        return []
    return sorted(p for p in d.rglob("*.parquet") if p.stem in durable)


def snapshot_provenance(root: Path, files: Sequence[Path]) -> dict[str, Any]:
    """What a model version was trained on: the directory, its files and the offset ranges of
    every committed batch (what retraining compares to find new data)."""
    return {
        "dir": str(Path(root).resolve()),
        "files": [str(Path(p).relative_to(root)) for p in files],
        "offset_ranges": [
            {"topic": b.topic, "partition": b.partition, "first": b.first, "last": b.last}
            for b in committed_batches(root)
        ],
    }


def unseen_batches(root: Path, offset_ranges: Iterable[Mapping[str, Any]]) -> list[BatchId]:
    """Committed batches whose offset range is not among ``offset_ranges`` (the
    ``offset_ranges`` of a :func:`snapshot_provenance`): the data a model has not seen."""
    seen = {(r["topic"], r["partition"], r["first"], r["last"]) for r in offset_ranges}
    return [
        b for b in committed_batches(root) if (b.topic, b.partition, b.first, b.last) not in seen
    ]


def read_snapshot_dataset(files: Sequence[Path], columns: Sequence[str]) -> ray.data.Dataset:
    """Snapshot files (from :func:`snapshot_files`) as a Ray Data dataset of ``columns``.

    Hive partition keys in the paths are not added as columns: ``kind`` is already a column of
    every file, and adding it again would clash.
    """
    import ray.data

    ctx = ray.data.DataContext.get_current()
    # Callers print their own summary; Ray Data's bars and banners would interleave with it.
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    return ray.data.read_parquet([str(p) for p in files], columns=list(columns), partitioning=None)


def load_snapshot_events(
    snapshot_dir: Path | str,
    kinds: Sequence[str] = ("watch", "rate", "reco"),
    columns: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Durable snapshot rows of the given kinds as one frame (empty frame if there are none)."""
    root = Path(snapshot_dir)
    files = [p for p in snapshot_files(root) if any(f"kind={k}" in p.parts for k in kinds)]
    cols = list(columns) if columns is not None else None
    if not files:
        return pd.DataFrame(columns=cols or ["kind", "user_id", "movie_id", "ts"])
    # The current schema fills columns that older files (an earlier schema version) lack.
    tables = [pq.read_table(p, columns=cols, schema=SNAPSHOT_SCHEMA) for p in files]
    table = pa.concat_tables(tables)
    if "kind" in table.column_names:
        table = table.filter(pc.is_in(table["kind"], pa.array(list(kinds))))
    return table.to_pandas()
