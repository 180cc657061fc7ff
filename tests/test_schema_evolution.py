"""Snapshot schemas evolve additively only, and files of every shipped version stay readable."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from helpers import write_json_events_snapshot

from ray_app.events.line_dialect import format_line, parse_line_batch
from ray_app.events.model import RecoEvent, WatchEvent
from ray_app.events.reco import served_reco_event
from ray_app.events.schema import DEAD_LETTER_SCHEMA, SNAPSHOT_SCHEMA, SNAPSHOT_SCHEMAS
from ray_app.snapshots.protocol import BatchId
from ray_app.snapshots.read import load_snapshot_events
from ray_app.snapshots.store import write_batch

V1, V2 = SNAPSHOT_SCHEMAS[1], SNAPSHOT_SCHEMAS[2]
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def check_additive(old: pa.Schema, new: pa.Schema) -> list[str]:
    """Problems that make ``new`` an incompatible successor of ``old`` (empty: compatible)."""
    problems = []
    for f in old:
        if f.name not in new.names:
            problems.append(f"field {f.name!r} was removed")
            continue
        g = new.field(f.name)
        if g.type != f.type:
            problems.append(f"field {f.name!r} changed type {f.type} -> {g.type}")
        if f.nullable and not g.nullable:
            problems.append(f"field {f.name!r} became required")
    for g in new:
        if g.name not in old.names and not g.nullable:
            problems.append(f"new field {g.name!r} must be optional (nullable)")
    if new.names[: len(old.names)] != old.names:
        problems.append("existing fields were reordered; append new fields at the end")
    return problems


def test_every_shipped_version_is_an_additive_successor() -> None:
    versions = sorted(SNAPSHOT_SCHEMAS)
    assert versions == list(range(1, len(versions) + 1)), "versions are 1..N without gaps"
    for a, b in itertools.pairwise(versions):
        assert check_additive(SNAPSHOT_SCHEMAS[a], SNAPSHOT_SCHEMAS[b]) == []
    assert SNAPSHOT_SCHEMA is SNAPSHOT_SCHEMAS[versions[-1]]


def test_v2_appends_the_reco_provenance_fields() -> None:
    added = V2.names[len(V1.names) :]
    assert added == ["request_id", "ab_variant", "model_version"]
    assert all(V2.field(n).nullable and V2.field(n).type == pa.string() for n in added)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda s: s.remove(s.get_field_index("rating")), "removed"),
        (
            lambda s: s.set(s.get_field_index("minute"), pa.field("minute", pa.string())),
            "changed type",
        ),
        (lambda s: s.append(pa.field("new_required", pa.string(), nullable=False)), "optional"),
        (
            lambda s: s.set(
                s.get_field_index("movie_id"), pa.field("movie_id", pa.string(), False)
            ),
            "became required",
        ),
        (lambda s: pa.schema([s.field("user_id"), s.field("kind"), *list(s)[2:]]), "reordered"),
    ],
)
def test_the_checker_rejects_breaking_changes(change: object, expected: str) -> None:
    broken = change(SNAPSHOT_SCHEMA)  # type: ignore[operator]
    assert any(expected in p for p in check_additive(SNAPSHOT_SCHEMA, broken))


def _v1_table(events: list[WatchEvent | RecoEvent], first: int = 0) -> pa.Table:
    """Rows exactly as a schema-v1 writer stored them (the v2 columns did not exist)."""
    lines = [format_line(e).encode() for e in events]
    good = parse_line_batch(
        lines, topic="movielog", partitions=0, offsets=list(range(first, first + len(lines)))
    ).good
    return good.select(V1.names).cast(V1)


def test_v1_file_read_with_v2_schema_shows_new_fields_as_null(tmp_path: Path) -> None:
    v1 = _v1_table([RecoEvent(T0, "1", "A@pop:1", 200, ["9"], 2.0)])
    pq.write_table(v1, tmp_path / "old.parquet")
    table = ds.dataset(tmp_path, schema=V2, format="parquet").to_table()
    assert table.schema == V2
    row = table.to_pylist()[0]
    assert (row["request_id"], row["ab_variant"], row["model_version"]) == (None, None, None)
    assert row["server"] == "A@pop:1" and row["items"] == ["9"]


def test_load_snapshot_events_reads_v1_and_v2_files_together(tmp_path: Path) -> None:
    old: list[WatchEvent | RecoEvent] = [
        RecoEvent(T0, "1", "A@pop:1", 200, ["9"], 2.0),
        WatchEvent(T0 + timedelta(minutes=1), "1", "9", 0),
    ]
    write_batch(
        tmp_path, BatchId("movielog", 0, 0, 1), _v1_table(old), DEAD_LETTER_SCHEMA.empty_table()
    )
    new = served_reco_event(
        user_id="2",
        items=["5"],
        variant="B",
        model="itemknn",
        version="7",
        latency_ms=1.0,
        request_id="r-2",
        ts=T0 + timedelta(minutes=2),
    )
    write_json_events_snapshot(tmp_path, [new])
    schemas = {
        f.name.split("+")[0]: pq.read_schema(f) for f in tmp_path.rglob("kind=reco/*.parquet")
    }
    assert schemas["movielog"].names == V1.names
    assert schemas["events.reco_responses"].names == V2.names

    everything = load_snapshot_events(tmp_path).sort_values("ts")
    assert everything["user_id"].tolist() == ["1", "1", "2"]
    v2 = everything[["request_id", "ab_variant", "model_version"]]
    assert v2.isna().to_numpy().tolist() == [[True] * 3, [True] * 3, [False] * 3]
    assert v2.iloc[2].tolist() == ["r-2", "B", "7"]
    # Readers that ask for v1 columns only (drift, training) see both files' rows.
    v1_cols = load_snapshot_events(tmp_path, ("reco",), ["kind", "user_id", "server"])
    assert sorted(v1_cols["server"]) == ["A@pop:1", "B@itemknn:7"]
