"""Reading snapshots: the one place that lists durable files and opens them.

Ingest writes (:mod:`ray_app.snapshots.protocol`); training, online evaluation, experiments
and drift read through the functions here, so what counts as durable (a batch with a commit
marker, or a finished compaction) is decided once.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ray_app.snapshots.protocol import committed_batches, compacted_stems, events_dir


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
    tables = [pq.read_table(p, columns=cols) for p in files]
    table = pa.concat_tables(tables, promote_options="default")
    if "kind" in table.column_names:
        table = table.filter(pc.is_in(table["kind"], pa.array(list(kinds))))
    return table.to_pandas()
