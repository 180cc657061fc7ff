"""Reading a batch of JSON records into an all-string Arrow table, vectorised.

How :func:`read_records` stays vectorised: bare numbers in the fields we read are quoted with
one regex pass (so ``7`` and ``"7"`` read alike and numbers keep their exact text), the records
are newline-joined and read by ``pyarrow.json`` with an all-string schema. When ``pyarrow.json``
rejects the joined text (a malformed record, a boolean id, duplicate keys…) the batch is halved
until the failing records are isolated in small chunks; only those, plus records that do not
look like one single-line object (pretty-printed, ``null``, arrays…), are decoded one by one
with :mod:`json`, to say what is wrong or to re-encode them canonically for the same reader.
Either path yields the same rows for the same record.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from ray_app.events import _vector as v

# A JSON number after one of our keys, or directly inside an array. Turning a number token into
# a string token with the same text keeps a record's structure; a match *inside* a string
# makes the record invalid (the inserted quote ends the string right before a digit), so it is
# isolated and decoded by the json module instead; matches under unknown keys only touch
# ignored fields. The one way it could make invalid JSON valid, a numeric object key after a
# comma, is screened out first (_NUMERIC_KEY_RE).
_NUMBER = r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?"
_NUMERIC_KEY_RE = r",\s*-?[0-9][0-9.eE+-]*\s*:"
_MIN_BISECT = 16


def _is_list(schema: pa.Schema, name: str) -> bool:
    return pa.types.is_list(schema.field(name).type)


def _quote_numbers_re(schema: pa.Schema) -> str:
    scalars = "|".join(n for n in schema.names if not _is_list(schema, n))
    return r'((?:"(?:' + scalars + r')"\s*:|[\[,])\s*)(' + _NUMBER + ")"


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
        if _is_list(schema, name):
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


def read_records(text: pa.Array, schema: pa.Schema, errors: v.RowErrors) -> pa.Table:
    """Read every still-good record of ``text`` with ``schema`` (string and list-of-string
    fields); returns a full-length table, all-null in rows that are or become dead."""
    n = len(text)
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
            text.take(pa.array(fast_rows)), _quote_numbers_re(schema), r'\1"\2"'
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
