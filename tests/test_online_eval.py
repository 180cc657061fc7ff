"""Online attribution: known answers on a tiny hand-written event log, Parquet + gauges."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from ray_app.evaluation.online import attribute, conversion_table, run_online_eval
from ray_app.events.reco import parse_server_column
from ray_app.events.line_dialect import format_line, parse_line_batch
from ray_app.events.model import RecoEvent, WatchEvent
from ray_app.snapshots.protocol import BatchId, write_batch

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _t(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def _events() -> list[RecoEvent | WatchEvent]:
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


def _frame() -> pd.DataFrame:
    lines = [format_line(e).encode() for e in _events()]
    return parse_line_batch(
        lines, topic="movielog", partitions=0, offsets=list(range(len(lines)))
    ).good.to_pandas()


def test_attribution_known_answer() -> None:
    a = attribute(_frame(), timedelta(hours=1)).sort_values("ts")
    assert a["converted"].tolist() == [True, False, False, True, False]
    assert a["mature"].tolist() == [True, True, True, True, False]
    conv = conversion_table(a).set_index("variant")
    assert conv.loc["A", "requests"] == 2 and conv.loc["A", "conversions"] == 1
    assert conv.loc["B", "requests"] == 2 and conv.loc["B", "conversions"] == 1
    assert conv.loc["B", "users"] == 1 and conv.loc["B", "version"] == "2"


def test_longer_window_catches_late_watch() -> None:
    a = attribute(_frame(), timedelta(hours=3)).sort_values("ts")
    assert a["converted"].tolist()[:2] == [True, True]


def test_parse_server() -> None:
    got = parse_server_column(pd.Series(["A@itemknn:3", "canary@two_tower:2026-01-01", "srv-1", None]))
    assert got.values.tolist() == [
        ["A", "itemknn", "3"],
        ["canary", "two_tower", "2026-01-01"],
        ["srv-1", "unknown", "unknown"],
        ["unknown", "unknown", "unknown"],
    ]


def test_window_must_be_positive() -> None:
    with pytest.raises(ValueError, match="window"):
        attribute(_frame(), timedelta(0))


def test_run_online_eval_writes_parquet_and_gauges(tmp_path: Path) -> None:
    lines = [format_line(e).encode() for e in _events()]
    parsed = parse_line_batch(
        lines, topic="movielog", partitions=0, offsets=list(range(len(lines)))
    )
    write_batch(
        tmp_path / "snap", BatchId("movielog", 0, 0, len(lines) - 1), parsed.good, parsed.dead
    )
    res = run_online_eval(tmp_path / "snap", timedelta(hours=1), tmp_path / "out")
    assert pq.read_table(res.conversion_path).num_rows == 2
    assert pq.read_table(res.attribution_path).num_rows == 5
    text = res.metrics_path.read_text()
    assert 'ray_app_online_conversion_rate{model="pop",variant="A",version="1"} 0.5' in text
    assert "ray_app_online_attribution_window_seconds 3600.0" in text


def test_empty_snapshot_dir(tmp_path: Path) -> None:
    res = run_online_eval(tmp_path / "none", timedelta(hours=1), tmp_path / "out")
    assert res.conversion.empty
