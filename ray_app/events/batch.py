"""The result of parsing a batch of records: good rows for the snapshot, the rest dead-lettered."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from ray_app.events.schema import DEAD_LETTER_SCHEMA, SNAPSHOT_SCHEMA


@dataclass(frozen=True)
class ParsedBatch:
    """Parsed records split in two; every input record is in exactly one of the tables.

    ``good`` has exactly :data:`SNAPSHOT_SCHEMA` and ``dead`` exactly :data:`DEAD_LETTER_SCHEMA`;
    both keep input order, and ``(partition, offset)`` identifies the input record in either.
    """

    good: pa.Table
    dead: pa.Table

    def __post_init__(self) -> None:
        # A schema drift here would corrupt snapshots silently downstream; fail loudly instead.
        if not self.good.schema.equals(SNAPSHOT_SCHEMA):
            raise ValueError(f"good table schema differs from SNAPSHOT_SCHEMA:\n{self.good.schema}")
        if not self.dead.schema.equals(DEAD_LETTER_SCHEMA):
            raise ValueError(
                f"dead table schema differs from DEAD_LETTER_SCHEMA:\n{self.dead.schema}"
            )
