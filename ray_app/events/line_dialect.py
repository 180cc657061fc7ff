"""The line dialect: one topic (default ``movielog``) of comma-separated access-log lines.

::

    <iso-time>,<user>,GET /data/m/<movie>/<minute>.mpg                          watch
    <iso-time>,<user>,GET /rate/<movie>=<rating>                                 rate
    <iso-time>,<user>,recommendation request <server>, status <code>, result: <m1>, <m2>, …, <n> ms

Quirks handled: movie ids are slugs (``the+green+mile+1999``, a trailing ``+``, non-ASCII such
as ``amélie+2001``) or integers; times carry 0–9 fractional-second digits (truncated to the
microsecond) and an optional ``Z``/``±HH:MM`` offset (naive means UTC); a trailing newline or
``\\r\\n`` is ignored. An empty result list is written ``result: , <n> ms`` and
``result: <n> ms`` is read the same way.

:func:`parse_line_batch` is vectorised with ``pyarrow.compute``: the only per-record Python
work is building messages for dead-lettered records.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ray_app.events import _vector as v
from ray_app.events.batch import ParsedBatch
from ray_app.events.model import (
    Event,
    ParseError,
    RateEvent,
    RecoEvent,
    ValidationRules,
    WatchEvent,
    event_from_row,
)

DEFAULT_TOPIC = "movielog"

_WATCH_RE = r"(?s)^GET /data/m/(?P<movie>[^/]*)/(?P<minute>[^/]*)\.mpg$"
_RATE_RE = r"(?s)^GET /rate/(?P<movie>[^=]*)=(?P<rating>.*)$"
# Greedy <items> so that the *last* ", " before "<n> ms" separates the latency; the whole
# "<items>, " part is optional so that "result: 12 ms" (no items) is accepted too.
_RECO_RE = (
    r"(?s)^recommendation request (?P<server>[^,]*), status (?P<status>[^,]*), "
    r"result: (?:(?P<items>.*), )?(?P<latency>[^,]*) ms$"
)

_WATCH_SHAPE = "'GET /data/m/<movie>/<minute>.mpg'"
_RATE_SHAPE = "'GET /rate/<movie>=<rating>'"
_RECO_SHAPE = "'recommendation request <server>, status <code>, result: <m1>, …, <n> ms'"
_EMPTY_ITEMS = pa.scalar([], pa.list_(pa.string()))


def _describe_request(request: str) -> str:
    if request.startswith("GET /data/m/"):
        return f"malformed watch request {v.show(request[4:])}, expected {_WATCH_SHAPE}"
    if request.startswith("GET /rate/"):
        return f"malformed rate request {v.show(request[4:])}, expected {_RATE_SHAPE}"
    if request.startswith("GET "):
        return f"unknown request path {v.show(request[4:])}"
    if request.startswith("recommendation request"):
        return f"malformed recommendation line, expected {_RECO_SHAPE}"
    return f"unknown request {v.show(request)}"


def _split_fields(text: pa.Array) -> tuple[pa.Array, pa.Array, pa.Array]:
    """``<time>,<user>,<request>`` → three arrays, null where a line has fewer than 3 fields."""
    # A literal split plus a gather is cheaper than a capturing regex over the whole line.
    parts = pc.split_pattern(text, ",", max_splits=2)
    complete = pc.fill_null(pc.equal(pc.list_value_length(parts), 3), False)
    missing = np.asarray(pc.invert(complete).to_numpy(zero_copy_only=False), dtype=bool)
    starts = parts.offsets.to_numpy()[:-1].astype(np.int64)
    values = parts.values
    fields = [values.take(pa.array(starts + k, mask=missing)) for k in range(3)]
    return fields[0], fields[1], fields[2]


def _split_items(items_text: pa.Array) -> pa.Array:
    lists = pc.split_pattern(items_text, ",")
    # Tolerate "1,2" and "1 , 2" as well as the canonical "1, 2".
    trimmed = pc.utf8_trim_whitespace(lists.values)
    lists = pa.ListArray.from_arrays(lists.offsets, trimmed, mask=lists.is_null())
    return pc.if_else(pc.equal(items_text, ""), _EMPTY_ITEMS, lists)


def parse_line_batch(
    values: Sequence[bytes | None] | pa.Array,
    *,
    topic: str,
    partitions: Sequence[int] | int,
    offsets: Sequence[int],
    rules: ValidationRules = ValidationRules(),
) -> ParsedBatch:
    """Parse a batch of line-dialect records into snapshot rows and dead letters.

    ``values`` are raw Kafka record values (``None`` for a tombstone); ``partitions`` is one
    partition per value or a single int; ``offsets`` one offset per value. Every input index
    lands in exactly one of ``good``/``dead``, each in input order. Never raises for bad
    *content*; raises ``ValueError`` only when the argument lengths disagree.
    """
    binary = v.as_binary(values)
    parts, offs = v.key_columns(len(binary), partitions, offsets)
    errors = v.RowErrors(len(binary))

    text = v.decode(binary, rules, errors, noun="line")
    errors.flag(pc.equal(text, ""), lambda i: "empty line")
    time_text, user, request = _split_fields(text)
    errors.flag(
        pc.is_null(request),
        lambda i: (
            "expected '<time>,<user>,<request>' but the line has "
            f"{v.value_at(text, i).count(',') + 1} comma-separated field(s)"
        ),
    )

    ts = v.parse_iso_time(time_text)
    errors.flag(
        pc.and_(pc.is_valid(time_text), pc.is_null(ts)),
        lambda i: f"unparseable time {v.show(v.value_at(time_text, i))}",
    )
    v.check_user_ids(user, rules, errors)

    watch = pc.extract_regex(request, _WATCH_RE)
    rate = pc.extract_regex(request, _RATE_RE)
    reco = pc.extract_regex(request, _RECO_RE)
    is_watch = pc.is_valid(watch)
    is_rate = pc.is_valid(rate)
    is_reco = pc.is_valid(reco)
    errors.flag(
        pc.and_(pc.is_valid(request), pc.invert(pc.or_(pc.or_(is_watch, is_rate), is_reco))),
        lambda i: _describe_request(v.value_at(request, i)),
    )

    movie = pc.coalesce(pc.struct_field(watch, "movie"), pc.struct_field(rate, "movie"))
    v.check_movie_ids(movie, errors)
    minute = v.parse_int(
        pc.struct_field(watch, "minute"), errors, "minute", lo=0, hi=v.INT32_MAX, negative=True
    )

    rating_text = pc.struct_field(rate, "rating")
    rating = v.parse_decimal(rating_text, errors, "rating")
    _check_rating(rating, rating_text, rules, errors)

    server = pc.struct_field(reco, "server")
    errors.flag(pc.equal(server, ""), lambda i: "empty server name")
    status = v.parse_int(pc.struct_field(reco, "status"), errors, "status", lo=0, hi=999)
    latency_text = pc.struct_field(reco, "latency")
    latency = v.parse_decimal(latency_text, errors, "latency")
    errors.flag(pc.less(latency, 0), lambda i: f"negative latency {v.value_at(latency_text, i)} ms")
    items = _split_items(pc.struct_field(reco, "items"))
    v.check_items(items, rules, errors)

    kind = pc.if_else(is_watch, "watch", pc.if_else(is_rate, "rate", "reco"))
    columns = {
        "kind": kind,
        "user_id": user,
        "movie_id": movie,
        "ts": ts,
        "minute": minute,
        "rating": rating,
        "status": status,
        "latency_ms": latency,
        "items": items,
        "server": server,
    }
    return v.assemble(errors, columns, raw=binary, topic=topic, partitions=parts, offsets=offs)


def _check_rating(
    rating: pa.Array, rating_text: pa.Array, rules: ValidationRules, errors: v.RowErrors
) -> None:
    bounds = f"[{v.show_number(rules.rating_min)}, {v.show_number(rules.rating_max)}]"
    errors.flag(
        pc.or_(pc.less(rating, rules.rating_min), pc.greater(rating, rules.rating_max)),
        lambda i: f"rating {v.value_at(rating_text, i)} outside {bounds}",
    )


def parse_line(value: bytes, *, rules: ValidationRules = ValidationRules()) -> Event:
    """Parse one line-dialect record, raising :class:`ParseError` with the dead-letter reason.

    A convenience for tests and tools; consumers should use :func:`parse_line_batch`.
    """
    batch = parse_line_batch([value], topic=DEFAULT_TOPIC, partitions=0, offsets=[0], rules=rules)
    if batch.dead.num_rows:
        raise ParseError(batch.dead.column("error")[0].as_py())
    return event_from_row(batch.good.to_pylist()[0])


def format_time(ts: datetime) -> str:
    """Render a datetime as the dialect writes it: UTC, naive, ``.ffffff`` only when needed.

    Trailing zeros of the fraction are dropped (``.12`` for 120 ms), as many producers do.
    """
    if not isinstance(ts, datetime):
        raise TypeError(f"ts must be a datetime, got {type(ts).__name__}")
    ts = ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
    text = (
        f"{ts.year:04d}-{ts.month:02d}-{ts.day:02d}T{ts.hour:02d}:{ts.minute:02d}:{ts.second:02d}"
    )
    if ts.microsecond:
        text += f".{ts.microsecond:06d}".rstrip("0")
    return text


def format_decimal(value: float) -> str:
    """Shortest text that reads back as the same number (``4`` for ``4.0``)."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise TypeError(f"expected a number, got {type(value).__name__}")
    if isinstance(value, int | np.integer):
        return str(int(value))
    if not np.isfinite(value):
        raise ValueError(f"cannot encode non-finite number {value!r}")
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _require_clean(value: str, what: str, forbidden: str) -> None:
    if value == "" or v.forbidden_char(value, forbidden):
        raise ValueError(
            f"cannot encode {what} {value!r} in the line dialect: it must be non-empty and "
            f"contain no whitespace, control characters or any of {forbidden!r}"
        )


def format_line(event: Event) -> str:
    """Encode an event as one line of the dialect (without a trailing newline).

    Raises ``ValueError`` for values the dialect cannot carry unambiguously (a comma in a user
    id, a slash in a movie id, …); values that are merely out of the validation rules' bounds
    are written as-is, so tests can produce dead letters on purpose.
    """
    _require_clean(event.user_id, "user id", ",")
    head = f"{format_time(event.ts)},{event.user_id},"
    if isinstance(event, WatchEvent):
        _require_clean(event.movie_id, "movie id", ",/=")
        return f"{head}GET /data/m/{event.movie_id}/{int(event.minute)}.mpg"
    if isinstance(event, RateEvent):
        _require_clean(event.movie_id, "movie id", ",/=")
        return f"{head}GET /rate/{event.movie_id}={format_decimal(event.rating)}"
    if isinstance(event, RecoEvent):
        _require_clean(event.server, "server", ",")
        for item in event.items:
            if item == "" or "," in item or item != item.strip():
                raise ValueError(f"cannot encode result item {item!r} in the line dialect")
        items = ", ".join(event.items)
        return (
            f"{head}recommendation request {event.server}, status {int(event.status)}, "
            f"result: {items}, {format_decimal(event.latency_ms)} ms"
        )
    raise TypeError(f"not an event: {type(event).__name__}")
