"""Time reading snapshots for training, in the date-partitioned layout (before issue 11) and the
kind-partitioned one, and listing + reading many small snapshot files.

    python benchmarks/snapshot_read.py demo --layout new      # the demo's snapshots, this code
    python benchmarks/snapshot_read.py demo --layout old      # the same rows, old layout
    python benchmarks/snapshot_read.py many --files 10000     # 10,000 batch files, compacted

``demo`` writes MovieLens-100K as the demo replays it (400,000 line-dialect events: three watch
minutes and a rating per rating, time-ordered, two partitions keyed by user) in batches of
``--batch-records`` per partition, as the consumer would cut them, then times
:func:`ray_app.training.data.load_training_data` (what ``ray-app train`` and the retraining cycle
call) on a running local Ray. ``many`` also times listing the files and reading their events,
then compacts them and times the training read again.

``--layout old`` writes ``events/kind=<kind>/date=<day>/`` files as the code before issue 11
did, using only ``BatchId`` and the training loader from this package, so the script also runs
with an earlier checkout's package imported instead (its own virtualenv) to time the old reader.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq


def _ray_workers() -> int:
    """Ray worker processes this driver's local Ray started (descendants of this process;
    a worker renames itself ``ray::<task>``)."""
    import psutil

    count = 0
    for p in psutil.Process().children(recursive=True):
        try:
            cmd = p.cmdline()
        except psutil.Error:
            continue
        count += bool(cmd) and (cmd[0].startswith("ray::") or "default_worker" in " ".join(cmd))
    return count


def _write_old_layout(root: Path, batch: Any, good: pa.Table) -> None:
    """One batch as the pre-issue-11 code wrote it: a file per (kind, event date), then a marker."""
    dates = pc.strftime(good["ts"], format="%Y-%m-%d")
    files = []
    for kind in pc.unique(good["kind"]).to_pylist():
        for date in pc.unique(dates).to_pylist():
            mask = pc.and_(pc.equal(good["kind"], kind), pc.equal(dates, date))
            part = good.filter(mask)
            if not part.num_rows:
                continue
            rel = f"events/kind={kind}/date={date}/{batch.stem}.parquet"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(part, root / rel, compression="zstd")
            files.append(rel)
    (root / "_commits").mkdir(parents=True, exist_ok=True)
    (root / "_commits" / f"{batch.stem}.json").write_text(json.dumps({"files": files}))


def _write(root: Path, layout: str, batch: Any, good: pa.Table, dead: pa.Table) -> None:
    if layout == "old":
        _write_old_layout(root, batch, good)
    else:
        from ray_app.snapshots.store import write_batch

        write_batch(root, batch, good, dead)


def write_demo_snapshots(root: Path, layout: str, batch_records: int) -> int:
    """The demo's replay of ML-100K as committed batches; returns the events written."""
    from ray_app.data.movielens import load
    from ray_app.events.line_dialect import parse_line_batch
    from ray_app.replay.events import ReplayConfig, build_lines
    from ray_app.snapshots.protocol import BatchId

    lines = build_lines(load("ml-100k").ratings, ReplayConfig())
    partition = lines["user_id"].astype(int).to_numpy() % 2
    for p in (0, 1):
        values = [v.encode() for v in lines["line"].to_numpy()[partition == p]]
        for first in range(0, len(values), batch_records):
            chunk = values[first : first + batch_records]
            offsets = list(range(first, first + len(chunk)))
            parsed = parse_line_batch(chunk, topic="movielog", partitions=p, offsets=offsets)
            batch = BatchId("movielog", p, first, first + len(chunk) - 1)
            _write(root, layout, batch, parsed.good, parsed.dead)
    return len(lines)


def write_many_files(root: Path, files: int, rows: int) -> None:
    """``files`` committed batches of ``rows`` watch events each (one Parquet file per batch)."""
    from ray_app.events.schema import DEAD_LETTER_SCHEMA, SNAPSHOT_SCHEMA
    from ray_app.snapshots.protocol import BatchId
    from ray_app.snapshots.store import SnapshotStore

    store = SnapshotStore.at(root)
    rng = np.random.default_rng(0)
    for i in range(files):
        offsets = np.arange(i * rows, (i + 1) * rows)
        cols: dict[str, Any] = {
            "kind": pa.array(["watch"] * rows),
            "user_id": pa.array(rng.integers(1, 944, rows).astype(str)),
            "movie_id": pa.array(rng.integers(1, 1683, rows).astype(str)),
            "ts": pa.array(
                (1_700_000_000 + offsets).astype("datetime64[s]"), pa.timestamp("us", tz="UTC")
            ),
            "minute": pa.array(np.zeros(rows, dtype=np.int32)),
            "topic": pa.array(["movielog"] * rows),
            "partition": pa.array(np.zeros(rows, dtype=np.int32)),
            "offset": pa.array(offsets),
        }
        table = pa.table(
            [
                cols[f.name].cast(f.type) if f.name in cols else pa.nulls(rows, f.type)
                for f in SNAPSHOT_SCHEMA
            ],
            schema=SNAPSHOT_SCHEMA,
        )
        store.write_batch(
            BatchId("movielog", 0, int(offsets[0]), int(offsets[-1])),
            table,
            DEAD_LETTER_SCHEMA.empty_table(),
        )


def time_training_read(root: Path, repeats: int) -> dict[str, Any]:
    """Seconds per :func:`load_training_data` call (the first is cold), files and workers."""
    from ray_app.training.data import load_training_data
    from ray_app.training.interactions import FeedbackConfig

    times = []
    data = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        data = load_training_data(root, FeedbackConfig(), None)
        times.append(time.perf_counter() - t0)
    assert data is not None
    return {
        "seconds": [round(t, 3) for t in times],
        "files": data.files,
        "interactions": len(data.frame),
        "ray_workers": _ray_workers(),
    }


def main() -> None:
    """Parse arguments, write the snapshots, time the reads, print one JSON line."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=["demo", "many"])
    ap.add_argument("--layout", choices=["old", "new"], default="new")
    ap.add_argument("--batch-records", type=int, default=25_000)
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--rows", type=int, default=10, help="rows per file (many)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--read",
        choices=["auto", "ray"],
        default="auto",
        help="ray: always read with Ray Data (this code only; auto reads small data in-process)",
    )
    args = ap.parse_args()

    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    if args.read == "ray":
        from ray_app.training import interactions

        interactions.LOCAL_READ_MAX_BYTES = 0  # type: ignore[misc]
    out: dict[str, Any] = {"what": args.what, "layout": args.layout, "read": args.read}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "snapshots"
        t0 = time.perf_counter()
        if args.what == "demo":
            out["events"] = write_demo_snapshots(root, args.layout, args.batch_records)
            out["batch_records"] = args.batch_records
        else:
            write_many_files(root, args.files, args.rows)
        out["write_s"] = round(time.perf_counter() - t0, 1)
        event_files = list((root / "events").rglob("*.parquet"))
        out["event_files"] = len(event_files)
        out["event_mb"] = round(sum(f.stat().st_size for f in event_files) / 1e6, 1)
        if args.what == "many":
            from ray_app.snapshots.read import load_snapshot_events, snapshot_files

            t0 = time.perf_counter()
            listed = snapshot_files(root)
            out["list_s"] = round(time.perf_counter() - t0, 3)
            t0 = time.perf_counter()
            rows = len(load_snapshot_events(root, ("watch",), ["user_id", "movie_id", "ts"]))
            out["list_and_read_events_s"] = round(time.perf_counter() - t0, 3)
            out["listed"], out["rows"] = len(listed), rows
        out["training_read"] = time_training_read(root, args.repeats)
        if args.what == "many":
            from ray_app.snapshots.compaction import compact

            t0 = time.perf_counter()
            result = compact(root)
            out["compact_s"] = round(time.perf_counter() - t0, 1)
            out["files_after_compaction"] = result.files_after
            out["training_read_after_compaction"] = time_training_read(root, args.repeats)
    out["machine"] = f"{platform.machine()}, {len(os.sched_getaffinity(0))} CPUs"
    out["load_average"] = [round(x, 1) for x in os.getloadavg()]
    print(json.dumps(out))
    ray.shutdown()


if __name__ == "__main__":
    main()
