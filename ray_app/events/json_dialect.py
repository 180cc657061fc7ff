"""The JSON dialect: one topic per kind, one JSON object per Kafka record.

Topics are ``<prefix>.watch``, ``<prefix>.rate``, ``<prefix>.reco_requests`` and
``<prefix>.reco_responses``. Fields per kind (anything else is ignored, so producers can add
fields — the schema evolves additively)::

    watch           ts, user_id, movie_id, minute
    rate            ts, user_id, movie_id, rating
    reco_requests   ts, user_id            [server]
    reco_responses  ts, user_id, server, status, items, latency_ms
                    [request_id, variant, model, model_version — accepted, not stored]

``ts`` is epoch seconds (integer, decimal or exponent form) or an ISO-8601 string; ids may be
JSON numbers or strings. Decimal epochs are read digit-exactly and truncated to the
microsecond. Both reco kinds become snapshot rows of kind ``reco``; a request row has a null
``status`` (and no ``items``/``latency_ms``), which is how readers tell the two apart.

How :func:`parse_json_batch` stays vectorised: bare numbers in the fields we read are quoted
with one regex pass (so ``7`` and ``"7"`` read alike and numbers keep their exact text), the
records are newline-joined and read by ``pyarrow.json`` with an all-string schema, and the
values are validated with the same array kernels as the line dialect. When ``pyarrow.json``
rejects the joined text (a malformed record, a boolean id, duplicate keys…) the batch is
halved until the failing records are isolated in small chunks; only those, plus records that
do not look like one single-line object (pretty-printed, ``null``, arrays…), are decoded one by
one with :mod:`json`, to say what is wrong or to re-encode them canonically for the same
reader. Either path yields the same rows for the same record.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal, get_args

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from ray_app.events import _vector as v
from ray_app.events.batch import ParsedBatch
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

JsonKind = Literal["watch", "rate", "reco_requests", "reco_responses"]
JSON_KINDS: Final[tuple[str, ...]] = get_args(JsonKind)
DEFAULT_PREFIX = "events"

# Snapshot ``kind`` for each JSON kind.
SNAPSHOT_KIND: Final[dict[str, str]] = {
    "watch": "watch",
    "rate": "rate",
    "reco_requests": "reco",
    "reco_responses": "reco",
}
_REQUIRED: Final[dict[str, tuple[str, ...]]] = {
    "watch": ("ts", "user_id", "movie_id", "minute"),
    "rate": ("ts", "user_id", "movie_id", "rating"),
    "reco_requests": ("ts", "user_id"),
    "reco_responses": ("ts", "user_id", "server", "status", "items", "latency_ms"),
}
_OPTIONAL: Final[dict[str, tuple[str, ...]]] = {"reco_requests": ("server",)}
_LIST_FIELDS = frozenset({"items"})
_SCALAR_FIELDS = ("ts", "user_id", "movie_id", "minute", "rating", "server", "status", "latency_ms")

# A JSON number after one of our keys, or directly inside an array. Turning a number token into
# a string token with the same text keeps a record's structure; a match *inside* a string
# makes the record invalid (the inserted quote ends the string right before a digit), so it is
# isolated and decoded by the json module instead; matches under unknown keys only touch
# ignored fields. The one way it could make invalid JSON valid, a numeric object key after a
# comma, is screened out first (_NUMERIC_KEY_RE).
_NUMBER = r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?"
_QUOTE_NUMBERS_RE = r'((?:"(?:' + "|".join(_SCALAR_FIELDS) + r')"\s*:|[\[,])\s*)(' + _NUMBER + ")"
_NUMERIC_KEY_RE = r",\s*-?[0-9][0-9.eE+-]*\s*:"
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
    names = _REQUIRED[kind] + _OPTIONAL.get(kind, ())
    return pa.schema(
        [(n, pa.list_(pa.string()) if n in _LIST_FIELDS else pa.string()) for n in names]
    )


def _read_lines(lines: pa.Array, schema: pa.Schema) -> pa.Table:
    """Read newline-free JSON texts, one object each, with ``pyarrow.json``.

    Callers guarantee every text starts with ``{``: pyarrow (seen with 26.0) segfaults when a
    block *begins* with a top-level ``null``, and blocks begin at a record boundary.
    """
    joined = pc.binary_join(
        pa.ListArray.from_arrays(pa.array([0, len(lines)], pa.int32()), lines), "\n"
    )[0]
    longest = pc.max(pc.binary_length(lines)).as_py() or 0
    table = pj.read_json(
        pa.BufferReader(joined.as_buffer()),
        # A record must never straddle two blocks.
        read_options=pj.ReadOptions(use_threads=False, block_size=max(1 << 20, 2 * longest + 2)),
        parse_options=pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore"),
    )
    if table.num_rows != len(lines):
        raise ValueError(f"read {table.num_rows} objects from {len(lines)} records")
    return table.select(schema.names)


def _describe_type(value: object) -> str:
    # Numbers are decoded to str (to keep their exact text), so "str" here may be either.
    if value is None or value is True or value is False:
        return json.dumps(value)
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    return "a string or number"


def _canonical(text: str, schema: pa.Schema) -> tuple[str | None, str | None]:
    """Decode one record with :mod:`json`: ``(canonical_line, None)`` or ``(None, reason)``."""
    try:
        # Numbers keep their exact text, like on the fast path. NaN/Infinity are accepted as
        # pyarrow.json accepts them (and Python producers emit them); in a field we read they
        # are then just text that fails that field's validation.
        obj = json.loads(text, parse_int=str, parse_float=str, parse_constant=str)
    except json.JSONDecodeError as exc:
        return None, f"invalid JSON: {exc.msg} at position {exc.pos}"
    except (ValueError, RecursionError) as exc:
        return None, f"invalid JSON: {exc}"
    if not isinstance(obj, dict):
        got = _describe_type(obj)
        if isinstance(obj, str):
            got = "a string" if text.lstrip().startswith('"') else "a number"
        return None, f"expected a JSON object, got {got}"
    out: dict[str, Any] = {}
    for name in schema.names:
        value = obj.get(name)
        if value is None:
            continue
        if name in _LIST_FIELDS:
            if not isinstance(value, list):
                return None, f"field {name!r} must be an array, got {_describe_type(value)}"
            for pos, item in enumerate(value):
                if item is not None and not isinstance(item, str):
                    return None, (
                        f"{name}[{pos}] must be a string or number, got {_describe_type(item)}"
                    )
        elif not isinstance(value, str):
            return None, f"field {name!r} must be a string or number, got {_describe_type(value)}"
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            return None, f"field {name!r} contains an unpaired UTF-16 surrogate escape"
        out[name] = value
    return json.dumps(out, ensure_ascii=False), None


def _read_records(text: pa.Array, kind: str, errors: v.RowErrors) -> pa.Table:
    """Read every still-good record; return a full-length table (null rows where dead)."""
    n = len(text)
    schema = _read_schema(kind)
    candidates = np.flatnonzero(errors.ok)
    # The fast path takes only single-line texts that look like one object: a raw newline is
    # legal JSON whitespace but would split a record in two once joined, and anything not
    # starting with "{" (a top-level null in particular, see _read_lines) is decoded by json.
    one_object = pc.fill_null(pc.match_substring_regex(text, r"^\{[^\r\n]*\}$"), False)
    # Quoting would turn a numeric object key (invalid JSON) into a valid string key; keep the
    # outcome independent of which path a record takes by sending those to json, which refuses.
    numeric_key = pc.fill_null(pc.match_substring_regex(text, _NUMERIC_KEY_RE), False)
    fast = pc.and_(one_object, pc.invert(numeric_key))
    fast_np = np.asarray(fast.to_numpy(zero_copy_only=False), dtype=bool)
    fast_rows = candidates[fast_np[candidates]]
    slow_rows = candidates[~fast_np[candidates]]

    pieces: list[pa.Table] = []
    placed: list[np.ndarray] = []
    if len(fast_rows):
        quoted = pc.replace_substring_regex(
            text.take(pa.array(fast_rows)), _QUOTE_NUMBERS_RE, r'\1"\2"'
        )
        for rows, table in _read_bisecting(quoted, fast_rows, schema):
            if table is None:
                slow_rows = np.concatenate([slow_rows, rows])
            else:
                pieces.append(table)
                placed.append(rows)

    reasons: dict[int, str] = {}
    if len(slow_rows):
        good_rows: list[int] = []
        lines: list[str] = []
        for row, record in zip(
            slow_rows.tolist(), text.take(pa.array(slow_rows)).to_pylist(), strict=True
        ):
            line, reason = _canonical(record, schema)
            if line is None:
                reasons[row] = reason or "invalid JSON"
            else:
                good_rows.append(row)
                lines.append(line)
        if good_rows:
            table, bad = _read_canonical(lines, schema)
            for pos, reason in bad.items():
                reasons[good_rows[pos]] = reason
            keep = np.array([p not in bad for p in range(len(good_rows))], dtype=bool)
            pieces.append(table)
            placed.append(np.asarray(good_rows, dtype=np.int64)[keep])

    dead_mask = np.zeros(n, dtype=bool)
    dead_mask[list(reasons)] = True
    errors.flag(dead_mask, lambda i: reasons[i])

    # Scatter the pieces back to input order; rows in no piece become all-null.
    position = np.full(n, -1, dtype=np.int64)
    start = 0
    for rows in placed:
        position[rows] = np.arange(start, start + len(rows))
        start += len(rows)
    combined = pa.concat_tables(pieces).combine_chunks() if pieces else schema.empty_table()
    take = pa.array(position, mask=position < 0)
    return combined.take(take)


_MIN_BISECT = 16


def _read_bisecting(
    lines: pa.Array, rows: np.ndarray, schema: pa.Schema
) -> list[tuple[np.ndarray, pa.Table | None]]:
    """Read with ``pyarrow.json``, halving whatever fails so one bad record costs a few
    re-reads rather than the whole batch. Small chunks that still fail come back with
    ``None``, for the per-record path to diagnose.
    """
    out: list[tuple[np.ndarray, pa.Table | None]] = []
    pending = [(0, len(rows))]
    while pending:
        lo, hi = pending.pop()
        try:
            out.append((rows[lo:hi], _read_lines(lines.slice(lo, hi - lo), schema)))
        except (pa.ArrowInvalid, ValueError):
            if hi - lo <= _MIN_BISECT:
                out.append((rows[lo:hi], None))
            else:
                mid = (lo + hi) // 2
                pending += [(mid, hi), (lo, mid)]
    return out


def _read_canonical(lines: list[str], schema: pa.Schema) -> tuple[pa.Table, dict[int, str]]:
    """Read re-encoded records; isolate any that ``pyarrow.json`` still refuses (never seen)."""
    array = pa.array(lines, pa.string())
    try:
        return _read_lines(array, schema), {}
    except (pa.ArrowInvalid, ValueError):
        pass
    tables: list[pa.Table] = []
    bad: dict[int, str] = {}
    for pos in range(len(lines)):
        try:
            tables.append(_read_lines(array.slice(pos, 1), schema))
        except (pa.ArrowInvalid, ValueError) as exc:
            bad[pos] = f"invalid JSON: {exc}"
    return (pa.concat_tables(tables) if tables else schema.empty_table()), bad


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

    table = _read_records(text, kind, errors)
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

    ``ts`` is written as exact decimal epoch seconds (``1730000000.123456``) so it reads back
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
    else:
        raise TypeError(f"not an event: {type(event).__name__}")
    encoded = json.dumps(body, ensure_ascii=False, allow_nan=False)
    # ts goes first and is spliced in as raw text: json.dumps would round it through a float.
    return ('{"ts": ' + _epoch_text(event.ts) + ", " + encoded[1:]).encode("utf-8")
