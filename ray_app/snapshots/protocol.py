"""Snapshot layout, naming and the atomic batch commit protocol.

Layout under ``snapshot_dir``::

    events/kind=<kind>/date=<YYYY-MM-DD>/<topic>+<partition>+<first>+<last>.parquet
    dead_letter/topic=<topic>/<topic>+<partition>+<first>+<last>.parquet
    _commits/<topic>+<partition>+<first>+<last>.json

One consumed batch of a partition (offsets first..last) may span several kinds and dates, so it
becomes several Parquet files sharing one name. The batch is durable once its commit marker in
``_commits/`` exists: data files are written under temporary names, fsynced and renamed first,
the marker last. On start-up :func:`recover` deletes data files whose marker is missing (a crash
mid-batch; Kafka re-delivers those offsets because they were never committed), and
:func:`next_offsets` tells the consumer where each partition resumes. Kafka offsets are
committed only after the marker is in place, and the consumer resumes from the larger of the
committed offset and the markers, so a crash between marker and commit duplicates nothing.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ray_app.events.schema import SNAPSHOT_SCHEMA_VERSION

_NAME = re.compile(r"^(?P<topic>.+)\+(?P<partition>\d+)\+(?P<first>\d+)\+(?P<last>\d+)$")
OFFSET_WIDTH = 19  # int64 max has 19 digits: lexical order == numeric order


@dataclass(frozen=True, order=True)
class BatchId:
    """(topic, partition, first offset, last offset), inclusive."""

    topic: str
    partition: int
    first: int
    last: int

    def __post_init__(self) -> None:
        if "+" in self.topic or "/" in self.topic:
            raise ValueError(f"topic {self.topic!r} contains '+' or '/', which file names reserve")
        if self.first > self.last or self.first < 0:
            raise ValueError(f"bad offset range {self.first}..{self.last}")

    @property
    def stem(self) -> str:
        return f"{self.topic}+{self.partition}+{self.first:0{OFFSET_WIDTH}d}+{self.last:0{OFFSET_WIDTH}d}"

    @classmethod
    def parse(cls, stem: str) -> BatchId:
        """Inverse of :attr:`stem`; raises ValueError for names that are not batch files."""
        m = _NAME.match(stem)
        if not m:
            raise ValueError(f"{stem!r} is not a <topic>+<partition>+<first>+<last> name")
        return cls(m["topic"], int(m["partition"]), int(m["first"]), int(m["last"]))


def events_dir(root: Path) -> Path:
    return root / "events"


def dead_letter_dir(root: Path) -> Path:
    return root / "dead_letter"


def commits_dir(root: Path) -> Path:
    return root / "_commits"


def compactions_dir(root: Path) -> Path:
    return root / "_compactions"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_parquet_atomic(table: pa.Table, dest: Path, batch: BatchId, kind: str) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".tmp-{uuid.uuid4().hex}-{dest.name}"
    meta = {
        b"ray_app.batch": batch.stem.encode(),
        b"ray_app.first_offset": str(batch.first).encode(),
        b"ray_app.last_offset": str(batch.last).encode(),
        b"ray_app.schema_version": str(SNAPSHOT_SCHEMA_VERSION).encode(),
        b"ray_app.kind": kind.encode(),
    }
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **meta})
    with open(tmp, "wb") as fh:
        pq.write_table(table, fh, compression="zstd")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, dest)


def write_batch(root: Path, batch: BatchId, good: pa.Table, dead: pa.Table) -> list[Path]:
    """Durably write one batch (snapshot rows + dead letters) and then its commit marker.

    Returns the data files written (relative to ``root``), which the marker also lists.
    """
    written: list[Path] = []
    if good.num_rows:
        dates = pc.strftime(good["ts"], format="%Y-%m-%d")
        good = good.append_column("_date", dates)
        for kind in pc.unique(good["kind"]).to_pylist():
            of_kind = good.filter(pc.equal(good["kind"], kind))
            for date in pc.unique(of_kind["_date"]).to_pylist():
                part = of_kind.filter(pc.equal(of_kind["_date"], date)).drop_columns(["_date"])
                rel = Path("events") / f"kind={kind}" / f"date={date}" / f"{batch.stem}.parquet"
                _write_parquet_atomic(part, root / rel, batch, kind)
                written.append(rel)
    if dead.num_rows:
        rel = Path("dead_letter") / f"topic={batch.topic}" / f"{batch.stem}.parquet"
        _write_parquet_atomic(dead, root / rel, batch, "dead_letter")
        written.append(rel)
    for d in {(root / p).parent for p in written}:
        _fsync_dir(d)
    marker = commits_dir(root) / f"{batch.stem}.json"
    marker.parent.mkdir(parents=True, exist_ok=True)
    tmp = marker.parent / f".tmp-{uuid.uuid4().hex}-{batch.stem}.json"
    payload = {
        "topic": batch.topic,
        "partition": batch.partition,
        "first_offset": batch.first,
        "last_offset": batch.last,
        "records": good.num_rows + dead.num_rows,
        "snapshot_rows": good.num_rows,
        "dead_letters": dead.num_rows,
        "files": [str(p) for p in written],
        "schema_version": SNAPSHOT_SCHEMA_VERSION,
    }
    with open(tmp, "w") as fh:
        json.dump(payload, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, marker)
    _fsync_dir(marker.parent)
    return written


def committed_batches(root: Path) -> list[BatchId]:
    """Every durable batch (one whose marker exists), sorted."""
    d = commits_dir(root)
    if not d.exists():
        return []
    out = []
    for p in d.glob("*.json"):
        if p.name.startswith(".tmp-"):
            continue
        out.append(BatchId.parse(p.stem))
    return sorted(out)


def next_offsets(root: Path) -> dict[tuple[str, int], int]:
    """(topic, partition) → the next offset to consume according to the files on disk."""
    nxt: dict[tuple[str, int], int] = {}
    for b in committed_batches(root):
        key = (b.topic, b.partition)
        nxt[key] = max(nxt.get(key, 0), b.last + 1)
    return nxt


def _stem_of(path: Path) -> str:
    name = path.name
    if name.startswith(".tmp-"):
        name = name.split("-", 2)[2]  # ".tmp-<uuid>-<stem>.<ext>"
    return name.rsplit(".", 1)[0]


def recover(root: Path, partitions: set[tuple[str, int]] | None = None) -> list[Path]:
    """Delete temp files and data files of batches that never got a marker; return them.

    ``partitions`` limits recovery to the (topic, partition) pairs this consumer now owns, so
    that consumers sharing a snapshot directory never delete each other's in-flight files.
    Also finishes interrupted compactions (see :func:`compact`).
    """
    with _compaction_lock(root):
        return _recover_locked(root, partitions)


def _recover_locked(root: Path, partitions: set[tuple[str, int]] | None) -> list[Path]:
    removed: list[Path] = finish_compactions(root)
    durable = {b.stem for b in committed_batches(root)} | compacted_stems(root)
    for sub in (events_dir(root), dead_letter_dir(root), commits_dir(root)):
        if not sub.exists():
            continue
        for p in sub.rglob("*"):
            if not p.is_file():
                continue
            stem = _stem_of(p)
            try:
                b = BatchId.parse(stem)
            except ValueError:
                continue  # not ours (e.g. a compacted-file index); leave it alone
            if partitions is not None and (b.topic, b.partition) not in partitions:
                continue
            if p.name.startswith(".tmp-") or (p.suffix == ".parquet" and stem not in durable):
                p.unlink(missing_ok=True)
                removed.append(p)
    return removed


# ---- compaction ------------------------------------------------------------------------------
# Compaction merges the files of one (kind, date, topic, partition) into one file named by the
# smallest first and largest last offset it holds. Its commit point is a record in
# ``_compactions/`` listing the files it replaces: written after the merged file is renamed into
# place and before the originals are deleted. Recovery deletes merged files without a record and
# deletes originals listed in a record, so a crash at any step leaves each offset in one file.


@contextlib.contextmanager
def _compaction_lock(root: Path) -> Iterator[None]:
    """Serialise compaction and recovery on one host (flock on ``_compactions/.lock``), so a
    consumer's recovery never mistakes a merge in progress for an orphan."""
    d = compactions_dir(root)
    d.mkdir(parents=True, exist_ok=True)
    with open(d / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def compacted_stems(root: Path) -> set[str]:
    d = compactions_dir(root)
    if not d.exists():
        return set()
    return {json.loads(p.read_text())["stem"] for p in d.glob("*.json")}


def finish_compactions(root: Path) -> list[Path]:
    """Delete the originals that completed compaction records replace; return them."""
    removed: list[Path] = []
    d = compactions_dir(root)
    if not d.exists():
        return removed
    for rec in d.glob("*.json"):
        data = json.loads(rec.read_text())
        for rel in data["replaced"]:
            p = root / rel
            if p.exists():
                p.unlink()
                removed.append(p)
    return removed


@dataclass(frozen=True)
class CompactionResult:
    groups: int
    files_before: int
    files_after: int
    rows: int


def compact(root: Path, closed_before: str | None = None, min_files: int = 2) -> CompactionResult:
    """Merge small files of closed dates (``date < closed_before``, ISO; default: all but the
    newest date in the snapshots), per (kind, date, topic, partition)."""
    with _compaction_lock(root):
        return _compact_locked(root, closed_before, min_files)


def _compact_locked(root: Path, closed_before: str | None, min_files: int) -> CompactionResult:
    edir = events_dir(root)
    if not edir.exists():
        return CompactionResult(0, 0, 0, 0)
    finish_compactions(root)
    durable = {b.stem for b in committed_batches(root)} | compacted_stems(root)
    groups: dict[tuple[Path, str, int], list[Path]] = {}
    dates: set[str] = set()
    for p in edir.glob("kind=*/date=*/*.parquet"):
        if p.stem not in durable:
            continue
        b = BatchId.parse(p.stem)
        dates.add(p.parent.name.removeprefix("date="))
        groups.setdefault((p.parent, b.topic, b.partition), []).append(p)
    if closed_before is None:
        if not dates:
            return CompactionResult(0, 0, 0, 0)
        closed_before = max(dates)
    n_groups = before = after = rows = 0
    cdir = compactions_dir(root)
    cdir.mkdir(parents=True, exist_ok=True)
    for (directory, topic, partition), files in sorted(groups.items()):
        date = directory.name.removeprefix("date=")
        if date >= closed_before or len(files) < min_files:
            continue
        ids = [BatchId.parse(f.stem) for f in files]
        merged_id = BatchId(topic, partition, min(i.first for i in ids), max(i.last for i in ids))
        table = pa.concat_tables(
            [pq.read_table(f) for f in sorted(files)], promote_options="default"
        )
        table = table.sort_by("offset").replace_schema_metadata(None)
        kind = directory.parent.name.removeprefix("kind=")
        dest = directory / f"{merged_id.stem}.parquet"
        _write_parquet_atomic(table, dest, merged_id, kind)
        _fsync_dir(directory)
        record = {
            "stem": merged_id.stem,
            "file": str(dest.relative_to(root)),
            "replaced": [str(f.relative_to(root)) for f in files if f != dest],
        }
        rec_path = cdir / f"{kind}+{date}+{merged_id.stem}.json"
        tmp = cdir / f".tmp-{uuid.uuid4().hex}.json"
        tmp.write_text(json.dumps(record))
        os.replace(tmp, rec_path)
        _fsync_dir(cdir)
        for f in files:
            if f != dest:
                f.unlink()
        n_groups += 1
        before += len(files)
        after += 1
        rows += table.num_rows
    return CompactionResult(n_groups, before, after, rows)
