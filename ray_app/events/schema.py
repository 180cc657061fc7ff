"""Versioned Arrow schemas for snapshots and dead letters.

Schemas evolve additively only: a new version may append optional (nullable) fields but never
remove, rename or retype an existing one. ``tests/test_schema_evolution.py`` enforces this
against every version listed in :data:`SNAPSHOT_SCHEMAS`.
"""

from __future__ import annotations

import pyarrow as pa

EVENT_KINDS: tuple[str, ...] = ("watch", "rate", "reco")

_SNAPSHOT_V1 = pa.schema(
    [
        pa.field("kind", pa.string(), nullable=False),
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("movie_id", pa.string()),
        pa.field("ts", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("minute", pa.int32()),
        pa.field("rating", pa.float32()),
        pa.field("status", pa.int32()),
        pa.field("latency_ms", pa.float64()),
        pa.field("items", pa.list_(pa.string())),
        pa.field("server", pa.string()),
        pa.field("topic", pa.string(), nullable=False),
        pa.field("partition", pa.int32(), nullable=False),
        pa.field("offset", pa.int64(), nullable=False),
    ]
)

# Every schema version ever shipped, oldest first. Append, never edit.
SNAPSHOT_SCHEMAS: dict[int, pa.Schema] = {1: _SNAPSHOT_V1}
SNAPSHOT_SCHEMA_VERSION: int = max(SNAPSHOT_SCHEMAS)
SNAPSHOT_SCHEMA: pa.Schema = SNAPSHOT_SCHEMAS[SNAPSHOT_SCHEMA_VERSION]

DEAD_LETTER_SCHEMA = pa.schema(
    [
        pa.field("topic", pa.string(), nullable=False),
        pa.field("partition", pa.int32(), nullable=False),
        pa.field("offset", pa.int64(), nullable=False),
        pa.field("raw", pa.binary(), nullable=False),
        pa.field("error", pa.string(), nullable=False),
    ]
)


def empty_snapshot_table() -> pa.Table:
    """An empty table with the current snapshot schema."""
    return SNAPSHOT_SCHEMA.empty_table()


def empty_dead_letter_table() -> pa.Table:
    """An empty table with the dead-letter schema."""
    return DEAD_LETTER_SCHEMA.empty_table()
