"""Compaction: merge small snapshot files per (kind, topic, partition), exactly once.

A merged file is named by the smallest first and largest last offset it holds, with the
``.compacted.parquet`` suffix. Its commit point is a record in ``_compactions/`` listing the
files it replaces, written after the merged file and before the originals are deleted. Readers
take the merged file only once its record exists, and skip every file a record replaces, so at
each step of a compaction, and after a crash at any of them, each offset is read once:

- crash before the record: the merged file is an orphan that readers ignore; the next
  compaction deletes it and merges again;
- crash after the record: the originals are skipped by readers and deleted by the next
  compaction (or a consumer's recovery of their partition).

Consumers never touch compaction output, and compaction reads only committed batches, so
ingest may run during a compaction. Two compactions must not run at once on one location: on a
local filesystem a file lock (``_compactions/.lock``) serialises them; object stores have no
locks, so run compaction from one process (e.g. one scheduled job), never from every consumer.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ray_app.snapshots.protocol import (
    COMPACTIONS,
    EVENTS,
    BatchId,
    compacted_file,
    compaction_record,
    kind_of,
    parse_data_file,
)
from ray_app.snapshots.store import SnapshotStore, StoredFile

DEFAULT_TARGET_BYTES = 128 * 1024 * 1024
"""Files at least this large are left alone; smaller ones are merged into files about this big."""


@dataclass(frozen=True)
class CompactionResult:
    """What one compaction did."""

    merged_files: int
    """Merged files written."""
    files_before: int
    """Durable event files before."""
    files_after: int
    """Durable event files after."""
    rows: int
    """Rows rewritten."""
    cleaned: int
    """Leftovers of earlier compactions deleted (replaced originals, orphan merged files)."""


@contextlib.contextmanager
def _lock(store: SnapshotStore) -> Iterator[None]:
    """One compaction at a time per location: a flock locally, nothing on object stores."""
    if not store.is_local:
        yield
        return
    directory = store.path(COMPACTIONS)
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, ".lock"), "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def compact(
    location: str | Path | SnapshotStore,
    min_files: int = 2,
    target_bytes: int = DEFAULT_TARGET_BYTES,
) -> CompactionResult:
    """Merge the small durable files of each (kind, topic, partition) into files of about
    ``target_bytes`` (only groups of at least ``min_files`` files). Files of the older
    ``kind=/date=`` layout are merged into the current layout."""
    store = SnapshotStore.at(location)
    with _lock(store):
        cleaned = _clean_leftovers(store)
        before = store.durable()
        merged = rows = 0
        for kind, chunk in _chunks(before, min_files, target_bytes):
            rows += _merge(store, kind, chunk)
            merged += 1
        after = len(store.durable())
    return CompactionResult(merged, len(before), after, rows, cleaned)


def _clean_leftovers(store: SnapshotStore) -> int:
    """Delete originals that finished compactions replaced, and merged files whose
    compaction crashed before its record (safe: only one compaction runs at a time)."""
    records = store.compaction_records()
    merged = {r.file for r in records}
    n = sum(store.delete(f) for r in records for f in r.replaced)
    for info in store.list_files(EVENTS):
        f = parse_data_file(info.rel)
        if f is not None and f.compacted and info.rel not in merged and store.delete(info.rel):
            n += 1
    return n


def _chunks(
    files: list[StoredFile], min_files: int, target_bytes: int
) -> Iterator[tuple[str, list[StoredFile]]]:
    """Runs of small files of one (kind, topic, partition), in offset order, of about
    ``target_bytes``. Files of one batch (the old layout split batches by date) stay in one
    run, so merged ranges never overlap and never share a name."""
    groups: dict[tuple[str, str, int], list[tuple[BatchId, StoredFile]]] = {}
    for s in files:
        f, kind = parse_data_file(s.rel), kind_of(s.rel)
        if f is None or kind is None or s.size >= target_bytes:
            continue
        groups.setdefault((kind, f.batch.topic, f.batch.partition), []).append((f.batch, s))
    for (kind, _, _), members in sorted(groups.items()):
        members.sort(key=lambda m: (m[0].first, m[0].last, m[1].rel))
        run: list[StoredFile] = []
        size = 0
        for i, (batch, s) in enumerate(members):
            run.append(s)
            size += s.size
            nxt = members[i + 1][0] if i + 1 < len(members) else None
            if nxt is None or (size >= target_bytes and nxt != batch):
                if len(run) >= min_files:
                    yield kind, run
                run, size = [], 0


def _merge(store: SnapshotStore, kind: str, files: list[StoredFile]) -> int:
    """Write one merged file and its record, then delete the originals; returns its rows."""
    ids = [f.batch for s in files if (f := parse_data_file(s.rel)) is not None]
    merged = BatchId(
        ids[0].topic, ids[0].partition, min(i.first for i in ids), max(i.last for i in ids)
    )
    tables = [pq.read_table(store.path(s.rel), filesystem=store.fs) for s in files]
    table = pa.concat_tables(tables, promote_options="default").sort_by("offset")
    table = table.replace_schema_metadata(None)
    rel = compacted_file(kind, merged)
    store.put_parquet(rel, table, merged, kind)
    store.put_json(
        compaction_record(kind, merged),
        {"stem": merged.stem, "file": rel, "replaced": [s.rel for s in files]},
    )
    for s in files:
        store.delete(s.rel)
    return int(table.num_rows)
