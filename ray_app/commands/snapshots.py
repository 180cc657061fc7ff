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
    closed_before: Annotated[
        str | None,
        typer.Option(help="Compact dates before this (YYYY-MM-DD); default: all but the newest."),
    ] = None,
) -> None:
    """Merge small files of closed dates, keeping the exactly-once naming."""
    from ray_app.snapshots.protocol import compact

    r = compact(require_snapshot_dir(snapshot_dir), closed_before)
    console.print(
        f"compacted {r.groups} partition-dates: {r.files_before} files → {r.files_after} "
        f"({r.rows:,} rows)"
    )


def stats_cmd(snapshot_dir: SnapshotDirOpt = DEFAULT_SNAPSHOT_DIR) -> None:
    """Committed batches, files, rows and dead letters per topic-partition."""
    from ray_app.snapshots.protocol import committed_batches
    from ray_app.snapshots.read import snapshot_files

    require_snapshot_dir(snapshot_dir)
    table = Table("topic", "partition", "batches", "first offset", "last offset")
    per: dict[tuple[str, int], list[Any]] = {}
    for b in committed_batches(snapshot_dir):
        per.setdefault((b.topic, b.partition), []).append(b)
    for (t, p), bs in sorted(per.items()):
        table.add_row(t, str(p), str(len(bs)), str(bs[0].first), str(bs[-1].last))
    console.print(table)
    console.print(f"{len(snapshot_files(snapshot_dir))} snapshot files")


def register(app: typer.Typer) -> None:
    """Add the ``snapshots`` group (``stats``, ``compact``) to ``app``."""
    snapshots = typer.Typer(help="Inspect and maintain Parquet snapshots.", no_args_is_help=True)
    snapshots.command("stats")(stats_cmd)
    snapshots.command("compact")(compact_cmd)
    app.add_typer(snapshots, name="snapshots")
