"""The JSON dialect: one topic per kind, one JSON object per Kafka record.

Topics are ``<prefix>.watch``, ``<prefix>.rate``, ``<prefix>.reco_requests`` and
``<prefix>.reco_responses``. Fields per kind, as :mod:`ray_app.events.records` defines them (the
models the published JSON Schemas are generated from; anything else is ignored, so producers
can add fields — the schema evolves additively)::

    watch           ts, user_id, movie_id, minute
    rate            ts, user_id, movie_id, rating
    reco_requests   ts, user_id            [server]
    reco_responses  ts, user_id, server, status, items, latency_ms
                    [request_id, ab_variant, model_version]   (snapshot schema v2)

``ts`` is epoch seconds (integer, decimal or exponent form) or an ISO-8601 string; ids may be
JSON numbers or strings. Decimal epochs are read digit-exactly and truncated to the
microsecond. Both reco kinds become snapshot rows of kind ``reco``; a request row has a null
``status`` (and no ``items``/``latency_ms``), which is how readers tell the two apart. A
``reco_responses`` record without the optional fields (schema v1) reads with them null.

Records are read by :func:`ray_app.events.json_reader.read_records` (vectorised, with a
per-record fallback that names what is wrong) and validated with the same array kernels as the
line dialect.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final, get_args

import pyarrow as pa
import pyarrow.compute as pc

from ray_app.events import _vector as v
from ray_app.events.batch import ParsedBatch
from ray_app.events.json_reader import read_records
from ray_app.events.line_dialect import format_decimal
from ray_app.events.model import (
    Event,
    ParseError,
    RateEvent,
    RecoEvent,
    ValidationRules,
    WatchEvent,
    event_from_row,
)
from ray_app.events.records import JsonKind, list_fields, optional_fields, required_fields
from ray_app.events.schema import RECO_PROVENANCE_FIELDS

JSON_KINDS: Final[tuple[str, ...]] = get_args(JsonKind)
DEFAULT_PREFIX = "events"

# Snapshot ``kind`` for each JSON kind.
SNAPSHOT_KIND: Final[dict[str, str]] = {
    "watch": "watch",
    "rate": "rate",
    "reco_requests": "reco",
    "reco_responses": "reco",
}
_REQUIRED: Final = {kind: required_fields(kind) for kind in JSON_KINDS}
_OPTIONAL: Final = {kind: optional_fields(kind) for kind in JSON_KINDS}
_CANONICAL_INT_RE = re.compile(r"0|[1-9][0-9]{0,14}")
_MICROSECOND = timedelta(microseconds=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def topic_for(prefix: str, kind: str) -> str:
    """The topic carrying ``kind`` records under ``prefix`` (``events.watch``)."""
    _check_kind(kind)
    return f"{prefix}.{kind}"


def kind_for_topic(prefix: str, topic: str) -> JsonKind:
    """The JSON kind a topic under ``prefix`` carries; ``ValueError`` if it is not one of ours."""
    by_topic: dict[str, JsonKind] = {f"{prefix}.{k}": k for k in get_args(JsonKind)}
    if topic in by_topic:
        return by_topic[topic]
    expected = ", ".join(f"{prefix}.{k}" for k in JSON_KINDS)
    raise ValueError(f"topic {topic!r} is not a JSON event topic; expected one of {expected}")


def _check_kind(kind: str) -> None:
    if kind not in JSON_KINDS:
        raise ValueError(f"unknown JSON event kind {kind!r}; expected one of {list(JSON_KINDS)}")


def _read_schema(kind: str) -> pa.Schema:
    lists = list_fields(kind)
    names = _REQUIRED[kind] + _OPTIONAL[kind]
    return pa.schema([(n, pa.list_(pa.string()) if n in lists else pa.string()) for n in names])


def _constant(message: str) -> Callable[[int], str]:
    return lambda i: message


def parse_json_batch(
    values: Sequence[bytes | None] | pa.Array,
    *,
    kind: str,
    topic: str,
    partitions: Sequence[int] | int,
    offsets: Sequence[int],
    rules: ValidationRules = ValidationRules(),
) -> ParsedBatch:
    """Parse a batch of JSON records of one ``kind`` into snapshot rows and dead letters.

    ``kind`` is one of :data:`JSON_KINDS` (see :func:`kind_for_topic`). Every input index
    lands in exactly one of ``good``/``dead``, each in input order. Raises ``ValueError`` only
    for bad arguments (unknown kind, mismatched lengths), never for bad content.
    """
    _check_kind(kind)
    binary = v.as_binary(values)
    parts, offs = v.key_columns(len(binary), partitions, offsets)
    errors = v.RowErrors(len(binary))
    text = v.decode(binary, rules, errors, noun="record")
    errors.flag(pc.equal(text, ""), lambda i: "empty record")

    table = read_records(text, _read_schema(kind), errors)
    for name in _REQUIRED[kind]:
        column = table.column(name)
        errors.flag(pc.is_null(column), _constant(f"missing field {name!r}"))

    ts_text = table.column("ts")
    ts, out_of_range = v.parse_epoch_or_iso_time(ts_text)
    errors.flag(
        out_of_range,
        lambda i: (
            f"ts {v.show(v.value_at(ts_text, i))} out of range: epoch seconds must fall in "
            "years 1–9999 (is it in milliseconds?)"
        ),
    )
    errors.flag(
        pc.and_(pc.is_valid(ts_text), pc.is_null(ts)),
        lambda i: f"unparseable time {v.show(v.value_at(ts_text, i))}",
    )
    user = table.column("user_id")
    v.check_user_ids(user, rules, errors)

    n = len(binary)
    columns: dict[str, pa.Array | pa.ChunkedArray] = {
        "kind": pa.repeat(pa.scalar(SNAPSHOT_KIND[kind]), n),
        "user_id": user,
        "ts": ts,
    }
    if kind in ("watch", "rate"):
        movie = table.column("movie_id")
        v.check_movie_ids(movie, errors)
        columns["movie_id"] = movie
    if kind == "watch":
        columns["minute"] = v.parse_int(
            table.column("minute"), errors, "minute", lo=0, hi=v.INT32_MAX, negative=True
        )
    if kind == "rate":
        rating_text = table.column("rating")
        rating = v.parse_decimal(rating_text, errors, "rating")
        bounds = f"[{v.show_number(rules.rating_min)}, {v.show_number(rules.rating_max)}]"
        errors.flag(
            pc.or_(pc.less(rating, rules.rating_min), pc.greater(rating, rules.rating_max)),
            lambda i: f"rating {v.value_at(rating_text, i)} outside {bounds}",
        )
        columns["rating"] = rating
    if kind in ("reco_requests", "reco_responses"):
        server = table.column("server")
        errors.flag(pc.equal(server, ""), lambda i: "empty server name")
        columns["server"] = server
    if kind == "reco_responses":
        columns["status"] = v.parse_int(table.column("status"), errors, "status", lo=0, hi=999)
        latency_text = table.column("latency_ms")
        latency = v.parse_decimal(latency_text, errors, "latency")
        errors.flag(
            pc.less(latency, 0),
            lambda i: f"negative latency {v.value_at(latency_text, i)} ms",
        )
        columns["latency_ms"] = latency
        items = table.column("items").combine_chunks()
        v.check_items(items, rules, errors)
        columns["items"] = items
        # Optional and free-form: any string (or number) is kept as written, absent is null.
        columns.update({name: table.column(name) for name in RECO_PROVENANCE_FIELDS})
    return v.assemble(errors, columns, raw=binary, topic=topic, partitions=parts, offsets=offs)


def parse_json(value: bytes, *, kind: str, rules: ValidationRules = ValidationRules()) -> Event:
    """Parse one JSON record, raising :class:`ParseError` with the dead-letter reason.

    A convenience for tests and tools; ``reco_requests`` records have no :class:`Event` form
    and raise ``ValueError``.
    """
    batch = parse_json_batch(
        [value],
        kind=kind,
        topic=topic_for(DEFAULT_PREFIX, kind),
        partitions=0,
        offsets=[0],
        rules=rules,
    )
    if batch.dead.num_rows:
        raise ParseError(batch.dead.column("error")[0].as_py())
    return event_from_row(batch.good.to_pylist()[0])


def _json_id(value: str) -> int | str:
    # Ids are strings at the edges, but most producers send small integers as numbers;
    # do the same when it is lossless (no leading zeros, exact in a float64).
    return int(value) if _CANONICAL_INT_RE.fullmatch(value) else value


def _epoch_text(ts: datetime) -> str:
    ts = ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts
    micros = (ts - _EPOCH) // _MICROSECOND
    sign = "-" if micros < 0 else ""
    whole, frac = divmod(abs(micros), 1_000_000)
    return f"{sign}{whole}" + (f".{frac:06d}".rstrip("0") if frac else "")


def json_kind_of(event: Event) -> JsonKind:
    """The JSON kind (and so the topic suffix) an event is published under."""
    if isinstance(event, WatchEvent):
        return "watch"
    if isinstance(event, RateEvent):
        return "rate"
    if isinstance(event, RecoEvent):
        return "reco_responses"
    raise TypeError(f"not an event: {type(event).__name__}")


def format_json(event: Event) -> bytes:
    """Encode an event as one JSON record (UTF-8, no trailing newline).

    A reco event's schema-v2 fields (``request_id``, ``ab_variant``, ``model_version``) are
    written when set and left out when ``None``. ``ts`` is written as exact decimal epoch seconds (``1730000000.123456``) so it reads back
    to the same microsecond; integral ids are written as JSON numbers.
    """
    body: dict[str, Any] = {"user_id": _json_id(event.user_id)}
    if isinstance(event, WatchEvent):
        body |= {"movie_id": _json_id(event.movie_id), "minute": int(event.minute)}
    elif isinstance(event, RateEvent):
        body |= {"movie_id": _json_id(event.movie_id), "rating": event.rating}
        format_decimal(event.rating)  # rejects NaN/inf/non-numbers with a clear error
    elif isinstance(event, RecoEvent):
        format_decimal(event.latency_ms)
        body |= {
            "server": event.server,
            "status": int(event.status),
            "items": [_json_id(item) for item in event.items],
            "latency_ms": event.latency_ms,
        }
        provenance = {
            "request_id": event.request_id,
            "ab_variant": event.ab_variant,
            "model_version": event.model_version,
        }
        body |= {name: value for name, value in provenance.items() if value is not None}
    else:
        raise TypeError(f"not an event: {type(event).__name__}")
    encoded = json.dumps(body, ensure_ascii=False, allow_nan=False)
    # ts goes first and is spliced in as raw text: json.dumps would round it through a float.
    return ('{"ts": ' + _epoch_text(event.ts) + ", " + encoded[1:]).encode("utf-8")
