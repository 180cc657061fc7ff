"""``ray-app snapshots``: inspect and maintain the Parquet snapshots ingest writes."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from ray_app.commands.common import (
    DEFAULT_SNAPSHOT_DIR,
    SnapshotDirOpt,
    console,
    require_snapshot_dir,
)


def compact_cmd(
    snapshot_dir: SnapshotDirOpt = DEFAULT_SNAPSHOT_DIR,
    target_mb: Annotated[
        int, typer.Option(min=1, help="Merge small files into files of about this many MiB.")
    ] = 128,
) -> None:
    """Merge small files per (kind, topic, partition), keeping the exactly-once naming.

    Run it from one process at a time (on object stores nothing else enforces that); ingest
    may keep running.
    """
    from ray_app.snapshots.compaction import compact

    r = compact(require_snapshot_dir(snapshot_dir), target_bytes=target_mb * 1024 * 1024)
    console.print(
        f"compacted into {r.merged_files} files: {r.files_before} files → {r.files_after} "
        f"({r.rows:,} rows rewritten, {r.cleaned} leftovers of earlier runs removed)"
    )


def stats_cmd(snapshot_dir: SnapshotDirOpt = DEFAULT_SNAPSHOT_DIR) -> None:
    """Committed batches, files, rows and dead letters per topic-partition."""
    from ray_app.snapshots.store import SnapshotStore

    store = SnapshotStore.at(require_snapshot_dir(snapshot_dir))
    table = Table("topic", "partition", "batches", "first offset", "last offset")
    per: dict[tuple[str, int], list[Any]] = {}
    for b in store.committed_batches():
        per.setdefault((b.topic, b.partition), []).append(b)
    for (t, p), bs in sorted(per.items()):
        table.add_row(t, str(p), str(len(bs)), str(bs[0].first), str(bs[-1].last))
    console.print(table)
    files = store.durable()
    size = sum(f.size for f in files)
    console.print(f"{len(files)} snapshot files, {size / 1e6:,.1f} MB under {store.name}")


def register(app: typer.Typer) -> None:
    """Add the ``snapshots`` group (``stats``, ``compact``) to ``app``."""
    snapshots = typer.Typer(help="Inspect and maintain Parquet snapshots.", no_args_is_help=True)
    snapshots.command("stats")(stats_cmd)
    snapshots.command("compact")(compact_cmd)
    app.add_typer(snapshots, name="snapshots")
