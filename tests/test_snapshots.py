"""Snapshot naming and the batch commit protocol (no broker needed)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ray_app.events.schema import DEAD_LETTER_SCHEMA, SNAPSHOT_SCHEMA
from ray_app.snapshots.protocol import (
    BatchId,
    committed_batches,
    compact,
    next_offsets,
    recover,
    write_batch,
)
from ray_app.snapshots.read import snapshot_files


def _rows(offsets: list[int], kinds: list[str], days: list[int]) -> pa.Table:
    n = len(offsets)
    return pa.Table.from_pylist(
        [
            {
                "kind": k,
                "user_id": "7",
                "movie_id": "42" if k != "reco" else None,
                "ts": dt.datetime(2024, 1, d, 12, tzinfo=dt.UTC),
                "minute": 1 if k == "watch" else None,
                "rating": 4.0 if k == "rate" else None,
                "status": None,
                "latency_ms": None,
                "items": None,
                "server": None,
                "topic": "movielog",
                "partition": 0,
                "offset": o,
            }
            for o, k, d in zip(offsets, kinds, days, strict=True)
        ][:n],
        schema=SNAPSHOT_SCHEMA,
    )


def test_batch_name_round_trip_and_order() -> None:
    b = BatchId("movielog", 3, 0, 99)
    assert b.stem == "movielog+3+0000000000000000000+0000000000000000099"
    assert BatchId.parse(b.stem) == b
    # zero padding makes lexical order equal numeric order
    assert BatchId("t", 0, 9, 9).stem < BatchId("t", 0, 10, 10).stem


@given(
    topic=st.from_regex(r"[A-Za-z0-9._-]{1,20}", fullmatch=True),
    partition=st.integers(0, 10_000),
    first=st.integers(0, 2**62),
    span=st.integers(0, 10**6),
)
def test_batch_name_parse_is_inverse(topic: str, partition: int, first: int, span: int) -> None:
    b = BatchId(topic, partition, first, first + span)
    assert BatchId.parse(b.stem) == b


def test_bad_names_and_ranges_are_rejected() -> None:
    with pytest.raises(ValueError, match="offset range"):
        BatchId("t", 0, 5, 4)
    with pytest.raises(ValueError, match="reserve"):
        BatchId("a+b", 0, 0, 1)
    with pytest.raises(ValueError, match="not a"):
        BatchId.parse("random-file")


def test_write_batch_partitions_by_kind_and_date(tmp_path: Path) -> None:
    good = _rows([10, 11, 12, 14], ["watch", "rate", "watch", "watch"], [1, 1, 2, 2])
    dead = pa.Table.from_pylist(
        [{"topic": "movielog", "partition": 0, "offset": 13, "raw": b"junk", "error": "bad"}],
        schema=DEAD_LETTER_SCHEMA,
    )
    files = write_batch(tmp_path, BatchId("movielog", 0, 10, 14), good, dead)
    names = sorted(str(f) for f in files)
    assert names == sorted(
        [
            "events/kind=watch/date=2024-01-01/movielog+0+0000000000000000010+0000000000000000014.parquet",
            "events/kind=watch/date=2024-01-02/movielog+0+0000000000000000010+0000000000000000014.parquet",
            "events/kind=rate/date=2024-01-01/movielog+0+0000000000000000010+0000000000000000014.parquet",
            "dead_letter/topic=movielog/movielog+0+0000000000000000010+0000000000000000014.parquet",
        ]
    )
    meta = pq.read_schema(tmp_path / files[0]).metadata
    assert meta[b"ray_app.first_offset"] == b"10" and meta[b"ray_app.last_offset"] == b"14"
    assert next_offsets(tmp_path) == {("movielog", 0): 15}
    assert len(snapshot_files(tmp_path)) == 3
    # every offset is in exactly one place
    all_offsets = sorted(
        o for f in files for o in pq.read_table(tmp_path / f)["offset"].to_pylist()
    )
    assert all_offsets == [10, 11, 12, 13, 14]


def test_recover_removes_batches_without_marker(tmp_path: Path) -> None:
    write_batch(
        tmp_path,
        BatchId("movielog", 0, 0, 1),
        _rows([0, 1], ["watch"] * 2, [1, 1]),
        DEAD_LETTER_SCHEMA.empty_table(),
    )
    # simulate a crash after a data file was renamed but before the marker was written
    orphan = (
        tmp_path
        / "events/kind=watch/date=2024-01-01"
        / f"{BatchId('movielog', 0, 2, 3).stem}.parquet"
    )
    pq.write_table(_rows([2, 3], ["watch"] * 2, [1, 1]), orphan)
    tmp = orphan.parent / f".tmp-abc-{BatchId('movielog', 0, 4, 4).stem}.parquet"
    tmp.write_bytes(b"partial")
    other = orphan.parent / f"{BatchId('movielog', 1, 0, 0).stem}.parquet"
    pq.write_table(_rows([0], ["watch"], [1]), other)
    # partition 1 belongs to another consumer: recovery for partition 0 must not touch it
    removed = recover(tmp_path, {("movielog", 0)})
    assert sorted(p.name for p in removed) == sorted([orphan.name, tmp.name])
    assert other.exists()
    assert [b.last for b in committed_batches(tmp_path)] == [1]
    assert next_offsets(tmp_path) == {("movielog", 0): 2}


def test_compaction_merges_closed_dates_and_keeps_every_offset_once(tmp_path: Path) -> None:
    empty = DEAD_LETTER_SCHEMA.empty_table()
    for first in range(0, 40, 4):  # ten batches, each spanning two days
        offs = list(range(first, first + 4))
        write_batch(
            tmp_path,
            BatchId("movielog", 0, first, first + 3),
            _rows(offs, ["watch"] * 4, [1, 1, 2, 3]),
            empty,
        )
    before = snapshot_files(tmp_path)
    result = compact(tmp_path)  # closes every date but the newest (2024-01-03)
    assert result.groups == 2 and result.files_before == 20 and result.files_after == 2
    after = snapshot_files(tmp_path)
    assert len(after) == len(before) - 18
    day1 = [p for p in after if "date=2024-01-01" in str(p)]
    # named by the union of the merged batches' offset ranges, like every batch file
    assert [p.stem for p in day1] == [BatchId("movielog", 0, 0, 39).stem]
    offsets = sorted(o for p in after for o in pq.read_table(p)["offset"].to_pylist())
    assert offsets == list(range(40))
    assert next_offsets(tmp_path) == {("movielog", 0): 40}  # resume point unchanged
    assert recover(tmp_path) == []  # compacted files are durable, not orphans


def test_interrupted_compaction_is_finished_by_recovery(tmp_path: Path) -> None:
    empty = DEAD_LETTER_SCHEMA.empty_table()
    originals = []
    for first in (0, 2):
        write_batch(
            tmp_path,
            BatchId("t", 0, first, first + 1),
            _rows([first, first + 1], ["watch"] * 2, [1, 1]),
            empty,
        )
        originals.append(
            tmp_path
            / "events/kind=watch/date=2024-01-01"
            / f"{BatchId('t', 0, first, first + 1).stem}.parquet"
        )
    copies = [p.read_bytes() for p in originals]
    compact(tmp_path, closed_before="2024-01-02")
    # simulate a crash after the compaction record but before the originals were deleted
    for p, data in zip(originals, copies, strict=True):
        p.write_bytes(data)
    removed = recover(tmp_path)
    assert sorted(removed) == sorted(originals)
    offsets = sorted(
        o for p in snapshot_files(tmp_path) for o in pq.read_table(p)["offset"].to_pylist()
    )
    assert offsets == [0, 1, 2, 3]
