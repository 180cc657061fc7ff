"""Snapshot naming, the batch commit protocol, recovery and compaction, on a local directory
and (``[s3]`` cases) on a real S3-compatible server: no broker needed."""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ray_app.errors import UserError
from ray_app.events.schema import DEAD_LETTER_SCHEMA, SNAPSHOT_SCHEMA
from ray_app.snapshots.compaction import compact
from ray_app.snapshots.protocol import BatchId, batch_file, compacted_file
from ray_app.snapshots.read import load_snapshot_events, snapshot_files
from ray_app.snapshots.store import SnapshotStore

EMPTY = DEAD_LETTER_SCHEMA.empty_table()


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.integration)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> SnapshotStore:
    """An empty store on a local directory or under a fresh prefix of the S3 server."""
    if request.param == "local":
        return SnapshotStore.at(tmp_path / "snap")
    return SnapshotStore.at(request.getfixturevalue("s3_uri"))


def _rows(offsets: list[int], kinds: list[str], days: list[int], partition: int = 0) -> pa.Table:
    return pa.Table.from_pylist(
        [
            {
                "kind": k,
                "user_id": "7",
                "movie_id": "42" if k != "reco" else None,
                "ts": dt.datetime(2024, 1, d, 12, tzinfo=dt.UTC),
                "minute": 1 if k == "watch" else None,
                "rating": 4.0 if k == "rate" else None,
                "topic": "movielog",
                "partition": partition,
                "offset": o,
            }
            for o, k, d in zip(offsets, kinds, days, strict=True)
        ],
        schema=SNAPSHOT_SCHEMA,
    )


def _watch(first: int, n: int, partition: int = 0) -> pa.Table:
    offs = list(range(first, first + n))
    return _rows(offs, ["watch"] * n, [1 + o % 28 for o in offs], partition)


def _offsets(store: SnapshotStore) -> Counter[tuple[int, int]]:
    """(partition, offset) → how often the durable event files hold it."""
    t = store.read_table(snapshot_files(store), ["partition", "offset"])
    return Counter(zip(t["partition"].to_pylist(), t["offset"].to_pylist(), strict=True))


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


def test_locations_resolve_to_the_right_filesystem(tmp_path: Path) -> None:
    local = SnapshotStore.at(tmp_path / "a")
    assert local.is_local and local.base == str(tmp_path / "a")
    assert SnapshotStore.at(f"file://{tmp_path}/b").base == str(tmp_path / "b")
    s3 = SnapshotStore.at("s3://k:secret@bucket/snaps?endpoint_override=127.0.0.1:1&scheme=http")
    assert not s3.is_local and s3.base == "bucket/snaps"
    assert "secret" not in s3.name and "bucket/snaps" in s3.name
    # What Path("s3://bucket/x") makes of a URI must not become a local directory named "s3:".
    with pytest.raises(UserError, match="lost a slash"):
        SnapshotStore.at(Path("s3://bucket/snaps"))


def test_write_batch_partitions_by_kind_only(store: SnapshotStore) -> None:
    # One batch spanning two days and two kinds: one file per kind, no date partitions.
    good = _rows([10, 11, 12, 14], ["watch", "rate", "watch", "watch"], [1, 1, 2, 2])
    dead = pa.Table.from_pylist(
        [{"topic": "movielog", "partition": 0, "offset": 13, "raw": b"junk", "error": "bad"}],
        schema=DEAD_LETTER_SCHEMA,
    )
    batch = BatchId("movielog", 0, 10, 14)
    files = store.write_batch(batch, good, dead)
    assert sorted(files) == sorted(
        [
            f"events/kind=watch/{batch.stem}.parquet",
            f"events/kind=rate/{batch.stem}.parquet",
            f"dead_letter/topic=movielog/{batch.stem}.parquet",
        ]
    )
    marker = store.read_json(f"_commits/{batch.stem}.json")
    assert marker["files"] == files and marker["dead_letters"] == 1
    meta = pq.read_schema(store.path(files[0]), filesystem=store.fs).metadata
    assert meta[b"ray_app.first_offset"] == b"10" and meta[b"ray_app.last_offset"] == b"14"
    assert store.next_offsets() == {("movielog", 0): 15}
    assert snapshot_files(store) == sorted(f for f in files if f.startswith("events/"))
    assert snapshot_files(store, ["rate"]) == [f"events/kind=rate/{batch.stem}.parquet"]
    every = [*_offsets(store), (0, 13)]  # and the dead letter
    assert sorted(every) == [(0, o) for o in range(10, 15)]
    rated = load_snapshot_events(store.location, ("rate",))
    assert rated["offset"].tolist() == [11] and rated["kind"].tolist() == ["rate"]


def test_files_grow_with_batches_not_with_event_dates(store: SnapshotStore) -> None:
    # Three batches whose events span 28 days each (a fast replay of history).
    for first in (0, 100, 200):
        store.write_batch(BatchId("movielog", 0, first, first + 99), _watch(first, 100), EMPTY)
    assert len(snapshot_files(store)) == 3


def test_recovery_removes_uncommitted_objects_of_owned_partitions_only(
    store: SnapshotStore,
) -> None:
    store.write_batch(BatchId("movielog", 0, 0, 1), _watch(0, 2), EMPTY)
    # A crash after the data objects were written but before the marker: partition 0 …
    orphan = batch_file("watch", BatchId("movielog", 0, 2, 3))
    store.put_parquet(orphan, _watch(2, 2), BatchId("movielog", 0, 2, 3), "watch")
    # … and partition 1, which another consumer owns and may be writing right now.
    theirs = batch_file("watch", BatchId("movielog", 1, 0, 0))
    store.put_parquet(theirs, _watch(0, 1, partition=1), BatchId("movielog", 1, 0, 0), "watch")
    assert snapshot_files(store) == [batch_file("watch", BatchId("movielog", 0, 0, 1))]

    removed = store.recover({("movielog", 0)})
    assert removed == [orphan]
    present = {f.rel for f in store.list_files("events")}
    assert theirs in present and orphan not in present
    assert store.next_offsets() == {("movielog", 0): 2}
    assert store.recover({("movielog", 0)}) == []


def test_recovery_removes_local_temp_files(tmp_path: Path) -> None:
    store = SnapshotStore.at(tmp_path)
    store.write_batch(BatchId("movielog", 0, 0, 1), _watch(0, 2), EMPTY)
    watch_dir = tmp_path / "events/kind=watch"
    tmp = watch_dir / f".tmp-abc-{BatchId('movielog', 0, 2, 2).stem}.parquet"
    tmp.write_bytes(b"partial")
    marker_tmp = tmp_path / "_commits" / f".tmp-abc-{BatchId('movielog', 0, 2, 2).stem}.json"
    marker_tmp.write_text("{")
    assert sorted(store.recover()) == sorted(
        [f"events/kind=watch/{tmp.name}", f"_commits/{marker_tmp.name}"]
    )
    assert [b.last for b in store.committed_batches()] == [1]


def test_redelivered_batch_is_idempotent(store: SnapshotStore) -> None:
    batch = BatchId("movielog", 0, 0, 9)
    first = store.write_batch(batch, _watch(0, 10), EMPTY)
    # Kafka re-delivers the same range (the offset commit was lost): same names, same rows.
    assert store.write_batch(batch, _watch(0, 10), EMPTY) == first
    # A crashed attempt at 10..29 left its data; the retry after recovery covers 10..19.
    store.put_parquet(
        batch_file("watch", BatchId("movielog", 0, 10, 29)),
        _watch(10, 20),
        BatchId("movielog", 0, 10, 29),
        "watch",
    )
    store.recover({("movielog", 0)})
    store.write_batch(BatchId("movielog", 0, 10, 19), _watch(10, 10), EMPTY)
    assert _offsets(store) == Counter({(0, o): 1 for o in range(20)})
    assert len(store.committed_batches()) == 2


def test_compaction_merges_per_kind_topic_partition(store: SnapshotStore) -> None:
    for first in range(0, 40, 4):  # ten batches of partition 0, two of partition 1
        store.write_batch(
            BatchId("movielog", 0, first, first + 3),
            _rows(list(range(first, first + 4)), ["watch", "watch", "rate", "watch"], [1, 2, 3, 4]),
            EMPTY,
        )
    for first in (0, 5):
        store.write_batch(BatchId("movielog", 1, first, first + 4), _watch(first, 5, 1), EMPTY)
    before = _offsets(store)
    assert len(snapshot_files(store)) == 22

    result = compact(store.location)
    assert (result.merged_files, result.files_before, result.files_after) == (3, 22, 3)
    assert snapshot_files(store) == sorted(
        [
            compacted_file("watch", BatchId("movielog", 0, 0, 39)),
            compacted_file("rate", BatchId("movielog", 0, 0, 39)),
            compacted_file("watch", BatchId("movielog", 1, 0, 9)),
        ]
    )
    assert _offsets(store) == before
    assert all(c == 1 for c in before.values())
    assert store.next_offsets() == {("movielog", 0): 40, ("movielog", 1): 10}  # unchanged
    assert store.recover() == []  # merged files are durable, not orphans

    # New batches and the merged file merge again, into the union of their ranges.
    store.write_batch(BatchId("movielog", 1, 10, 14), _watch(10, 5, 1), EMPTY)
    assert compact(store).merged_files == 1
    assert compacted_file("watch", BatchId("movielog", 1, 0, 14)) in snapshot_files(store)
    assert _offsets(store) == before + Counter({(1, o): 1 for o in range(10, 15)})


def test_compaction_leaves_big_files_alone(store: SnapshotStore) -> None:
    for first in (0, 10):
        store.write_batch(BatchId("t", 0, first, first + 9), _watch(first, 10), EMPTY)
    result = compact(store, target_bytes=100)  # every file is "big"
    assert result.merged_files == 0 and len(snapshot_files(store)) == 2


def _two_batches(store: SnapshotStore) -> tuple[list[str], list[bytes]]:
    files = []
    for first in (0, 2):
        files += store.write_batch(BatchId("t", 0, first, first + 1), _watch(first, 2), EMPTY)
    data = []
    for f in files:
        with store.fs.open_input_stream(store.path(f)) as fh:
            data.append(fh.read())
    return files, data


def test_compaction_crash_after_its_record_reads_each_offset_once(store: SnapshotStore) -> None:
    originals, data = _two_batches(store)
    compact(store)
    for rel, blob in zip(originals, data, strict=True):  # crash before the originals went
        with store.fs.open_output_stream(store.path(rel)) as fh:
            fh.write(blob)
    assert snapshot_files(store) == [compacted_file("watch", BatchId("t", 0, 0, 3))]
    assert _offsets(store) == Counter({(0, o): 1 for o in range(4)})
    assert sorted(store.recover()) == sorted(originals)  # a consumer's recovery finishes it


def test_compaction_crash_before_its_record_is_redone(store: SnapshotStore) -> None:
    originals, _ = _two_batches(store)
    # The merged file was written, the record was not.
    orphan = compacted_file("watch", BatchId("t", 0, 0, 3))
    store.put_parquet(orphan, _watch(0, 4), BatchId("t", 0, 0, 3), "watch")
    assert snapshot_files(store) == sorted(originals)  # readers ignore it
    assert store.recover() == []  # consumers leave compaction output to compaction
    result = compact(store)
    assert result.cleaned == 1 and result.merged_files == 1
    assert _offsets(store) == Counter({(0, o): 1 for o in range(4)})


def _write_old_layout(root: Path) -> None:
    """A snapshot directory as the previous code wrote it: kind= and date= partitions, one
    file per (kind, date) of a batch, plus one finished compaction of date 2024-01-01."""
    for first in (0, 4, 8):
        batch = BatchId("movielog", 0, first, first + 3)
        rows = _rows(list(range(first, first + 4)), ["watch"] * 4, [1, 2, 3, 3])
        files = []
        for day in (1, 2, 3):
            part = rows.filter(pa.compute.equal(pa.compute.day(rows["ts"]), day))
            rel = f"events/kind=watch/date=2024-01-0{day}/{batch.stem}.parquet"
            files.append(rel)
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(part, root / rel)
        (root / "_commits").mkdir(exist_ok=True)
        (root / "_commits" / f"{batch.stem}.json").write_text(json.dumps({"files": files}))
    # The old compaction merged date 2024-01-01 into a plain-named file with a record.
    day1 = sorted((root / "events/kind=watch/date=2024-01-01").glob("*.parquet"))
    merged = BatchId("movielog", 0, 0, 11)
    merged_path = day1[0].parent / f"{merged.stem}.parquet"
    pq.write_table(pa.concat_tables([pq.read_table(p) for p in day1]), merged_path)
    (root / "_compactions").mkdir()
    (root / "_compactions" / f"watch+2024-01-01+{merged.stem}.json").write_text(
        json.dumps(
            {
                "stem": merged.stem,
                "file": str(merged_path.relative_to(root)),
                "replaced": [str(p.relative_to(root)) for p in day1],
            }
        )
    )
    for p in day1:
        p.unlink()


def test_old_layout_is_read_and_compaction_migrates_it(tmp_path: Path) -> None:
    _write_old_layout(tmp_path)
    store = SnapshotStore.at(tmp_path)
    assert len(snapshot_files(store)) == 7  # 1 merged (day 1) + 3 batches x days 2 and 3
    assert _offsets(store) == Counter({(0, o): 1 for o in range(12)})
    assert store.recover() == []  # the old merged file is durable through its record

    result = compact(store)
    assert result.merged_files == 1 and result.files_after == 1
    assert snapshot_files(store) == [compacted_file("watch", BatchId("movielog", 0, 0, 11))]
    assert _offsets(store) == Counter({(0, o): 1 for o in range(12)})
    assert load_snapshot_events(tmp_path)["offset"].sort_values().tolist() == list(range(12))


def test_missing_and_unreachable_locations_are_user_errors(tmp_path: Path) -> None:
    assert not SnapshotStore.at(tmp_path / "nope").exists()
    assert snapshot_files(tmp_path / "nope") == []
    unreachable = SnapshotStore.at(
        "s3://k:s@bucket/x?endpoint_override=127.0.0.1:1&scheme=http&region=us-east-1"
    )
    with pytest.raises(UserError, match="cannot reach snapshot location s3://bucket/x"):
        unreachable.exists()
