"""Snapshot layout and naming: what every file under a snapshot location is called.

Layout under a snapshot location (a local path, ``file://…`` or ``s3://bucket/prefix``)::

    events/kind=<kind>/<topic>+<partition>+<first>+<last>.parquet            one consumed batch
    events/kind=<kind>/<topic>+<partition>+<first>+<last>.compacted.parquet  merged batches
    dead_letter/topic=<topic>/<topic>+<partition>+<first>+<last>.parquet
    _commits/<topic>+<partition>+<first>+<last>.json                         commit markers
    _compactions/<kind>+<topic>+<partition>+<first>+<last>.json              compaction records

Files are partitioned by kind only, so their number grows with ingest batches, not with the
span of event dates a batch covers. Directories written before that (``events/kind=<kind>/
date=<YYYY-MM-DD>/<batch>.parquet``) are read as they are; compaction merges their files into
the layout above. The offset range in every name is what makes re-delivery idempotent: a batch
re-consumed after a crash has the same name, or an uncommitted one that recovery deletes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_NAME = re.compile(r"^(?P<topic>.+)\+(?P<partition>\d+)\+(?P<first>\d+)\+(?P<last>\d+)$")
OFFSET_WIDTH = 19  # int64 max has 19 digits: lexical order == numeric order

EVENTS = "events"
DEAD_LETTER = "dead_letter"
COMMITS = "_commits"
COMPACTIONS = "_compactions"
TEMP_PREFIX = ".tmp-"
"""Local filesystems write under ``.tmp-<uuid>-<name>`` and rename (object stores need not)."""
COMPACTED_SUFFIX = ".compacted.parquet"
BATCH_SUFFIX = ".parquet"


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
        """The name every file of this batch shares (zero-padded, so names sort by offset)."""
        return f"{self.topic}+{self.partition}+{self.first:0{OFFSET_WIDTH}d}+{self.last:0{OFFSET_WIDTH}d}"

    @classmethod
    def parse(cls, stem: str) -> BatchId:
        """Inverse of :attr:`stem`; raises ValueError for names that are not batch files."""
        m = _NAME.match(stem)
        if not m:
            raise ValueError(f"{stem!r} is not a <topic>+<partition>+<first>+<last> name")
        return cls(m["topic"], int(m["partition"]), int(m["first"]), int(m["last"]))


@dataclass(frozen=True)
class DataFile:
    """What a data file's name says: its batch (or merged range) and whether compaction
    wrote it; ``temp`` for a local file not yet renamed into place."""

    batch: BatchId
    compacted: bool
    temp: bool


def parse_data_file(rel: str) -> DataFile | None:
    """The :class:`DataFile` a store-relative path names, or None for a file that is not ours."""
    name = rel.rsplit("/", 1)[-1]
    temp = name.startswith(TEMP_PREFIX)
    if temp:
        name = name.split("-", 2)[-1]  # ".tmp-<uuid>-<name>"
    compacted = name.endswith(COMPACTED_SUFFIX)
    if compacted:
        stem = name.removesuffix(COMPACTED_SUFFIX)
    elif name.endswith(BATCH_SUFFIX):
        stem = name.removesuffix(BATCH_SUFFIX)
    elif name.endswith(".json"):
        stem = name.removesuffix(".json")
    else:
        return None
    try:
        return DataFile(BatchId.parse(stem), compacted, temp)
    except ValueError:
        return None


def kind_of(rel: str) -> str | None:
    """The ``kind=`` partition value in a store-relative path (None outside ``events/``)."""
    for part in rel.split("/"):
        if part.startswith("kind="):
            return part.removeprefix("kind=")
    return None


def batch_file(kind: str, batch: BatchId) -> str:
    """Where one kind's rows of a consumed batch go."""
    return f"{EVENTS}/kind={kind}/{batch.stem}{BATCH_SUFFIX}"


def compacted_file(kind: str, merged: BatchId) -> str:
    """Where a compaction of one (kind, topic, partition) writes its merged rows."""
    return f"{EVENTS}/kind={kind}/{merged.stem}{COMPACTED_SUFFIX}"


def dead_letter_file(batch: BatchId) -> str:
    """Where a batch's dead letters go."""
    return f"{DEAD_LETTER}/topic={batch.topic}/{batch.stem}{BATCH_SUFFIX}"


def commit_marker(batch: BatchId) -> str:
    """The marker whose existence makes ``batch`` durable."""
    return f"{COMMITS}/{batch.stem}.json"


def compaction_record(kind: str, merged: BatchId) -> str:
    """The record whose existence makes a compaction's merged file durable."""
    return f"{COMPACTIONS}/{kind}+{merged.stem}.json"
