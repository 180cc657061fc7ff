"""Snapshot schemas evolve additively only, and old files stay readable by new code."""

from __future__ import annotations

import itertools
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from ray_app.events.schema import SNAPSHOT_SCHEMA, SNAPSHOT_SCHEMAS


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


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda s: s.remove(s.get_field_index("rating")), "removed"),
        (
            lambda s: s.set(s.get_field_index("minute"), pa.field("minute", pa.string())),
            "changed type",
        ),
        (lambda s: s.append(pa.field("new_required", pa.string(), nullable=False)), "optional"),
    ],
)
def test_the_checker_rejects_breaking_changes(change: object, expected: str) -> None:
    broken = change(SNAPSHOT_SCHEMA)  # type: ignore[operator]
    assert any(expected in p for p in check_additive(SNAPSHOT_SCHEMA, broken))


def test_old_files_read_with_new_schema_show_new_fields_as_null(tmp_path: Path) -> None:
    old = SNAPSHOT_SCHEMA
    new = old.append(pa.field("device", pa.string()))
    assert check_additive(old, new) == []
    row = {f.name: None for f in old}
    row.update(
        kind="watch",
        user_id="1",
        movie_id="9",
        ts=pa.scalar(0, pa.timestamp("us", tz="UTC")).as_py(),
        minute=3,
        topic="t",
        partition=0,
        offset=5,
    )
    pq.write_table(pa.Table.from_pylist([row], schema=old), tmp_path / "old.parquet")
    table = ds.dataset(tmp_path, schema=new, format="parquet").to_table()
    assert table.schema == new
    assert table["device"].to_pylist() == [None]
    assert table["minute"].to_pylist() == [3]
