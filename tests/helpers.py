"""Builders and waits shared by the tests: snapshots from events or ratings, HTTP and
condition waits, small interaction matrices."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pyarrow as pa

from ray_app.events.line_dialect import format_line, parse_line_batch
from ray_app.events.model import Event
from ray_app.events.schema import DEAD_LETTER_SCHEMA, SNAPSHOT_SCHEMA
from ray_app.models.base import Interactions
from ray_app.snapshots.protocol import BatchId, write_batch


def write_events_snapshot(
    root: Path,
    events: Sequence[Event],
    *,
    topic: str = "movielog",
    partition: int = 0,
    first: int = 0,
) -> int:
    """Commit ``events`` (line dialect, parsed as ingest would) as one snapshot batch starting
    at offset ``first``; returns the next free offset."""
    lines = [format_line(e).encode() for e in events]
    offsets = list(range(first, first + len(lines)))
    parsed = parse_line_batch(lines, topic=topic, partitions=partition, offsets=offsets)
    write_batch(
        root, BatchId(topic, partition, first, first + len(lines) - 1), parsed.good, parsed.dead
    )
    return first + len(lines)


def write_ratings_snapshot(
    root: Path, ratings: pd.DataFrame, *, first: int = 0, topic: str = "movielog"
) -> int:
    """Commit a MovieLens ratings frame (``user_id, item_id, rating, timestamp``) as one batch of
    ``rate`` rows starting at offset ``first``; returns the next free offset."""
    n = len(ratings)
    table = pa.table(
        {
            "kind": ["rate"] * n,
            "user_id": ratings["user_id"].astype(str).tolist(),
            "movie_id": ratings["item_id"].astype(str).tolist(),
            "ts": pa.array(pd.to_datetime(ratings["timestamp"], unit="s", utc=True)),
            "minute": pa.nulls(n, pa.int32()),
            "rating": ratings["rating"].astype("float32").tolist(),
            "status": pa.nulls(n, pa.int32()),
            "latency_ms": pa.nulls(n, pa.float64()),
            "items": pa.nulls(n, pa.list_(pa.string())),
            "server": pa.nulls(n, pa.string()),
            "topic": [topic] * n,
            "partition": pa.array(np.zeros(n, dtype=np.int32)),
            "offset": pa.array(np.arange(first, first + n, dtype=np.int64)),
        }
    )
    table = pa.table(
        [
            table[f.name] if f.name in table.column_names else pa.nulls(n, f.type)
            for f in SNAPSHOT_SCHEMA
        ],
        schema=SNAPSHOT_SCHEMA,
    )
    write_batch(
        root, BatchId(topic, 0, first, first + n - 1), table, DEAD_LETTER_SCHEMA.empty_table()
    )
    return first + n


def wait_until(
    predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.2, what: str = ""
) -> Any:
    """Poll ``predicate`` until it returns something truthy (returned); fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            got = predicate()
            if got:
                return got
        except Exception as exc:  # the thing waited for may not be up yet
            last = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}: {last!r}")


def wait_http(url: str, timeout: float = 120.0, status: int = 200) -> httpx.Response:
    """GET ``url`` until it answers ``status``; returns that response."""

    def get() -> httpx.Response | None:
        r = httpx.get(url, timeout=10)
        return r if r.status_code == status else None

    result: httpx.Response = wait_until(get, timeout, 0.5, f"{status} from {url}")
    return result


def interactions(
    pairs: Iterable[tuple[str, str]], items: Sequence[str] | None = None
) -> Interactions:
    """Binary interactions from ``(user, item)`` pairs; ``items`` fixes the item universe."""
    frame = pd.DataFrame(list(pairs), columns=["user_id", "item_id"])
    return Interactions.from_frame(frame, weight_col=None, item_ids=items)
