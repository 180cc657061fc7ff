"""Versioned Arrow schemas for snapshots and dead letters.

Schemas evolve additively only: a new version may append optional (nullable) fields but never
remove, rename or retype an existing one. ``tests/test_schema_evolution.py`` enforces this
against every version listed in :data:`SNAPSHOT_SCHEMAS`, and that files written with an older
version still read (new fields as nulls).

Versions:

1. the original columns, shared by both dialects;
2. ``request_id``, ``ab_variant`` and ``model_version`` of reco events (what served a list, for
   online evaluation and tracing). The JSON dialect carries them; the line dialect has no place
   for them and leaves them null (its ``server`` field still says ``<variant>@<model>:<version>``).
"""

from __future__ import annotations

import pyarrow as pa

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

RECO_PROVENANCE_FIELDS: tuple[str, ...] = ("request_id", "ab_variant", "model_version")
"""Schema v2's reco-event fields, in schema order (all optional strings)."""

_SNAPSHOT_V2 = pa.schema(
    [*_SNAPSHOT_V1, *(pa.field(name, pa.string()) for name in RECO_PROVENANCE_FIELDS)]
)

# Every schema version ever shipped, oldest first. Append, never edit.
SNAPSHOT_SCHEMAS: dict[int, pa.Schema] = {1: _SNAPSHOT_V1, 2: _SNAPSHOT_V2}
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
