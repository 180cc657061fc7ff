"""Unit tests for the line dialect: every quirk, every dead-letter reason, the batch contract."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone

import pyarrow as pa
import pytest
from pydantic import ValidationError

from ray_app.events import (
    DEAD_LETTER_SCHEMA,
    SNAPSHOT_SCHEMA,
    Event,
    ParsedBatch,
    ParseError,
    RateEvent,
    RecoEvent,
    ValidationRules,
    WatchEvent,
    events_from_table,
    format_line,
    parse_line,
    parse_line_batch,
)

T0 = datetime(2024, 1, 5, 10, 11, 12, tzinfo=UTC)
RECO = "recommendation request host-1.example:8082, status 200, result: "


def batch(values: Sequence[bytes | None], rules: ValidationRules | None = None) -> ParsedBatch:
    return parse_line_batch(
        values,
        topic="movielog",
        partitions=3,
        offsets=list(range(100, 100 + len(values))),
        rules=rules or ValidationRules(),
    )


def dead_reason(value: bytes | None, rules: ValidationRules | None = None) -> str:
    result = batch([value], rules)
    assert result.good.num_rows == 0, result.good.to_pylist()
    assert result.dead.num_rows == 1
    row = result.dead.to_pylist()[0]
    assert row["raw"] == (value or b"")
    return str(row["error"])


# --- quirks that must parse -----------------------------------------------------------------


@pytest.mark.parametrize(
    "movie",
    ["the+green+mile+1999", "the+green+mile+1999+", "amélie+2001", "léon+1994+", "42", "007"],
)
def test_watch_movie_ids(movie: str) -> None:
    line = f"2024-01-05T10:11:12,123,GET /data/m/{movie}/17.mpg".encode()
    assert parse_line(line) == WatchEvent(T0, "123", movie, 17)


@pytest.mark.parametrize("digits", range(10))
def test_fractional_seconds_0_to_9_digits(digits: int) -> None:
    frac = "123456789"[:digits]
    stamp = "2024-01-05T10:11:12" + (f".{frac}" if digits else "")
    event = parse_line(f"{stamp},1,GET /data/m/1/0.mpg".encode())
    # Padded to microseconds; digits beyond the sixth (nanoseconds) are truncated.
    expected_us = int((frac + "000000")[:6]) if digits else 0
    assert event.ts == T0.replace(microsecond=expected_us)


def test_lone_decimal_point_means_zero_fraction() -> None:
    assert parse_line(b"2024-01-05T10:11:12.,1,GET /data/m/1/0.mpg").ts == T0


@pytest.mark.parametrize(
    ("stamp", "expected"),
    [
        ("2024-01-05T10:11:12Z", T0),
        ("2024-01-05T10:11:12z", T0),
        ("2024-01-05T10:11:12+00:00", T0),
        ("2024-01-05T12:11:12+02:00", T0),
        ("2024-01-05T12:11:12+0200", T0),
        ("2024-01-05T12:11:12+02", T0),
        ("2024-01-05T04:41:12-05:30", T0),
        ("2024-01-05 10:11:12", T0),
        ("2024-01-05T10:11:12.5+01:00", T0 - timedelta(hours=1) + timedelta(milliseconds=500)),
    ],
)
def test_timezones_and_separators(stamp: str, expected: datetime) -> None:
    assert parse_line(f"{stamp},1,GET /data/m/1/0.mpg".encode()).ts == expected


def test_naive_time_is_utc_and_result_is_aware() -> None:
    ts = parse_line(b"2024-01-05T10:11:12,1,GET /data/m/1/0.mpg").ts
    assert ts.tzinfo is not None
    assert ts.utcoffset() == timedelta(0)


@pytest.mark.parametrize("suffix", [b"\n", b"\r\n", b"  \n"])
def test_trailing_newline_is_ignored(suffix: bytes) -> None:
    event = parse_line(b"2024-01-05T10:11:12,1,GET /data/m/x/2.mpg" + suffix)
    assert event == WatchEvent(T0, "1", "x", 2)


@pytest.mark.parametrize(("text", "value"), [("4", 4), ("1", 1), ("5", 5), ("3.5", 3.5)])
def test_rate(text: str, value: float) -> None:
    event = parse_line(f"2024-01-05T10:11:12,9,GET /rate/amélie+2001={text}".encode())
    assert event == RateEvent(T0, "9", "amélie+2001", value)
    assert isinstance(event, RateEvent)
    assert isinstance(event.rating, int) == float(value).is_integer()


def test_reco_with_items() -> None:
    line = f"2024-01-05T10:11:12,5,{RECO}1, the+matrix+1999+, amélie+2001, 345 ms".encode()
    assert parse_line(line) == RecoEvent(
        T0, "5", "host-1.example:8082", 200, ["1", "the+matrix+1999+", "amélie+2001"], 345
    )


@pytest.mark.parametrize("tail", ["result: , 12 ms", "result: 12 ms"])
def test_reco_without_items(tail: str) -> None:
    line = f"2024-01-05T10:11:12,5,recommendation request h:1, status 200, {tail}".encode()
    event = parse_line(line)
    assert isinstance(event, RecoEvent)
    assert event.items == []
    assert event.latency_ms == 12


def test_reco_items_without_spaces_and_fractional_latency() -> None:
    event = parse_line(f"2024-01-05T10:11:12,5,{RECO}1,2 , 3, 12.25 ms".encode())
    assert isinstance(event, RecoEvent)
    assert event.items == ["1", "2", "3"]
    assert event.latency_ms == 12.25


def test_reco_error_status_keeps_result_text() -> None:
    line = (
        b"2024-01-05T10:11:12,5,recommendation request h:1, status 0, "
        b"result: java.net.ConnectException: Connection refused, 1 ms"
    )
    event = parse_line(line)
    assert isinstance(event, RecoEvent)
    assert event.status == 0
    assert event.items == ["java.net.ConnectException: Connection refused"]


def test_non_numeric_user_allowed_when_rules_say_so() -> None:
    rules = ValidationRules(require_numeric_user_id=False)
    assert parse_line(b"2024-01-05T10:11:12,alice,GET /data/m/1/0.mpg", rules=rules).user_id == (
        "alice"
    )


# --- every dead-letter reason ---------------------------------------------------------------

LINE = "2024-01-05T10:11:12,{user},{request}"


def line(request: str = "GET /data/m/1/2.mpg", user: str = "123") -> bytes:
    return LINE.format(user=user, request=request).encode()


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "None value"),
        (b"", "empty line"),
        (b" \r\n", "empty line"),
        (b"\xff\xfe,1,2", "not valid UTF-8: invalid start byte (byte 0xff at position 0)"),
        (b"2024-01-05T10:11:12,1,GET /data/m/caf\xc3/1.mpg", "not valid UTF-8"),
        (b"\xed\xa0\x80", "not valid UTF-8"),  # an encoded surrogate
        (b"2024-01-05T10:11:12,123", "expected '<time>,<user>,<request>' but the line has 2"),
        (b"just text", "but the line has 1 comma-separated field(s)"),
        (b"yesterday,1,GET /data/m/1/2.mpg", "unparseable time 'yesterday'"),
        (b"2024-02-30T10:11:12,1,GET /data/m/1/2.mpg", "unparseable time '2024-02-30T10:11:12'"),
        (b"2024-01-05T24:00:00,1,GET /data/m/1/2.mpg", "unparseable time"),
        (b"2024-01-05T10:11:60,1,GET /data/m/1/2.mpg", "unparseable time"),
        (b"2024-13-05T10:11:12,1,GET /data/m/1/2.mpg", "unparseable time"),
        (b"2024-01-05T10:11:12.1234567890,1,GET /data/m/1/2.mpg", "unparseable time"),
        (b"2024-01-05T10:11:12+24:00,1,GET /data/m/1/2.mpg", "unparseable time"),
        (b"2024-01-05T10:11:12+05:60,1,GET /data/m/1/2.mpg", "unparseable time"),
        (b"2024-1-5T10:11:12,1,GET /data/m/1/2.mpg", "unparseable time"),
        (b",1,GET /data/m/1/2.mpg", "unparseable time ''"),
        (line(user=""), "empty user id"),
        (line(user="abc"), "user id 'abc' is not numeric"),
        (line(user="12a"), "user id '12a' is not numeric"),
        (line(user="1" * 65), "user id is 65 characters, over max_user_id_len=64"),
        (line("GET /foo"), "unknown request path '/foo'"),
        (line("GET /data/m/abc"), "malformed watch request '/data/m/abc'"),
        (line("GET /data/m/1/2.mp4"), "malformed watch request"),
        (line("GET /rate/abc"), "malformed rate request '/rate/abc'"),
        (line("recommendation request h:1, status 200"), "malformed recommendation line"),
        (line("POST /x"), "unknown request 'POST /x'"),
        (line("GET /data/m//2.mpg"), "empty movie id"),
        (line("GET /data/m/the green mile/2.mpg"), "movie id 'the green mile' contains ' '"),
        (line("GET /rate/=4"), "empty movie id"),
        (line("GET /data/m/1/-3.mpg"), "negative minute -3"),
        (line("GET /data/m/1/abc.mpg"), "minute 'abc' is not an integer"),
        (line("GET /data/m/1/2.5.mpg"), "minute '2.5' is not an integer"),
        (line("GET /data/m/1/.mpg"), "minute '' is not an integer"),
        (line("GET /data/m/1/99999999999.mpg"), "minute 99999999999 out of range"),
        (line("GET /data/m/1/" + "9" * 30 + ".mpg"), "out of range"),
        (line("GET /rate/1=7"), "rating 7 outside [1, 5]"),
        (line("GET /rate/1=0"), "rating 0 outside [1, 5]"),
        (line("GET /rate/1=-2"), "rating -2 outside [1, 5]"),
        (line("GET /rate/1=five"), "rating 'five' is not a number"),
        (line("GET /rate/1="), "rating '' is not a number"),
        (line("GET /rate/1=1e999"), "rating '1e999' is out of range"),
        (line(RECO.replace("host-1.example:8082", "") + "1, 5 ms"), "empty server name"),
        (line("recommendation request h, status ok, result: 1, 5 ms"), "status 'ok' is not an"),
        (line("recommendation request h, status 1000, result: 1, 5 ms"), "status 1000 out of"),
        (line(RECO + "1, 2, fast ms"), "latency 'fast' is not a number"),
        (line(RECO + "1, 2, -5 ms"), "negative latency -5 ms"),
        (line(RECO + "1, , 2, 5 ms"), "empty or null item in result"),
        (line(RECO + ", ".join(map(str, range(101))) + ", 5 ms"), "result has 101 items, over"),
    ],
)
def test_dead_letter_reasons(value: bytes | None, reason: str) -> None:
    assert reason in dead_reason(value)


def test_line_too_long() -> None:
    value = line("GET /data/m/" + "x" * 5000 + "/1.mpg")
    assert dead_reason(value) == f"line is {len(value)} bytes, over max_line_bytes=4096"


def test_rules_are_applied() -> None:
    rules = ValidationRules(rating_min=0, rating_max=10, max_user_id_len=3, max_items=2)
    assert parse_line(line("GET /rate/1=10"), rules=rules) == RateEvent(T0, "123", "1", 10)
    assert dead_reason(line("GET /rate/1=10.5"), rules) == "rating 10.5 outside [0, 10]"
    assert "over max_user_id_len=3" in dead_reason(line(user="1234"), rules)
    assert "result has 3 items, over max_items=2" in dead_reason(
        line(RECO + "1, 2, 3, 5 ms"), rules
    )
    small = ValidationRules(max_line_bytes=10)
    assert dead_reason(line(), small).endswith("over max_line_bytes=10")


def test_forbidden_characters_in_user_ids_when_not_numeric() -> None:
    rules = ValidationRules(require_numeric_user_id=False)
    assert dead_reason(line(user="al ice"), rules) == "user id 'al ice' contains ' '"


def test_parse_line_raises_parse_error_with_reason() -> None:
    with pytest.raises(ParseError) as info:
        parse_line(line("GET /rate/1=7"))
    assert info.value.reason == "rating 7 outside [1, 5]"
    assert isinstance(info.value, ValueError)


# --- the batch contract ---------------------------------------------------------------------


def test_every_index_lands_exactly_once_and_in_order() -> None:
    values: list[bytes | None] = [
        line(),
        None,
        line("GET /rate/1=4"),
        b"\xff",
        line("GET /foo"),
        line(RECO + "1, 2, 5 ms"),
        b"",
        line(user="x"),
    ]
    result = batch(values)
    good = result.good.column("offset").to_pylist()
    dead = result.dead.column("offset").to_pylist()
    assert good == [100, 102, 105]
    assert dead == [101, 103, 104, 106, 107]
    assert sorted(good + dead) == list(range(100, 100 + len(values)))
    assert set(result.good.column("partition").to_pylist()) == {3}
    assert set(result.dead.column("topic").to_pylist()) == {"movielog"}
    assert result.good.column("kind").to_pylist() == ["watch", "rate", "reco"]


def test_schemas_are_exact_and_required_columns_non_null() -> None:
    result = batch([line(), line("GET /rate/1=4"), line(RECO + "1, 5 ms"), b"bad"])
    assert result.good.schema.equals(SNAPSHOT_SCHEMA)
    assert result.dead.schema.equals(DEAD_LETTER_SCHEMA)
    for field in SNAPSHOT_SCHEMA:
        if not field.nullable:
            assert result.good.column(field.name).null_count == 0, field.name
    rows = result.good.to_pylist()
    assert rows[0]["minute"] == 2 and rows[0]["rating"] is None and rows[0]["items"] is None
    assert rows[1]["rating"] == 4.0 and rows[1]["minute"] is None
    assert rows[2]["items"] == ["1"] and rows[2]["movie_id"] is None
    assert rows[2]["status"] == 200 and rows[2]["latency_ms"] == 5.0
    # Schema v2's provenance fields have no place in a line: always null here.
    assert {(r["request_id"], r["ab_variant"], r["model_version"]) for r in rows} == {
        (None, None, None)
    }


def test_empty_batch() -> None:
    result = batch([])
    assert result.good.num_rows == 0 and result.dead.num_rows == 0
    assert result.good.schema.equals(SNAPSHOT_SCHEMA)


def test_all_dead_batch() -> None:
    result = batch([None, b"x"])
    assert result.good.num_rows == 0
    assert result.dead.column("error").to_pylist()[0] == "None value"


def test_partitions_per_value_and_arrow_input() -> None:
    values = pa.array([line(), b"bad"], pa.binary())
    result = parse_line_batch(values, topic="t", partitions=[1, 2], offsets=[7, 8])
    assert result.good.column("partition").to_pylist() == [1]
    assert result.dead.column("partition").to_pylist() == [2]


@pytest.mark.parametrize(("partitions", "offsets"), [(0, [1]), ([0], [1, 2]), ([0, 1, 2], [1, 2])])
def test_mismatched_lengths_raise(partitions: int | list[int], offsets: list[int]) -> None:
    with pytest.raises(ValueError, match="one"):
        parse_line_batch([line(), line()], topic="t", partitions=partitions, offsets=offsets)


def test_events_from_table_round_trip() -> None:
    events: list[Event] = [
        WatchEvent(T0, "1", "the+green+mile+1999+", 0),
        RateEvent(T0, "2", "amélie+2001", 4.5),
        RecoEvent(T0, "3", "h:1", 200, ["1", "2"], 5.5),
    ]
    result = batch([format_line(e).encode() for e in events])
    assert list(events_from_table(result.good)) == events


# --- formatting -----------------------------------------------------------------------------


def test_format_line_canonical_forms() -> None:
    ts = datetime(2024, 1, 5, 12, 11, 12, 120000, tzinfo=timezone(timedelta(hours=2)))
    assert format_line(WatchEvent(ts, "1", "m+", 3)) == (
        "2024-01-05T10:11:12.12,1,GET /data/m/m+/3.mpg"
    )
    naive = datetime(2024, 1, 5, 10, 11, 12)
    assert format_line(RateEvent(naive, "1", "42", 4.0)) == "2024-01-05T10:11:12,1,GET /rate/42=4"
    assert format_line(RecoEvent(T0, "1", "h:1", 200, [], 7.0)) == (
        "2024-01-05T10:11:12,1,recommendation request h:1, status 200, result: , 7 ms"
    )


@pytest.mark.parametrize(
    "event",
    [
        WatchEvent(T0, "1,2", "m", 1),
        WatchEvent(T0, "", "m", 1),
        WatchEvent(T0, "1", "a/b", 1),
        RateEvent(T0, "1", "a=b", 4),
        RateEvent(T0, "1", "a b", 4),
        RateEvent(T0, "1", "m", float("nan")),
        RecoEvent(T0, "1", "h,1", 200, [], 1),
        RecoEvent(T0, "1", "h", 200, ["a,b"], 1),
        RecoEvent(T0, "1", "h", 200, [""], 1),
    ],
)
def test_format_line_refuses_ambiguous_values(event: WatchEvent | RateEvent | RecoEvent) -> None:
    with pytest.raises(ValueError, match="encode"):
        format_line(event)


def test_events_normalise_time_to_utc() -> None:
    plus2 = datetime(2024, 1, 5, 12, 11, 12, tzinfo=timezone(timedelta(hours=2)))
    assert WatchEvent(plus2, "1", "m", 1).ts.utcoffset() == timedelta(0)
    assert WatchEvent(plus2, "1", "m", 1) == WatchEvent(T0, "1", "m", 1)
    assert WatchEvent(datetime(2024, 1, 5, 10, 11, 12), "1", "m", 1).ts == T0


def test_validation_rules_forbid_unknown_and_inconsistent_settings() -> None:
    with pytest.raises(ValidationError, match=r"max_line_byte\n  Extra inputs are not permitted"):
        ValidationRules(max_line_byte=10)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="rating_min"):
        ValidationRules(rating_min=5, rating_max=1)
    with pytest.raises(ValidationError, match="max_items"):
        ValidationRules(max_items=0)
    defaults = ValidationRules()
    assert (defaults.rating_min, defaults.rating_max, defaults.max_line_bytes) == (1, 5, 4096)
    assert (defaults.max_user_id_len, defaults.require_numeric_user_id, defaults.max_items) == (
        64,
        True,
        100,
    )
