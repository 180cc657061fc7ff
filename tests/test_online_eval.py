"""Online attribution: known answers on a tiny hand-written event log, Parquet + gauges."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from helpers import write_events_snapshot, write_json_events_snapshot

from ray_app.config import ConfigError
from ray_app.evaluation.online import (
    attribute,
    conversion_table,
    load_attribution_events,
    run_online_eval,
    run_online_eval_loop,
)
from ray_app.events.json_dialect import format_json, parse_json_batch
from ray_app.events.line_dialect import format_line, parse_line_batch
from ray_app.events.model import Event, RecoEvent, WatchEvent
from ray_app.events.reco import format_server, parse_server_column, served_reco_event

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _t(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def _events() -> list[Event]:
    return [
        # u1 (A): shown [1, 2]; watches 2 after 5 min (converts), minutes 0..2.
        RecoEvent(_t(0), "1", "A@pop:1", 200, ["1", "2"], 3.0),
        WatchEvent(_t(5), "1", "2", 0),
        WatchEvent(_t(6), "1", "2", 1),
        WatchEvent(_t(7), "1", "2", 2),
        # u2 (A): watches 9 before being shown it (no), then 3 after 2 h (outside window).
        WatchEvent(_t(9), "2", "9", 0),
        RecoEvent(_t(10), "2", "A@pop:1", 200, ["9", "3"], 3.0),
        WatchEvent(_t(11), "2", "9", 1),
        WatchEvent(_t(130), "2", "3", 0),
        # u3 (B): shown 4 twice, watched once → only the later list converts (last touch).
        RecoEvent(_t(20), "3", "B@knn:2", 200, ["4"], 3.0),
        RecoEvent(_t(25), "3", "B@knn:2", 200, ["4", "5"], 3.0),
        WatchEvent(_t(30), "3", "4", 0),
        # A failed request never counts; a very late reco is immature.
        RecoEvent(_t(40), "3", "B@knn:2", 500, [], 3.0),
        RecoEvent(_t(300), "4", "B@knn:2", 200, ["1"], 3.0),
    ]


def _frame(events: list[Event] | None = None) -> pd.DataFrame:
    lines = [format_line(e).encode() for e in events or _events()]
    return parse_line_batch(
        lines, topic="movielog", partitions=0, offsets=list(range(len(lines)))
    ).good.to_pandas()


def test_attribution_known_answer() -> None:
    a = attribute(_frame(), timedelta(hours=1)).sort_values("ts")
    assert a["converted"].tolist() == [True, False, False, True, False]
    assert a["items_watched"].tolist() == [1, 0, 0, 1, 0]
    assert a["mature"].tolist() == [True, True, True, True, False]
    conv = conversion_table(a).set_index("variant")
    assert conv.loc["A", "requests"] == 2 and conv.loc["A", "conversions"] == 1
    assert conv.loc["B", "requests"] == 2 and conv.loc["B", "conversions"] == 1
    assert conv.loc["B", "users"] == 1 and conv.loc["B", "version"] == "2"
    assert conv.loc["A", "conversion_rate"] == 0.5


def test_longer_window_catches_late_watch() -> None:
    a = attribute(_frame(), timedelta(hours=3)).sort_values("ts")
    assert a["converted"].tolist()[:2] == [True, True]


def test_parse_server_column() -> None:
    got = parse_server_column(
        pd.Series(
            [
                "A@itemknn:3",
                "canary@two_tower:2026-01-01",
                "srv-1",
                None,
                format_server("B", None, "v7"),
                "@:",
            ]
        )
    )
    assert got.values.tolist() == [
        ["A", "itemknn", "3"],
        ["canary", "two_tower", "2026-01-01"],
        ["srv-1", "unknown", "unknown"],
        ["unknown", "unknown", "unknown"],
        ["B", "unknown", "v7"],
        ["unknown", "unknown", "unknown"],
    ]


def test_window_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="attribution window must be positive"):
        attribute(_frame(), timedelta(0))


def _json_frame(events: list[RecoEvent]) -> pd.DataFrame:
    records = [format_json(e) for e in events]
    return parse_json_batch(
        records,
        kind="reco_responses",
        topic="events.reco_responses",
        partitions=0,
        offsets=list(range(len(records))),
    ).good.to_pandas()


def test_schema_v2_columns_win_over_the_server_field() -> None:
    # A producer whose server field is a host name: only the v2 columns say what served.
    host = RecoEvent(_t(0), "1", "host-1:8082", 200, ["7"], 1.0, ab_variant="B", model_version="9")
    served = served_reco_event(
        user_id="2", items=["7"], variant="A", model="pop", version="1", latency_ms=1.0, ts=_t(1)
    )
    v1_like = RecoEvent(_t(2), "3", "C@knn:4", 200, ["7"], 1.0)  # no v2 fields: parse server
    blank = RecoEvent(_t(3), "4", "D@knn:5", 200, ["7"], 1.0, ab_variant="", model_version="")
    frame = pd.concat(
        [_json_frame([host, served, v1_like, blank]), _frame([WatchEvent(_t(90), "1", "7", 0)])]
    )
    a = attribute(frame, timedelta(hours=1)).sort_values("ts")
    assert a[["variant", "model", "version"]].values.tolist() == [
        ["B", "unknown", "9"],
        ["A", "pop", "1"],
        ["C", "knn", "4"],
        ["D", "knn", "5"],
    ]


def test_run_online_eval_writes_parquet_and_gauges(tmp_path: Path) -> None:
    write_events_snapshot(tmp_path / "snap", _events())
    res = run_online_eval(tmp_path / "snap", timedelta(hours=1), tmp_path / "out")
    assert pq.read_table(res.conversion_path).num_rows == 2
    assert pq.read_table(res.attribution_path).num_rows == 5
    text = res.metrics_path.read_text()
    assert 'ray_app_online_conversion_rate{model="pop",variant="A",version="1"} 0.5' in text
    assert 'ray_app_online_requests{model="knn",variant="B",version="2"} 2.0' in text
    assert "ray_app_online_attribution_window_seconds 3600.0" in text


def test_run_online_eval_over_line_and_json_snapshots(tmp_path: Path) -> None:
    # Line-dialect rows (v2 columns null) and JSON-dialect rows (v2 columns set) in one dir.
    root = tmp_path / "snap"
    write_events_snapshot(root, _events())
    json_reco = RecoEvent(_t(50), "5", "host-2:8082", 200, ["8"], 1.0, ab_variant="B")
    write_json_events_snapshot(root, [json_reco])
    write_events_snapshot(root, [WatchEvent(_t(55), "5", "8", 0)], first=len(_events()))
    assert set(load_attribution_events(root).columns) >= {"ab_variant", "model_version"}
    conv = run_online_eval(root, timedelta(hours=1), tmp_path / "out").conversion
    rows = {(r.variant, r.model, r.version): r for r in conv.itertuples()}
    assert set(rows) == {("A", "pop", "1"), ("B", "knn", "2"), ("B", "unknown", "unknown")}
    assert (
        rows["B", "unknown", "unknown"].requests,
        rows["B", "unknown", "unknown"].conversions,
    ) == (1, 1)


def test_line_dialect_snapshots_have_no_v2_columns_to_use(tmp_path: Path) -> None:
    write_events_snapshot(tmp_path, _events())
    events = load_attribution_events(tmp_path)
    assert events["ab_variant"].isna().all() and events["model_version"].isna().all()
    assert set(attribute(events, timedelta(hours=1))["variant"]) == {"A", "B"}


def test_loop_writes_each_round_results(tmp_path: Path) -> None:
    write_events_snapshot(tmp_path / "snap", _events())
    run_online_eval_loop(
        tmp_path / "snap", timedelta(hours=1), tmp_path / "out", interval_s=0, iterations=2
    )
    assert pq.read_table(tmp_path / "out" / "conversion.parquet").num_rows == 2


def test_empty_snapshot_dir(tmp_path: Path) -> None:
    res = run_online_eval(tmp_path / "none", timedelta(hours=1), tmp_path / "out")
    assert res.conversion.empty
    assert pq.read_table(res.attribution_path).num_rows == 0
