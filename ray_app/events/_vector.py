"""Vectorised building blocks shared by the line and JSON parsers.

Every check works on whole Arrow arrays. A row's *first* failure is recorded in
:class:`RowErrors` as a small integer code; the human-readable message is only built for the
(rare) dead rows, from the same arrays, so there is one source of truth for what went wrong.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ray_app.events.batch import ParsedBatch
from ray_app.events.model import ValidationRules
from ray_app.events.schema import DEAD_LETTER_SCHEMA, SNAPSHOT_SCHEMA

INT32_MAX = 2**31 - 1

# Matches exactly the well-formed UTF-8 byte sequences (no overlongs, no surrogates, nothing
# above U+10FFFF). On a *binary* array Arrow runs RE2 in Latin-1 mode, so each \xNN below is
# one byte. Only used when the cheap whole-array cast has already failed.
_UTF8_RE = (
    r"^(?:[\x00-\x7F]|[\xC2-\xDF][\x80-\xBF]|\xE0[\xA0-\xBF][\x80-\xBF]"
    r"|[\xE1-\xEC\xEE\xEF][\x80-\xBF]{2}|\xED[\x80-\x9F][\x80-\xBF]"
    r"|\xF0[\x90-\xBF][\x80-\xBF]{2}|[\xF1-\xF3][\x80-\xBF]{3}|\xF4[\x80-\x8F][\x80-\xBF]{2})*$"
)

# 0–9 fractional digits, optional Z or ±HH[:MM] offset; a space separator is accepted too
# because some producers log `str(datetime)`. Few capture groups: RE2 submatch extraction is
# the dominant cost of time parsing, the offset is taken apart separately (and rarely).
_ISO_TIME_RE = (
    r"^(?P<base>[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2})"
    r"(?:\.(?P<frac>[0-9]{0,9}))?(?P<tz>[Zz]|[+-][0-9]{2}(?::?[0-9]{2})?)?$"
)
_OFFSET_RE = r"^(?P<sign>[+-])(?P<oh>[0-9]{2}):?(?P<om>[0-9]{2})?$"
_INT_RE = r"^-?[0-9]+$"
_DECIMAL_RE = r"^-?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?$"
_EPOCH_RE = r"^(?P<sign>-?)(?P<whole>[0-9]+)(?:\.(?P<frac>[0-9]*))?$"
_EPOCH_EXP_RE = r"^-?[0-9]+(?:\.[0-9]+)?[eE][+-]?[0-9]+$"

# Movie ids travel inside URL paths and comma-separated lists, so these characters cannot be
# part of one; user ids only sit between commas. Both dialects apply the same rule so that any
# valid event can be re-encoded in the other dialect.
_MOVIE_ID_OK_RE = r"^[^\s\p{Z}\p{Cc},/=]+$"
_USER_ID_OK_RE = r"^[^\s\p{Z}\p{Cc},]+$"
_NUMERIC_USER_RE = r"^[0-9]+$"

# Datetime range Python can represent, in epoch seconds (0001-01-01 .. 9999-12-31T23:59:59).
EPOCH_MIN_S = -62_135_596_800
EPOCH_MAX_S = 253_402_300_799


def show(value: object, limit: int = 60) -> str:
    """Quote a value for an error message, cut to ``limit`` characters."""
    text = value if isinstance(value, str) else str(value)
    if len(text) > limit:
        text = text[:limit] + "…"
    return repr(text)


def show_number(value: float) -> str:
    """Render a rule bound the way a person writes it (``5`` not ``5.0``)."""
    return str(int(value)) if float(value).is_integer() else str(value)


def _bool_mask(mask: pa.Array | pa.ChunkedArray | np.ndarray) -> np.ndarray:
    if isinstance(mask, np.ndarray):
        return mask.astype(bool, copy=False)
    return np.asarray(pc.fill_null(mask, False).to_numpy(zero_copy_only=False), dtype=bool)


class RowErrors:
    """First-failure-wins error codes for ``n`` rows, with lazily built messages."""

    def __init__(self, n: int) -> None:
        self.code = np.zeros(n, dtype=np.int32)
        self._describe: list[Callable[[int], str]] = []

    def flag(
        self, mask: pa.Array | pa.ChunkedArray | np.ndarray, describe: Callable[[int], str]
    ) -> None:
        """Mark rows where ``mask`` is true (null counts as false) unless already failed."""
        hit = _bool_mask(mask) & (self.code == 0)
        if hit.any():
            self._describe.append(describe)
            self.code[hit] = len(self._describe)

    @property
    def ok(self) -> np.ndarray:
        """Boolean mask of rows with no failure so far."""
        return self.code == 0

    def message(self, row: int) -> str:
        """The dead-letter reason for a failed row."""
        try:
            return self._describe[int(self.code[row]) - 1](row)
        except Exception as exc:  # a message builder must never lose the record
            return f"invalid record ({type(exc).__name__} while describing it)"


def value_at(array: pa.Array | pa.ChunkedArray, row: int) -> Any:
    """The Python value of one element (used only to describe dead rows)."""
    return array[row].as_py()


def as_binary(values: Sequence[bytes | None] | pa.Array | pa.ChunkedArray) -> pa.Array:
    """Input records as one binary array (nulls for ``None``)."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if isinstance(values, pa.Array):
        return values if values.type == pa.binary() else values.cast(pa.binary())
    return pa.array(values, type=pa.binary())


def key_columns(
    n: int, partitions: Sequence[int] | int | np.ndarray, offsets: Sequence[int] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Validate and broadcast the Kafka coordinates of a batch."""
    offs = np.asarray(offsets, dtype=np.int64)
    if offs.shape != (n,):
        raise ValueError(f"got {n} values but {offs.size} offsets; pass one offset per value")
    if isinstance(partitions, int | np.integer):
        parts = np.full(n, int(partitions), dtype=np.int32)
    else:
        parts = np.asarray(partitions, dtype=np.int32)
        if parts.shape != (n,):
            raise ValueError(
                f"got {n} values but {parts.size} partitions; pass one partition per value "
                "or a single int"
            )
    return parts, offs


def _utf8_reason(raw: bytes) -> str:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return (
            f"not valid UTF-8: {exc.reason} (byte 0x{raw[exc.start]:02x} at position {exc.start})"
        )
    return "not valid UTF-8"


def decode(
    binary: pa.Array, rules: ValidationRules, errors: RowErrors, *, noun: str = "record"
) -> pa.Array:
    """Flag null, oversized and non-UTF-8 records; return the rest as a trimmed string array."""
    errors.flag(binary.is_null(), lambda i: "None value")
    sizes = pc.binary_length(binary)
    limit = rules.max_line_bytes
    errors.flag(
        pc.greater(sizes, limit),
        lambda i: f"{noun} is {value_at(sizes, i)} bytes, over max_line_bytes={limit}",
    )
    # Oversized records are dropped before decoding so one huge value can't blow up the work.
    ok = errors.ok
    usable = binary if ok.all() else pc.if_else(pa.array(ok), binary, pa.scalar(None, pa.binary()))
    try:
        text = usable.cast(pa.string())  # validates UTF-8 for the whole array at once
    except pa.ArrowInvalid:
        valid = pc.match_substring_regex(usable, _UTF8_RE)
        errors.flag(pc.invert(valid), lambda i: _utf8_reason(value_at(binary, i)))
        text = pc.if_else(valid, usable, pa.scalar(None, pa.binary())).cast(pa.string())
    # Kafka producers often keep the trailing newline of a log line.
    return pc.utf8_trim_whitespace(text)


def _lpad0(array: pa.Array) -> pa.Array:
    # Absent optional regex groups come back as ""; make them "0" so they cast to 0.
    return pc.utf8_lpad(array, width=1, padding="0")


def parse_iso_time(text: pa.Array) -> pa.Array:
    """ISO-8601 strings → ``timestamp[us, UTC]``; null where unparseable.

    Fractional seconds may have 0–9 digits: they are right-padded / truncated to 6, so
    nanoseconds beyond the microsecond are truncated (not rounded). Naive times are UTC.
    """
    parts = pc.extract_regex(text, _ISO_TIME_RE)
    base = pc.struct_field(parts, "base")
    if pc.any(pc.match_substring(base, " ")).as_py():
        base = pc.replace_substring(base, " ", "T")
    seconds = pc.strptime(base, format="%Y-%m-%dT%H:%M:%S", unit="s", error_is_null=True)
    # strptime normalises Feb 30 to Mar 1 and 10:11:60 to 10:12:00; reject instead.
    day_ok = pc.equal(pc.day(seconds), pc.utf8_slice_codeunits(base, 8, 10).cast(pa.int64()))
    sec_ok = pc.equal(pc.second(seconds), pc.utf8_slice_codeunits(base, 17, 19).cast(pa.int64()))
    frac = pc.utf8_slice_codeunits(
        pc.utf8_rpad(pc.struct_field(parts, "frac"), width=6, padding="0"), 0, 6
    )
    total = pc.add(pc.multiply(seconds.cast(pa.int64()), 1_000_000), frac.cast(pa.int64()))
    ok = pc.and_(day_ok, sec_ok)

    tz = pc.struct_field(parts, "tz")
    has_offset = pc.and_(pc.not_equal(tz, ""), pc.not_equal(pc.utf8_lower(tz), "z"))
    if pc.any(has_offset).as_py():
        offset = pc.extract_regex(tz, _OFFSET_RE)
        oh = _lpad0(pc.struct_field(offset, "oh")).cast(pa.int64())
        om = _lpad0(pc.struct_field(offset, "om")).cast(pa.int64())
        offset_s = pc.add(pc.multiply(oh, 3600), pc.multiply(om, 60))
        offset_s = pc.if_else(
            pc.equal(pc.struct_field(offset, "sign"), "-"), pc.negate(offset_s), offset_s
        )
        offset_ok = pc.and_(pc.less_equal(oh, 23), pc.less_equal(om, 59))
        total = pc.if_else(has_offset, pc.subtract(total, pc.multiply(offset_s, 1_000_000)), total)
        ok = pc.and_(ok, pc.or_kleene(pc.invert(has_offset), offset_ok))
    total = pc.if_else(ok, total, pa.scalar(None, pa.int64()))
    return total.cast(pa.timestamp("us", tz="UTC"))


def parse_epoch_or_iso_time(text: pa.Array) -> tuple[pa.Array, pa.Array]:
    """JSON ``ts``: epoch seconds (int, decimal or exponent form) or an ISO string.

    Returns ``(timestamps, out_of_range)``: timestamps are null where unparseable or out of
    range, and ``out_of_range`` marks numeric values outside years 1–9999 (likely epoch ms).
    Decimal epochs are read digit-exactly and truncated to the microsecond; the exponent form
    goes through float64.
    """
    epoch = pc.extract_regex(text, _EPOCH_RE)
    whole_text = pc.struct_field(epoch, "whole")
    # 12 digits cover years 1–9999; longer values are out of range and must not overflow.
    whole = pc.if_else(
        pc.less_equal(pc.utf8_length(whole_text), 12), whole_text, pa.scalar(None, pa.string())
    ).cast(pa.int64())
    frac = pc.utf8_slice_codeunits(
        pc.utf8_rpad(pc.struct_field(epoch, "frac"), width=6, padding="0"), 0, 6
    ).cast(pa.int64())
    magnitude = pc.add(pc.multiply(whole, 1_000_000), frac)
    negative = pc.equal(pc.struct_field(epoch, "sign"), "-")
    exact_us = pc.if_else(negative, pc.negate(magnitude), magnitude)

    is_exp = pc.match_substring_regex(text, _EPOCH_EXP_RE)
    as_float = pc.if_else(is_exp, text, pa.scalar(None, pa.string())).cast(pa.float64())
    # Bound before converting so the int64 cast can never overflow.
    float_ok = pc.and_(
        pc.greater_equal(as_float, EPOCH_MIN_S), pc.less_equal(as_float, EPOCH_MAX_S + 1)
    )
    float_us = pc.if_else(
        float_ok, pc.round(pc.multiply(as_float, 1e6)), pa.scalar(None, pa.float64())
    ).cast(pa.int64())

    numeric_us = pc.coalesce(exact_us, float_us)
    in_range = pc.and_(
        pc.greater_equal(numeric_us, EPOCH_MIN_S * 1_000_000),
        pc.less(numeric_us, (EPOCH_MAX_S + 1) * 1_000_000),
    )
    is_numeric = pc.or_(pc.is_valid(epoch), is_exp)
    out_of_range = pc.and_(is_numeric, pc.invert(pc.fill_null(in_range, False)))
    numeric_ts = pc.if_else(in_range, numeric_us, pa.scalar(None, pa.int64())).cast(
        pa.timestamp("us", tz="UTC")
    )
    iso_ts = parse_iso_time(pc.if_else(is_numeric, pa.scalar(None, pa.string()), text))
    return pc.coalesce(numeric_ts, iso_ts), out_of_range


def forbidden_char(value: str, extra: str) -> str:
    """The first character of ``value`` that an id may not contain, or "" if none."""
    for ch in value:
        if ch in extra or ch.isspace() or unicodedata.category(ch) in ("Cc", "Zs", "Zl", "Zp"):
            return ch
    return ""


def check_user_ids(user: pa.Array, rules: ValidationRules, errors: RowErrors) -> None:
    """Empty, over-long, non-numeric (if required) or comma/whitespace-bearing user ids."""
    errors.flag(pc.equal(user, ""), lambda i: "empty user id")
    lengths = pc.utf8_length(user)
    limit = rules.max_user_id_len
    errors.flag(
        pc.greater(lengths, limit),
        lambda i: f"user id is {value_at(lengths, i)} characters, over max_user_id_len={limit}",
    )
    if rules.require_numeric_user_id:
        errors.flag(
            pc.invert(pc.match_substring_regex(user, _NUMERIC_USER_RE)),
            lambda i: f"user id {show(value_at(user, i))} is not numeric",
        )
    errors.flag(
        pc.invert(pc.match_substring_regex(user, _USER_ID_OK_RE)),
        lambda i: (
            f"user id {show(value_at(user, i))} contains {forbidden_char(value_at(user, i), ',')!r}"
        ),
    )


def check_movie_ids(movie: pa.Array, errors: RowErrors, what: str = "movie id") -> None:
    """Empty movie ids, or ones with characters that cannot appear in the line dialect."""
    errors.flag(pc.equal(movie, ""), lambda i: f"empty {what}")
    errors.flag(
        pc.invert(pc.match_substring_regex(movie, _MOVIE_ID_OK_RE)),
        lambda i: (
            f"{what} {show(value_at(movie, i))} contains "
            f"{forbidden_char(value_at(movie, i), ',/=')!r}"
        ),
    )


def parse_int(
    text: pa.Array, errors: RowErrors, name: str, *, lo: int, hi: int, negative: bool = False
) -> pa.Array:
    """Integer field → int64 (null where absent or invalid).

    With ``negative=True`` values below zero are reported as ``"negative <name> -3"``.
    """
    is_int = pc.match_substring_regex(text, _INT_RE)
    errors.flag(pc.invert(is_int), lambda i: f"{name} {show(value_at(text, i))} is not an integer")
    # int64 holds any 18-digit number; longer ones are out of every range we accept.
    fits = pc.and_(is_int, pc.less_equal(pc.utf8_length(text), 19))
    values = pc.if_else(fits, text, pa.scalar(None, pa.string())).cast(pa.int64())
    errors.flag(
        pc.and_(is_int, pc.invert(fits)),
        lambda i: f"{name} {show(value_at(text, i))} out of range [{lo}, {hi}]",
    )
    if negative:
        errors.flag(pc.less(values, 0), lambda i: f"negative {name} {value_at(text, i)}")
    errors.flag(
        pc.or_(pc.less(values, lo), pc.greater(values, hi)),
        lambda i: f"{name} {value_at(text, i)} out of range [{lo}, {hi}]",
    )
    return values


def parse_decimal(text: pa.Array, errors: RowErrors, name: str) -> pa.Array:
    """Decimal field → float64 (null where absent or invalid); infinities are rejected."""
    is_num = pc.match_substring_regex(text, _DECIMAL_RE)
    errors.flag(pc.invert(is_num), lambda i: f"{name} {show(value_at(text, i))} is not a number")
    values = pc.if_else(is_num, text, pa.scalar(None, pa.string())).cast(pa.float64())
    errors.flag(
        pc.invert(pc.is_finite(values)),
        lambda i: f"{name} {show(value_at(text, i))} is out of range",
    )
    return values


def check_items(items: pa.Array, rules: ValidationRules, errors: RowErrors) -> None:
    """Item lists with a null/empty entry, or longer than ``rules.max_items``."""
    counts = pc.list_value_length(items)
    limit = rules.max_items
    errors.flag(
        pc.greater(counts, limit),
        lambda i: f"result has {value_at(counts, i)} items, over max_items={limit}",
    )
    flat = pc.list_flatten(items)
    if len(flat):
        bad_item = pc.fill_null(pc.equal(flat, ""), True).to_numpy(zero_copy_only=False)
        if bad_item.any():
            parents = pc.list_parent_indices(items).to_numpy()
            rows = np.zeros(len(items), dtype=bool)
            rows[parents[bad_item]] = True
            errors.flag(rows, lambda i: "empty or null item in result")


def assemble(
    errors: RowErrors,
    columns: Mapping[str, pa.Array],
    *,
    raw: pa.Array,
    topic: str,
    partitions: np.ndarray,
    offsets: np.ndarray,
) -> ParsedBatch:
    """Split full-length columns into the snapshot table and the dead-letter table."""
    n = len(raw)
    ok = errors.ok
    all_ok = bool(ok.all())
    keep = pa.array(ok)
    n_good = int(ok.sum())
    good_cols: list[pa.Array] = []
    for field in SNAPSHOT_SCHEMA:
        if field.name == "topic":
            good_cols.append(pa.repeat(pa.scalar(topic, pa.string()), n_good))
        elif field.name == "partition":
            good_cols.append(pa.array(partitions[ok], type=pa.int32()))
        elif field.name == "offset":
            good_cols.append(pa.array(offsets[ok], type=pa.int64()))
        elif field.name in columns:
            col = columns[field.name]
            if not all_ok:
                col = col.filter(keep)
            good_cols.append(col.cast(field.type))
        else:
            good_cols.append(pa.nulls(n_good, field.type))
    good = pa.Table.from_arrays(good_cols, schema=SNAPSHOT_SCHEMA)

    dead_rows = np.flatnonzero(~ok)
    messages = [errors.message(int(i)) for i in dead_rows]
    dead_raw = pc.fill_null(raw, b"").take(pa.array(dead_rows, type=pa.int64()))
    dead = pa.Table.from_arrays(
        [
            pa.repeat(pa.scalar(topic, pa.string()), len(dead_rows)),
            pa.array(partitions[dead_rows], type=pa.int32()),
            pa.array(offsets[dead_rows], type=pa.int64()),
            dead_raw,
            pa.array(messages, type=pa.string()),
        ],
        schema=DEAD_LETTER_SCHEMA,
    )
    if good.num_rows + dead.num_rows != n:  # the contract every consumer relies on
        raise RuntimeError(f"parser lost records: {good.num_rows} + {dead.num_rows} != {n}")
    return ParsedBatch(good=good, dead=dead)
