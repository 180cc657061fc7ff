"""Property tests: format → parse is the identity, and no input makes a batch parser raise.

Timestamps are generated at microsecond precision because that is what snapshots store; a
separate property covers 0–9 fractional digits, where digits beyond the sixth (nanoseconds) are
truncated, not rounded.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from unittest.mock import patch

import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ray_app.events import (
    JSON_KINDS,
    Event,
    ParsedBatch,
    RateEvent,
    RecoEvent,
    ValidationRules,
    WatchEvent,
    events_from_table,
    format_json,
    format_line,
    json_kind_of,
    json_reader,
    parse_json,
    parse_json_batch,
    parse_line,
    parse_line_batch,
)
from ray_app.events.reco import format_server, served_reco_event

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Characters an id may hold: anything printable except whitespace, separators, controls and
# the dialect's delimiters. Includes non-ASCII letters (amélie) and '+'.
_ID_CHARS = st.characters(
    codec="utf-8",
    exclude_categories=("Cc", "Cs", "Zs", "Zl", "Zp"),
    exclude_characters=",/=",
)
_WORD = st.text(
    alphabet=st.sampled_from("abcdefghijklmnopqrstuvwxyzéèüñçø0123456789'():.!&-"),
    min_size=1,
    max_size=8,
)
slugs = st.builds(
    lambda words, year, trailing: "+".join([*words, str(year)]) + ("+" if trailing else ""),
    st.lists(_WORD, min_size=1, max_size=4),
    st.integers(1900, 2030),
    st.booleans(),
)
movie_ids = st.one_of(
    slugs,
    st.integers(0, 10**9).map(str),
    st.text(alphabet=_ID_CHARS, min_size=1, max_size=20),
)
user_ids = st.from_regex(r"[0-9]{1,20}", fullmatch=True)
timestamps = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
)
ratings = st.one_of(st.integers(1, 5), st.sampled_from([1.5, 2.25, 2.5, 3.75, 4.5, 4.0]))
latencies = st.one_of(
    st.integers(0, 10**6),
    st.floats(min_value=0, max_value=1e9, allow_nan=False, allow_infinity=False),
)
servers = st.one_of(
    st.from_regex(r"[a-z0-9.-]{1,20}:[0-9]{2,5}", fullmatch=True),
    st.text(alphabet=_ID_CHARS, min_size=1, max_size=20),
)

watch_events = st.builds(WatchEvent, timestamps, user_ids, movie_ids, st.integers(0, 2**31 - 1))
rate_events = st.builds(RateEvent, timestamps, user_ids, movie_ids, ratings)
reco_events = st.builds(
    RecoEvent,
    timestamps,
    user_ids,
    servers,
    st.integers(0, 999),
    st.lists(movie_ids, max_size=20),
    latencies,
)
events = st.one_of(watch_events, rate_events, reco_events)
# Schema v2's provenance fields are free-form optional text; only the JSON dialect carries them.
_provenance = st.none() | st.text(max_size=20)
served_events = st.builds(
    RecoEvent,
    timestamps,
    user_ids,
    servers,
    st.integers(0, 999),
    st.lists(movie_ids, max_size=20),
    latencies,
    request_id=_provenance,
    ab_variant=_provenance,
    model_version=_provenance,
)


@SETTINGS
@given(events)
def test_line_format_parse_identity(event: Event) -> None:
    line = format_line(event)
    assert "\n" not in line
    assert parse_line(line.encode()) == event


@SETTINGS
@given(st.one_of(events, served_events))
def test_json_format_parse_identity(event: Event) -> None:
    assert parse_json(format_json(event), kind=json_kind_of(event)) == event


@SETTINGS
@given(st.lists(events, max_size=30))
def test_line_batch_identity(batch: list[Event]) -> None:
    result = parse_line_batch(
        [format_line(e).encode() for e in batch],
        topic="movielog",
        partitions=0,
        offsets=range(len(batch)),
    )
    assert result.dead.num_rows == 0, result.dead.column("error").to_pylist()
    assert list(events_from_table(result.good)) == batch


@SETTINGS
@given(st.lists(watch_events, max_size=30), st.data())
def test_json_batch_identity_with_or_without_a_bad_record(
    batch: list[WatchEvent], data: st.DataObject
) -> None:
    records: list[bytes | None] = [format_json(e) for e in batch]
    # A bad record sends the whole batch down the per-record path; results must not change.
    bad_at = data.draw(st.integers(0, len(records)))
    bad = data.draw(st.sampled_from([b"{", b"null", b"[1]", b'{"ts": true}', None]))
    for values in (records, [*records[:bad_at], bad, *records[bad_at:]]):
        result = parse_json_batch(
            values, kind="watch", topic="t.watch", partitions=0, offsets=range(len(values))
        )
        assert list(events_from_table(result.good)) == batch
        assert result.dead.num_rows == len(values) - len(batch)


@SETTINGS
@given(
    timestamps,
    st.integers(0, 9),
    st.integers(0, 999),
    st.integers(-14 * 60, 14 * 60),
    st.sampled_from(["+HH:MM", "+HHMM", "Z", ""]),
)
def test_fractional_digits_and_offsets(
    ts: datetime, digits: int, nanos: int, offset_min: int, style: str
) -> None:
    if style in ("Z", ""):
        offset_min = 0
    local = ts.astimezone(timezone(timedelta(minutes=offset_min)))
    nine = f"{ts.microsecond:06d}{nanos:03d}"
    stamp = (
        f"{local.year:04d}-{local.month:02d}-{local.day:02d}"
        f"T{local.hour:02d}:{local.minute:02d}:{local.second:02d}"
    )
    if digits:
        stamp += "." + nine[:digits]
    sign = "-" if offset_min < 0 else "+"
    hh, mm = divmod(abs(offset_min), 60)
    stamp += {"+HH:MM": f"{sign}{hh:02d}:{mm:02d}", "+HHMM": f"{sign}{hh:02d}{mm:02d}"}.get(
        style, style
    )
    parsed = parse_line(f"{stamp},1,GET /data/m/1/0.mpg".encode()).ts
    kept_us = int(nine[: min(digits, 6)].ljust(6, "0"))
    assert parsed == ts.replace(microsecond=kept_us)


def _assert_partition(result: ParsedBatch, n: int) -> None:
    good = result.good.column("offset").to_pylist()
    dead = result.dead.column("offset").to_pylist()
    assert sorted(good + dead) == list(range(n))
    assert len(set(good) | set(dead)) == n
    assert None not in result.dead.column("error").to_pylist()
    for table in (result.good, result.dead):
        for field in table.schema:
            if not field.nullable:
                assert table.column(field.name).null_count == 0


def _mutate(data: st.DataObject, raw: bytes) -> bytes:
    """Apply a few random byte edits so inputs stay close to valid (deep parser paths)."""
    buf = bytearray(raw)
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(buf)))
        op = data.draw(st.sampled_from(["insert", "delete", "replace"]))
        byte = data.draw(st.sampled_from(list(b',/=.:- +{}[]"\\\n0a\xff\xc3')))
        if op == "insert":
            buf.insert(pos, byte)
        elif buf and pos < len(buf):
            if op == "delete":
                del buf[pos]
            else:
                buf[pos] = byte
    return bytes(buf)


def _inputs(data: st.DataObject, formatter: str) -> list[bytes | None]:
    n = data.draw(st.integers(0, 25))
    values: list[bytes | None] = []
    for _ in range(n):
        choice = data.draw(st.integers(0, 4))
        if choice == 0:
            values.append(data.draw(st.none() | st.binary(max_size=120)))
        elif choice == 4:
            # Brace-wrapped token soup reaches the JSON fast path (and pyarrow.json) directly.
            soup = data.draw(st.text(alphabet='{}[]":, -.0123456789eEnultrsfa\\', max_size=60))
            values.append(("{" + soup + "}").encode())
        else:
            event = data.draw(events if formatter == "line" else st.one_of(events, served_events))
            raw = format_line(event).encode() if formatter == "line" else format_json(event)
            values.append(raw if choice == 1 else _mutate(data, raw))
    return values


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_line_batch_never_raises_and_accounts_for_every_record(data: st.DataObject) -> None:
    values = _inputs(data, "line")
    rules = ValidationRules(max_line_bytes=data.draw(st.sampled_from([4096, 60])))
    result = parse_line_batch(
        values, topic="movielog", partitions=1, offsets=range(len(values)), rules=rules
    )
    _assert_partition(result, len(values))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), st.sampled_from(JSON_KINDS))
def test_json_batch_never_raises_and_accounts_for_every_record(
    data: st.DataObject, kind: str
) -> None:
    values = _inputs(data, "json")
    result = parse_json_batch(
        values, kind=kind, topic=f"t.{kind}", partitions=1, offsets=range(len(values))
    )
    _assert_partition(result, len(values))


@SETTINGS
@given(st.lists(st.binary(max_size=200) | st.none(), max_size=40))
def test_arbitrary_bytes_as_arrow_input(values: list[bytes | None]) -> None:
    arrow = pa.array(values, pa.binary())
    _assert_partition(
        parse_line_batch(arrow, topic="t", partitions=0, offsets=range(len(values))), len(values)
    )


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), st.sampled_from(JSON_KINDS))
def test_json_fast_and_per_record_paths_agree(data: st.DataObject, kind: str) -> None:
    values = _inputs(data, "json")

    def parse() -> ParsedBatch:
        return parse_json_batch(
            values, kind=kind, topic=f"t.{kind}", partitions=0, offsets=range(len(values))
        )

    fast = parse()
    # Refuse every pyarrow.json read of raw records, so all go through the json module.
    with patch.object(json_reader, "_read_bisecting", lambda lines, rows, schema: [(rows, None)]):
        slow = parse()
    assert fast.good.equals(slow.good)
    assert fast.dead.column("offset").equals(slow.dead.column("offset"))


@SETTINGS
@given(st.none() | st.text(max_size=12), st.none() | st.text(max_size=12), st.text(max_size=12))
def test_any_served_answer_has_a_writable_reco_line(
    variant: str | None, model: str | None, version: str
) -> None:
    event = served_reco_event(
        user_id="7", items=["1"], variant=variant, model=model, version=version, latency_ms=1.0
    )
    parsed = parse_line(format_line(event).encode())
    assert isinstance(parsed, RecoEvent)
    assert parsed.server == event.server == format_server(variant, model, version)
    assert parsed.items == ["1"]
