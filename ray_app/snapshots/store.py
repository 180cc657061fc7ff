"""The snapshot store: the exactly-once batch protocol over any pyarrow filesystem.

A :class:`SnapshotStore` is a (pyarrow filesystem, base path) pair for one snapshot location:
a local path, ``file://…``, or an object store URI such as ``s3://bucket/prefix`` (endpoint
and credentials may ride in the URI: ``s3://KEY:SECRET@bucket/prefix?endpoint_override=
host:9000&scheme=http``; pyarrow also honours ``AWS_ENDPOINT_URL`` and the usual AWS variables).
It lists, writes, commits, recovers and reads; :mod:`ray_app.snapshots.compaction` merges.

One consumed batch of a partition (offsets first..last) becomes one data file per kind, named
by the offset range (see :mod:`ray_app.snapshots.protocol`). The batch is durable once its
commit marker in ``_commits/`` exists, and the marker is written last:

- on a local filesystem every file goes to a temporary name, is fsynced and renamed;
- on an object store, where there is no rename, each object is written whole (a PUT, or a
  multipart upload, is visible only once complete) and the marker is the last object written.

On assignment a consumer calls :meth:`SnapshotStore.recover` for the partitions it now owns,
which deletes their data objects without a marker (a crash mid-batch; Kafka re-delivers those
offsets, since they were never committed), and resumes from :meth:`SnapshotStore.next_offsets`.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from ray_app.errors import UserError
from ray_app.events.schema import SNAPSHOT_SCHEMA, SNAPSHOT_SCHEMA_VERSION
from ray_app.paths import resolve_location
from ray_app.snapshots.protocol import (
    COMMITS,
    COMPACTIONS,
    DEAD_LETTER,
    EVENTS,
    TEMP_PREFIX,
    BatchId,
    batch_file,
    commit_marker,
    dead_letter_file,
    kind_of,
    parse_data_file,
)

# "s3:/bucket/x": what Path("s3://bucket/x") makes of a URI; written to, it is a local "s3:" dir.
_MANGLED_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:/[^/]")
_CREDENTIALS = re.compile(r"(:/+)[^/@]*@")  # "s3://KEY:SECRET@bucket" (or "s3:/…" as above)


@dataclass(frozen=True)
class CompactionRecord:
    """A finished compaction: ``file`` (store-relative) holds the rows of ``replaced``."""

    stem: str
    file: str
    replaced: tuple[str, ...]


@dataclass(frozen=True)
class StoredFile:
    """A file of the store: store-relative path and size in bytes."""

    rel: str
    size: int


class SnapshotStore:
    """Listing, writing, committing, recovery and reading for one snapshot location."""

    def __init__(self, fs: pafs.FileSystem, base: str, location: str) -> None:
        self.fs = fs
        self.base = base.rstrip("/") or "/"
        self.location = location
        """The resolved location (may carry credentials: never print it, print :attr:`name`)."""
        self.name = _redact(location)
        """The location without credentials, for messages and manifests."""

    @classmethod
    def at(cls, location: str | Path | SnapshotStore) -> SnapshotStore:
        """The store at ``location`` (a path or URI; relative paths resolve against
        ``RAY_APP_HOME``, see :func:`ray_app.paths.resolve_location`)."""
        if isinstance(location, SnapshotStore):
            return location
        text = str(location)
        if _MANGLED_URI.match(text):
            raise UserError(
                f"snapshot location {_redact(text)!r} looks like a URI that lost a slash "
                "(e.g. s3://…): pass URIs as text, not as a filesystem path"
            )
        resolved = resolve_location(text)
        try:
            fs, base = pafs.FileSystem.from_uri(resolved)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as exc:
            raise UserError(
                f"snapshot location {_redact(resolved)} is not a path or a filesystem URI "
                f"pyarrow can open ({exc}); use a path, file://…, s3://bucket/prefix or "
                "gs://bucket/prefix"
            ) from exc
        return cls(fs, base, resolved)

    @property
    def is_local(self) -> bool:
        """True on a local filesystem (rename and fsync exist, and so do file locks)."""
        return isinstance(self.fs, pafs.LocalFileSystem)

    def path(self, rel: str) -> str:
        """The filesystem path (for :attr:`fs`) of a store-relative path."""
        return f"{self.base.rstrip('/')}/{rel}"

    def exists(self) -> bool:
        """True when the location exists (on an object store: holds any object)."""
        try:
            return bool(self.fs.get_file_info(self.base).type != pafs.FileType.NotFound)
        except OSError as exc:
            raise UserError(
                f"cannot reach snapshot location {self.name}: {_first_line(exc)}"
            ) from exc

    # ---- primitives -------------------------------------------------------------------------
    def list_files(self, sub: str) -> list[StoredFile]:
        """Every file under ``sub`` (recursively, temp names included); none if it is absent."""
        selector = pafs.FileSelector(self.path(sub), recursive=True, allow_not_found=True)
        prefix = len(self.base.rstrip("/")) + 1
        return [
            StoredFile(str(i.path)[prefix:], int(i.size or 0))
            for i in self.fs.get_file_info(selector)
            if i.type == pafs.FileType.File
        ]

    def _put(self, rel: str, write: Callable[[IO[bytes]], object]) -> None:
        """Write one file whole: locally under a temp name, fsynced, then renamed; on an
        object store as one object, which appears only when complete."""
        dest = self.path(rel)
        if not self.is_local:
            with self.fs.open_output_stream(dest) as out:
                write(out)
            return
        directory, name = os.path.split(dest)
        os.makedirs(directory, exist_ok=True)
        tmp = os.path.join(directory, f"{TEMP_PREFIX}{uuid.uuid4().hex}-{name}")
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, dest)

    def _sync_dirs(self, rels: Iterable[str]) -> None:
        """Make local renames durable (object stores have nothing to sync)."""
        if not self.is_local:
            return
        for d in sorted({os.path.dirname(self.path(r)) for r in rels}):
            fd = os.open(d, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def put_json(self, rel: str, payload: dict[str, Any]) -> None:
        """Write a JSON document durably (see :meth:`_put`)."""
        data = json.dumps(payload).encode()
        self._put(rel, lambda fh: fh.write(data))
        self._sync_dirs([rel])

    def put_parquet(self, rel: str, table: pa.Table, batch: BatchId, kind: str) -> None:
        """Write ``table`` with the batch's offsets in its metadata (see :meth:`_put`)."""
        meta = {
            b"ray_app.batch": batch.stem.encode(),
            b"ray_app.first_offset": str(batch.first).encode(),
            b"ray_app.last_offset": str(batch.last).encode(),
            b"ray_app.schema_version": str(SNAPSHOT_SCHEMA_VERSION).encode(),
            b"ray_app.kind": kind.encode(),
        }
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **meta})
        self._put(rel, lambda fh: pq.write_table(table, fh, compression="zstd"))

    def read_json(self, rel: str) -> dict[str, Any]:
        """A JSON document of the store."""
        with self.fs.open_input_stream(self.path(rel)) as fh:
            return dict(json.loads(fh.read()))

    def delete(self, rel: str) -> bool:
        """Delete a file; False when it was already gone."""
        try:
            self.fs.delete_file(self.path(rel))
        except FileNotFoundError:
            return False
        return True

    # ---- the batch protocol -----------------------------------------------------------------
    def write_batch(self, batch: BatchId, good: pa.Table, dead: pa.Table) -> list[str]:
        """Durably write one batch (a file per kind of its rows, plus its dead letters), then
        its commit marker. Returns the data files (store-relative), which the marker lists.

        Writing the same batch again (a re-delivery) rewrites the same names: idempotent.
        """
        written: list[str] = []
        if good.num_rows:
            for kind in sorted(pc.unique(good["kind"]).to_pylist()):
                rel = batch_file(kind, batch)
                self.put_parquet(rel, good.filter(pc.equal(good["kind"], kind)), batch, kind)
                written.append(rel)
        if dead.num_rows:
            rel = dead_letter_file(batch)
            self.put_parquet(rel, dead, batch, "dead_letter")
            written.append(rel)
        self._sync_dirs(written)
        self.put_json(
            commit_marker(batch),
            {
                "topic": batch.topic,
                "partition": batch.partition,
                "first_offset": batch.first,
                "last_offset": batch.last,
                "records": good.num_rows + dead.num_rows,
                "snapshot_rows": good.num_rows,
                "dead_letters": dead.num_rows,
                "files": written,
                "schema_version": SNAPSHOT_SCHEMA_VERSION,
            },
        )
        return written

    def committed_batches(self) -> list[BatchId]:
        """Every durable batch (one whose marker exists), sorted."""
        out = []
        for info in self.list_files(COMMITS):
            f = parse_data_file(info.rel)
            if f is not None and not f.temp:
                out.append(f.batch)
        return sorted(out)

    def next_offsets(self) -> dict[tuple[str, int], int]:
        """(topic, partition) → the next offset to consume according to the markers."""
        nxt: dict[tuple[str, int], int] = {}
        for b in self.committed_batches():
            key = (b.topic, b.partition)
            nxt[key] = max(nxt.get(key, 0), b.last + 1)
        return nxt

    def compaction_records(self) -> list[CompactionRecord]:
        """Every finished compaction (its record exists)."""
        out = []
        for info in self.list_files(COMPACTIONS):
            rel = info.rel
            name = rel.rsplit("/", 1)[-1]
            if not name.endswith(".json") or name.startswith(TEMP_PREFIX):
                continue
            data = self.read_json(rel)
            out.append(CompactionRecord(data["stem"], data["file"], tuple(data["replaced"])))
        return out

    def durable(self, kinds: Collection[str] | None = None) -> list[StoredFile]:
        """Durable event files (of ``kinds``; default all), sorted by path: files of committed
        batches and merged files of finished compactions, less the files those replaced."""
        # Records first: a compaction finishing meanwhile then shows its originals (still
        # committed) rather than neither the originals nor the merged file.
        records = self.compaction_records()
        committed = {b.stem for b in self.committed_batches()}
        merged = {r.file for r in records}
        replaced = {f for r in records for f in r.replaced}
        out = []
        for info in self.list_files(EVENTS):
            rel = info.rel
            if rel in replaced or (kinds is not None and kind_of(rel) not in kinds):
                continue
            f = parse_data_file(rel)
            if f is None or f.temp:
                continue
            if rel in merged or (not f.compacted and f.batch.stem in committed):
                out.append(info)
        return sorted(out, key=lambda s: s.rel)

    def recover(self, partitions: Collection[tuple[str, int]] | None = None) -> list[str]:
        """Delete what a crash left of the given (topic, partition)s (default: all): temp
        files, data files of batches without a marker, and files a finished compaction
        replaced. Returns them (store-relative).

        Limit ``partitions`` to those this consumer owns, so that consumers sharing a location
        never delete each other's batches in flight. Compaction's own unfinished output is
        left to the next compaction (see :mod:`ray_app.snapshots.compaction`).
        """
        records = self.compaction_records()
        committed = {b.stem for b in self.committed_batches()}
        merged = {r.file for r in records}
        replaced = {f for r in records for f in r.replaced}
        removed: list[str] = []
        for sub in (EVENTS, DEAD_LETTER, COMMITS):
            for info in self.list_files(sub):
                rel = info.rel
                f = parse_data_file(rel)
                if f is None or f.compacted:
                    continue
                if partitions is not None and (f.batch.topic, f.batch.partition) not in partitions:
                    continue
                orphan = sub != COMMITS and rel not in merged and f.batch.stem not in committed
                if (f.temp or orphan or rel in replaced) and self.delete(rel):
                    removed.append(rel)
        return removed

    # ---- reading ----------------------------------------------------------------------------
    def read_table(self, files: Iterable[str], columns: Iterable[str] | None = None) -> pa.Table:
        """Rows of store-relative ``files`` as one table of the current snapshot schema
        (columns an older schema version lacks are nulls)."""
        dataset = pads.dataset(
            [self.path(f) for f in files],
            schema=SNAPSHOT_SCHEMA,
            format="parquet",
            filesystem=self.fs,
        )
        return dataset.to_table(columns=list(columns) if columns is not None else None)


def _redact(location: str) -> str:
    """``location`` without the credentials a URI may carry."""
    return _CREDENTIALS.sub(r"\1", location)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def write_batch(
    location: str | Path | SnapshotStore, batch: BatchId, good: pa.Table, dead: pa.Table
) -> list[str]:
    """:meth:`SnapshotStore.write_batch` at ``location``."""
    return SnapshotStore.at(location).write_batch(batch, good, dead)


def committed_batches(location: str | Path | SnapshotStore) -> list[BatchId]:
    """:meth:`SnapshotStore.committed_batches` at ``location``."""
    return SnapshotStore.at(location).committed_batches()
