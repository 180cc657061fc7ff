"""Unit tests for the JSON dialect and its topic helpers."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from unittest.mock import patch

import pytest

from ray_app.events import (
    DEAD_LETTER_SCHEMA,
    JSON_KINDS,
    SNAPSHOT_SCHEMA,
    ParsedBatch,
    ParseError,
    RateEvent,
    RecoEvent,
    ValidationRules,
    WatchEvent,
    format_json,
    json_kind_of,
    json_reader,
    kind_for_topic,
    parse_json,
    parse_json_batch,
    topic_for,
)
from ray_app.events.reco import served_reco_event

EPOCH = 1_730_000_000
T_EPOCH = datetime.fromtimestamp(EPOCH, UTC)
WATCH = {"ts": EPOCH, "user_id": 7, "movie_id": 42, "minute": 3}
RATE = {"ts": EPOCH, "user_id": 7, "movie_id": "amélie+2001", "rating": 4}
RESPONSE = {
    "ts": EPOCH,
    "user_id": 7,
    "server": "host-1:8082",
    "status": 200,
    "items": [1, "the+matrix+1999+", 3],
    "latency_ms": 12.5,
}


def enc(obj: object) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode()


def run(
    values: Sequence[bytes | None], kind: str = "watch", rules: ValidationRules | None = None
) -> ParsedBatch:
    return parse_json_batch(
        values,
        kind=kind,
        topic=topic_for("events", kind),
        partitions=0,
        offsets=list(range(len(values))),
        rules=rules or ValidationRules(),
    )


def dead_reason(value: bytes | None, kind: str = "watch") -> str:
    result = run([value], kind)
    assert result.good.num_rows == 0, result.good.to_pylist()
    return str(result.dead.column("error")[0].as_py())


# --- topics ---------------------------------------------------------------------------------


def test_topics_round_trip() -> None:
    for kind in JSON_KINDS:
        assert kind_for_topic("ml", topic_for("ml", kind)) == kind
    assert topic_for("events", "reco_responses") == "events.reco_responses"
    with pytest.raises(ValueError, match="unknown JSON event kind"):
        topic_for("events", "clicks")
    with pytest.raises(ValueError, match="not a JSON event topic"):
        kind_for_topic("events", "other.watch")
    with pytest.raises(ValueError, match="unknown JSON event kind"):
        run([enc(WATCH)], kind="clicks")


# --- good records ---------------------------------------------------------------------------


def test_watch_with_numeric_ids() -> None:
    assert parse_json(enc(WATCH), kind="watch") == WatchEvent(T_EPOCH, "7", "42", 3)


def test_ids_and_numbers_as_strings() -> None:
    record = {"ts": str(EPOCH), "user_id": "7", "movie_id": "the+green+mile+1999+", "minute": "3"}
    assert parse_json(enc(record), kind="watch") == WatchEvent(
        T_EPOCH, "7", "the+green+mile+1999+", 3
    )


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        (EPOCH, T_EPOCH),
        (f"{EPOCH}.123456", T_EPOCH + timedelta(microseconds=123456)),
        (f"{EPOCH}.123456789", T_EPOCH + timedelta(microseconds=123456)),  # ns truncated
        (f"{EPOCH}.5", T_EPOCH + timedelta(milliseconds=500)),
        ("1.73e9", datetime.fromtimestamp(1.73e9, UTC)),
        ("-1.5", datetime(1970, 1, 1, tzinfo=UTC) - timedelta(seconds=1.5)),
        ('"2024-10-27T03:33:20Z"', T_EPOCH),
        ('"2024-10-27T03:33:20"', T_EPOCH),
        ('"2024-10-27T05:33:20.25+02:00"', T_EPOCH + timedelta(milliseconds=250)),
    ],
)
def test_ts_forms(ts: object, expected: datetime) -> None:
    # Written as raw JSON text so that decimal epochs are not rounded through a float here.
    record = f'{{"ts": {ts}, "user_id": 7, "movie_id": 42, "minute": 3}}'.encode()
    assert parse_json(record, kind="watch").ts == expected


def test_rate() -> None:
    assert parse_json(enc(RATE), kind="rate") == RateEvent(T_EPOCH, "7", "amélie+2001", 4)
    assert parse_json(enc(RATE | {"rating": 3.5}), kind="rate") == RateEvent(
        T_EPOCH, "7", "amélie+2001", 3.5
    )


def test_reco_response_keeps_schema_v2_fields_and_ignores_unknown_ones() -> None:
    record = RESPONSE | {
        "request_id": "r-1",
        "ab_variant": "B",
        "model_version": 3,
        "variant": "ignored",
        "future_field": {"nested": [1, {"x": None}], "flag": True},
    }
    assert parse_json(enc(record), kind="reco_responses") == RecoEvent(
        T_EPOCH,
        "7",
        "host-1:8082",
        200,
        ["1", "the+matrix+1999+", "3"],
        12.5,
        request_id="r-1",
        ab_variant="B",
        model_version="3",
    )


def test_schema_v1_reco_response_reads_with_null_v2_fields() -> None:
    row = run([enc(RESPONSE)], "reco_responses").good.to_pylist()[0]
    assert (row["request_id"], row["ab_variant"], row["model_version"]) == (None, None, None)
    assert row["server"] == "host-1:8082" and row["status"] == 200


def test_served_reco_event_survives_format_then_parse() -> None:
    event = served_reco_event(
        user_id="7",
        items=["1", "the+matrix+1999+"],
        variant="B",
        model="itemknn",
        version="2026-01-01T00:00:00Z",
        latency_ms=4.25,
        request_id="req-9",
        ts=T_EPOCH,
    )
    parsed = parse_json(format_json(event), kind="reco_responses")
    assert isinstance(parsed, RecoEvent)
    assert (parsed.request_id, parsed.ab_variant, parsed.model_version) == (
        "req-9",
        "B",
        "2026-01-01T00:00:00Z",
    )
    assert parsed == event


def test_v2_fields_take_the_per_record_path_alike() -> None:
    # A pretty-printed record is decoded by the json module; the fields must survive that too.
    record = json.dumps(RESPONSE | {"ab_variant": "A", "model_version": 7}, indent=1).encode()
    row = run([record], "reco_responses").good.to_pylist()[0]
    assert (row["ab_variant"], row["model_version"]) == ("A", "7")
    assert "field 'ab_variant' must be a string or number, got true" in dead_reason(
        enc(RESPONSE | {"ab_variant": True}), "reco_responses"
    )


def test_reco_request_is_a_reco_row_without_status() -> None:
    result = run([enc({"ts": EPOCH, "user_id": 7, "request_id": "r-1"})], "reco_requests")
    row = result.good.to_pylist()[0]
    assert row["kind"] == "reco" and row["status"] is None and row["items"] is None
    assert row["server"] is None
    with_server = run([enc({"ts": EPOCH, "user_id": 7, "server": "h:1"})], "reco_requests")
    assert with_server.good.column("server").to_pylist() == ["h:1"]
    with pytest.raises(ValueError, match="request"):
        parse_json(enc({"ts": EPOCH, "user_id": 7}), kind="reco_requests")


def test_mixed_value_types_across_records_in_one_batch() -> None:
    values = [
        enc(WATCH),
        enc(WATCH | {"ts": "2024-10-27T03:33:20Z", "user_id": "8", "movie_id": "m+"}),
        enc(WATCH | {"ts": EPOCH + 0.5, "minute": "4"}),
    ]
    result = run(values)
    assert result.dead.num_rows == 0
    assert result.good.column("user_id").to_pylist() == ["7", "8", "7"]
    assert result.good.column("minute").to_pylist() == [3, 3, 4]


def test_pretty_printed_record_and_whitespace() -> None:
    pretty = json.dumps(WATCH, indent=2).encode()
    result = run([pretty, b"  " + enc(WATCH) + b"\r\n"])
    assert result.dead.num_rows == 0
    assert result.good.num_rows == 2


def test_strings_that_look_like_numbers_force_no_misparse() -> None:
    # ", 5" inside a string defeats the fast path's number quoting; results must not change.
    tricky = enc(WATCH | {"note": "a, 5 [6] :7", "movie_id": "x"})
    plain = enc(WATCH)
    both = run([plain, tricky])
    assert both.dead.num_rows == 0
    assert both.good.column("movie_id").to_pylist() == ["42", "x"]


def test_duplicate_keys_last_one_wins() -> None:
    record = b'{"ts": 1, "ts": 1730000000, "user_id": 7, "movie_id": 42, "minute": 3}'
    assert parse_json(record, kind="watch").ts == T_EPOCH


def test_bad_record_does_not_change_good_rows() -> None:
    good = [enc(WATCH | {"minute": i, "ts": EPOCH + i / 8}) for i in range(50)]
    alone = run(good).good
    mixed = run([*good[:25], b"{broken", *good[25:]])
    assert mixed.dead.column("offset").to_pylist() == [25]
    assert mixed.good.drop_columns(["offset"]).equals(alone.drop_columns(["offset"]))


# --- every dead-letter reason ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "kind", "reason"),
    [
        (None, "watch", "None value"),
        (b"", "watch", "empty record"),
        (b"\xff{}", "watch", "not valid UTF-8"),
        (b"{broken", "watch", "invalid JSON: Expecting property name enclosed in double quotes"),
        (b'{"ts": 1,}', "watch", "invalid JSON"),
        (b'{"ts": 01, "user_id": 1, "movie_id": 1, "minute": 1}', "watch", "invalid JSON"),
        (b'{"ts": NaN, "user_id": 1, "movie_id": 1, "minute": 1}', "watch", "unparseable time 'NaN'"),
        (b'{"ts": 1, "user_id": 1, "movie_id": 1, "minute": 1, 5: 2}', "watch", "invalid JSON"),
        (b"{}{}", "watch", "invalid JSON: Extra data"),
        (b"[1, 2]", "watch", "expected a JSON object, got an array"),
        (b"42", "watch", "expected a JSON object, got a number"),
        (b'"x"', "watch", "expected a JSON object, got a string"),
        (b"null", "watch", "expected a JSON object, got null"),
        (b"null\n", "watch", "expected a JSON object, got null"),
        (enc({"user_id": 7, "movie_id": 1, "minute": 1}), "watch", "missing field 'ts'"),
        (enc(WATCH | {"minute": None}), "watch", "missing field 'minute'"),
        (enc(WATCH | {"user_id": True}), "watch", "field 'user_id' must be a string or number, got true"),
        (enc(WATCH | {"movie_id": {"id": 1}}), "watch", "field 'movie_id' must be a string or number, got an object"),
        (enc(WATCH | {"minute": [1]}), "watch", "field 'minute' must be a string or number, got an array"),
        (b'{"ts": 1, "user_id": "\\ud800", "movie_id": 1, "minute": 1}', "watch", "unpaired UTF-16 surrogate"),
        (enc(WATCH | {"ts": EPOCH * 1000}), "watch", "ts '1730000000000' out of range"),
        (enc(WATCH | {"ts": 1e300}), "watch", "out of range"),
        (enc(WATCH | {"ts": "yesterday"}), "watch", "unparseable time 'yesterday'"),
        (enc(WATCH | {"ts": "2024-02-30T00:00:00"}), "watch", "unparseable time"),
        (enc(WATCH | {"user_id": "alice"}), "watch", "user id 'alice' is not numeric"),
        (enc(WATCH | {"user_id": 7.5}), "watch", "user id '7.5' is not numeric"),
        (enc(WATCH | {"user_id": ""}), "watch", "empty user id"),
        (enc(WATCH | {"movie_id": "a/b"}), "watch", "movie id 'a/b' contains '/'"),
        (enc(WATCH | {"movie_id": ""}), "watch", "empty movie id"),
        (enc(WATCH | {"minute": -3}), "watch", "negative minute -3"),
        (enc(WATCH | {"minute": 2.5}), "watch", "minute '2.5' is not an integer"),
        (enc(RATE | {"rating": 7}), "rate", "rating 7 outside [1, 5]"),
        (enc(RATE | {"rating": "good"}), "rate", "rating 'good' is not a number"),
        (enc(RESPONSE | {"status": "ok"}), "reco_responses", "status 'ok' is not an integer"),
        (enc(RESPONSE | {"latency_ms": -1}), "reco_responses", "negative latency -1 ms"),
        (enc(RESPONSE | {"server": ""}), "reco_responses", "empty server name"),
        (enc(RESPONSE | {"items": "1, 2"}), "reco_responses", "field 'items' must be an array, got a string or number"),
        (enc(RESPONSE | {"items": [1, True]}), "reco_responses", "items[1] must be a string or number, got true"),
        (enc(RESPONSE | {"items": [1, None]}), "reco_responses", "empty or null item in result"),
        (enc(RESPONSE | {"items": list(range(101))}), "reco_responses", "result has 101 items"),
        (enc({k: v for k, v in RESPONSE.items() if k != "items"}), "reco_responses", "missing field 'items'"),
    ],
)  # fmt: skip
def test_dead_letter_reasons(value: bytes | None, kind: str, reason: str) -> None:
    assert reason in dead_reason(value, kind)


def test_record_too_long() -> None:
    value = enc(WATCH | {"pad": "x" * 5000})
    assert dead_reason(value) == f"record is {len(value)} bytes, over max_line_bytes=4096"


def test_parse_json_raises_parse_error() -> None:
    with pytest.raises(ParseError, match=r"rating 7 outside \[1, 5\]"):
        parse_json(enc(RATE | {"rating": 7}), kind="rate")


def test_every_index_lands_exactly_once() -> None:
    values = [enc(WATCH), None, b"{", enc(WATCH | {"minute": -1}), b"[]", enc(WATCH), b""]
    result = run(values)
    assert result.good.schema.equals(SNAPSHOT_SCHEMA)
    assert result.dead.schema.equals(DEAD_LETTER_SCHEMA)
    assert result.good.column("offset").to_pylist() == [0, 5]
    assert result.dead.column("offset").to_pylist() == [1, 2, 3, 4, 6]
    assert result.dead.column("raw").to_pylist()[1] == b"{"


# --- formatting -----------------------------------------------------------------------------


def test_format_json_shapes() -> None:
    ts = T_EPOCH + timedelta(microseconds=120)
    assert json.loads(format_json(WatchEvent(ts, "7", "42", 3))) == {
        "ts": EPOCH + 0.00012,
        "user_id": 7,
        "movie_id": 42,
        "minute": 3,
    }
    assert format_json(WatchEvent(ts, "007", "m+", 3)).startswith(
        b'{"ts": 1730000000.00012, "user_id": "007", "movie_id": "m+"'
    )
    reco = json.loads(format_json(RecoEvent(T_EPOCH, "7", "h:1", 200, ["1", "x"], 4.5)))
    assert reco == {
        "ts": EPOCH,
        "user_id": 7,
        "server": "h:1",
        "status": 200,
        "items": [1, "x"],
        "latency_ms": 4.5,
    }
    assert json_kind_of(RateEvent(T_EPOCH, "1", "1", 1)) == "rate"
    with pytest.raises(ValueError, match="non-finite"):
        format_json(RateEvent(T_EPOCH, "1", "1", float("inf")))


def test_format_json_writes_v2_fields_only_when_set() -> None:
    event = RecoEvent(T_EPOCH, "7", "B@knn:3", 200, ["1"], 4.5, ab_variant="B", model_version="3")
    assert json.loads(format_json(event)) == {
        "ts": EPOCH,
        "user_id": 7,
        "server": "B@knn:3",
        "status": 200,
        "items": [1],
        "latency_ms": 4.5,
        "ab_variant": "B",
        "model_version": "3",
    }


def test_format_json_before_1970() -> None:
    ts = datetime(1969, 12, 31, 23, 59, 58, 500000, tzinfo=UTC)
    assert format_json(WatchEvent(ts, "1", "1", 0)).startswith(b'{"ts": -1.5,')
    assert parse_json(format_json(WatchEvent(ts, "1", "1", 0)), kind="watch").ts == ts


_BASE = '{"ts": 1, "user_id": 1, "movie_id": 1, "minute": 1'


@pytest.mark.parametrize(
    "tail",
    [
        ', "x": NaN}',
        ', "x": -Infinity}',
        ", 5: 2}",
        ', "x": 1e400}',
        ', "x": [1, 2.5, -3e2]}',
        ', "x": "a, 5 [6] :7"}',
        ', "x": 01}',
        ', "x": [1,]}',
        ', "x": "\\ud83d\\ude00"}',
        ', "rating": NaN}',
        ', "minute": 2}',
    ],
)
def test_fast_and_per_record_paths_agree(tail: str) -> None:
    values = [(_BASE + tail).encode()]
    fast = run(values)
    # Refuse every pyarrow.json read of raw records so the json module handles all of them.
    with patch.object(json_reader, "_read_bisecting", lambda lines, rows, schema: [(rows, None)]):
        slow = run(values)
    assert fast.good.equals(slow.good)
    assert fast.dead.equals(slow.dead)
