"""Typed user events, the validation rules every dialect applies, and row ↔ event conversion.

The parsers never build these objects on the hot path (they produce Arrow tables with
:data:`~ray_app.events.schema.SNAPSHOT_SCHEMA`); the dataclasses exist for producers, for the
simulator and for tests, and :func:`event_from_row` turns a snapshot row back into one.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Self

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, model_validator


def _as_utc(ts: datetime) -> datetime:
    # Naive times are UTC by contract; normalising here makes equality and formatting of
    # events independent of which tzinfo object a caller happened to use.
    if ts.tzinfo is None:
        return ts.replace(tzinfo=UTC)
    return ts.astimezone(UTC)


@dataclass(frozen=True)
class WatchEvent:
    """A user streamed one minute of a movie (``GET /data/m/<movie>/<minute>.mpg``)."""

    ts: datetime
    user_id: str
    movie_id: str
    minute: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "ts", _as_utc(self.ts))


@dataclass(frozen=True)
class RateEvent:
    """A user rated a movie (``GET /rate/<movie>=<rating>``).

    Snapshots store ratings as float32, so fractional ratings survive a round trip only when
    float32 represents them exactly (halves and quarters do; ``3.3`` does not).
    """

    ts: datetime
    user_id: str
    movie_id: str
    rating: int | float

    def __post_init__(self) -> None:
        object.__setattr__(self, "ts", _as_utc(self.ts))


@dataclass(frozen=True)
class RecoEvent:
    """The service answered a recommendation request for a user.

    ``items`` is a list (as it appears on the wire), so instances are not hashable.
    """

    ts: datetime
    user_id: str
    server: str
    status: int
    items: list[str]
    latency_ms: float
    request_id: str | None = None
    """Schema v2: the service's request id (``X-Request-Id``), to trace one answer."""
    ab_variant: str | None = None
    """Schema v2: the A/B slot that answered (also inside ``server``, for old readers)."""
    model_version: str | None = None
    """Schema v2: the registry version of the model that answered."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "ts", _as_utc(self.ts))


Event = WatchEvent | RateEvent | RecoEvent


class ParseError(ValueError):
    """A single record could not be parsed; ``reason`` is the dead-letter message."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ValidationRules(BaseModel):
    """Limits a record must satisfy to enter a snapshot; violations go to the dead letters."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    rating_min: float = 1
    """Smallest accepted rating (inclusive)."""
    rating_max: float = 5
    """Largest accepted rating (inclusive)."""
    max_line_bytes: int = 4096
    """Records longer than this (in bytes, before decoding) are rejected unparsed."""
    max_user_id_len: int = 64
    """Longest accepted user id, in characters."""
    require_numeric_user_id: bool = True
    """Reject user ids that are not made of ASCII digits only."""
    max_items: int = 100
    """Most movie ids a recommendation result may list."""

    @model_validator(mode="after")
    def _check_ranges(self) -> Self:
        if self.rating_min > self.rating_max:
            raise ValueError(
                f"rating_min={self.rating_min} is greater than rating_max={self.rating_max}"
            )
        for name in ("max_line_bytes", "max_user_id_len", "max_items"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        return self


def _number(value: float) -> int | float:
    # Ratings are stored as float32; give integral ones back as int so that an event built
    # with ``rating=4`` compares (and formats) the same after a round trip.
    return int(value) if float(value).is_integer() else float(value)


def event_from_row(row: Mapping[str, Any]) -> Event:
    """Turn one snapshot row (a mapping with the keys of any snapshot schema version) back into
    an event.

    Raises ``ValueError`` for rows that have no event representation, e.g. a JSON
    ``reco_requests`` record (kind ``reco`` without a status).
    """
    kind = row["kind"]
    ts = _as_utc(row["ts"])
    if kind == "watch":
        return WatchEvent(ts, row["user_id"], row["movie_id"], int(row["minute"]))
    if kind == "rate":
        return RateEvent(ts, row["user_id"], row["movie_id"], _number(row["rating"]))
    if kind == "reco":
        if row["status"] is None:
            raise ValueError("a reco row without a status is a request, not a RecoEvent")
        # Rows of schema-v1 tables have no provenance fields; they read as absent.
        return RecoEvent(
            ts,
            row["user_id"],
            row["server"],
            int(row["status"]),
            list(row["items"] or []),
            float(row["latency_ms"]),
            request_id=row.get("request_id"),
            ab_variant=row.get("ab_variant"),
            model_version=row.get("model_version"),
        )
    raise ValueError(f"unknown event kind {kind!r}")


def events_from_table(table: pa.Table) -> Iterator[Event]:
    """Yield the events of a snapshot table, in row order (see :func:`event_from_row`)."""
    for row in table.to_pylist():
        yield event_from_row(row)
