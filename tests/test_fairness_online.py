"""Conversion per user group and variant from the stream: known answers on a hand-written event
log, the parity gap and its gauges, and ``ray-app fairness online``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from helpers import write_events_snapshot
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from ray_app.cli import app
from ray_app.evaluation.online import attribute
from ray_app.evaluation.online_fairness import (
    OnlineFairnessConfig,
    conversion_by_group,
    conversion_parity,
    online_user_groups,
    run_online_fairness,
)
from ray_app.events.model import Event, RecoEvent, WatchEvent

T0 = datetime(2026, 1, 1, tzinfo=UTC)
PROFILES = pd.DataFrame(
    {
        "user_id": ["1", "2", "3", "4"],
        "age": [23, 30, 41, 67],
        "gender": ["F", "F", "M", "M"],
        "occupation": ["writer", "writer", "artist", "artist"],
    }
)


def _t(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def _events() -> list[Event]:
    """Variant A: F users 1, 2 convert 2 of 3 lists; M user 3 converts 0 of 2. Variant B: M user
    4 converts 1 of 2; user 5 (no profile) 0 of 1. Everything is mature by minute 200."""
    return [
        RecoEvent(_t(0), "1", "A@ease:1", 200, ["10", "11"], 3.0),
        WatchEvent(_t(2), "1", "10", 0),
        RecoEvent(_t(5), "2", "A@ease:1", 200, ["12"], 3.0),
        WatchEvent(_t(6), "2", "12", 0),
        RecoEvent(_t(7), "2", "A@ease:1", 200, ["13"], 3.0),
        RecoEvent(_t(8), "3", "A@ease:1", 200, ["10"], 3.0),
        RecoEvent(_t(9), "3", "A@ease:1", 200, ["11"], 3.0),
        RecoEvent(_t(10), "4", "B@ease:2", 200, ["14"], 3.0),
        WatchEvent(_t(11), "4", "14", 0),
        RecoEvent(_t(12), "4", "B@ease:2", 200, ["15"], 3.0),
        RecoEvent(_t(13), "5", "B@ease:2", 200, ["16"], 3.0),
        WatchEvent(_t(200), "5", "99", 0),  # moves the horizon: every list above is mature
    ]


@pytest.fixture()
def snap(tmp_path: Path) -> Path:
    root = tmp_path / "snap"
    write_events_snapshot(root, _events())
    return root


def _frame(snap: Path) -> pd.DataFrame:
    from ray_app.evaluation.online import load_attribution_events

    return load_attribution_events(snap)


def test_user_groups_cover_users_without_watches(snap: Path) -> None:
    groups = online_user_groups(_frame(snap), PROFILES)
    assert groups.loc["3", "gender"] == "M" and groups.loc["3", "activity"] == "<20"
    assert groups.loc["4", "age_band"] == "55+" and groups.loc["5", "gender"] == "unknown"
    assert groups.loc["1", "occupation"] == "writer"


def test_conversion_by_group_and_parity_known_answer(snap: Path) -> None:
    events = _frame(snap)
    attributed = attribute(events, timedelta(hours=1))
    by = conversion_by_group(attributed, online_user_groups(events, PROFILES))
    gender = by[by["group_kind"] == "gender"].set_index(["variant", "group"])
    assert gender.loc[("A", "F"), ["requests", "users", "conversions"]].tolist() == [3, 2, 2]
    assert gender.loc[("A", "M"), "conversion_rate"] == 0.0
    assert gender.loc[("B", "M"), "conversion_rate"] == 0.5
    assert gender.loc[("B", "unknown"), "requests"] == 1
    parity = conversion_parity(by, min_requests=2).set_index(["variant", "group_kind"])
    a = parity.loc[("A", "gender")]
    assert a["gap"] == pytest.approx(2 / 3) and a["ratio"] == 0.0
    assert (a["best"], a["worst"]) == ("F", "M")
    # B's unknown-gender group has one request: too few to judge, so B has no gender gap.
    assert ("B", "gender") not in parity.index


def test_run_writes_tables_and_the_gauges_the_alert_reads(snap: Path, tmp_path: Path) -> None:
    cfg = OnlineFairnessConfig(min_requests=2, parity_bound=0.1, dataset=None)
    res = run_online_fairness(snap, tmp_path / "out", cfg, PROFILES)
    assert [p.name for p in res.files] == [
        "conversion_by_group.parquet",
        "conversion_parity.parquet",
        "metrics.prom",
    ]
    assert pd.read_parquet(res.files[0]).equals(res.by_group)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(res.files[2].read_text())
        for s in family.samples
    }
    gap_key = (
        "ray_app_online_conversion_parity_gap",
        (("group_kind", "gender"), ("variant", "A")),
    )
    assert samples[gap_key] == pytest.approx(2 / 3)
    rate_key = (
        "ray_app_online_conversion_rate_by_group",
        (("group", "F"), ("group_kind", "gender"), ("variant", "A")),
    )
    assert samples[rate_key] == pytest.approx(2 / 3)
    assert samples[("ray_app_online_conversion_parity_gap_bound", ())] == 0.1
    assert list(res.over_bound(0.1)["group_kind"]) == ["age_band", "gender", "occupation"]


def test_cli_prints_the_gaps_and_flags_those_over_the_bound(snap: Path, tmp_path: Path) -> None:
    out = tmp_path / "online"
    result = CliRunner().invoke(
        app,
        [
            *("fairness", "online", "--snapshot-dir", str(snap), "--out", str(out)),
            *("--dataset", "", "--min-requests", "2", "--parity-bound", "0.05"),
        ],
    )
    assert result.exit_code == 0, result.output
    # Without profiles only activity bands exist: all users are "<20", so no gap to judge.
    assert "no grouping has two groups with 2+ mature requests yet" in result.output
    assert (out / "metrics.prom").is_file()


def test_cli_bad_window_is_one_line(snap: Path) -> None:
    result = CliRunner().invoke(
        app, ["fairness", "online", "--snapshot-dir", str(snap), "--window-minutes", "0"]
    )
    assert result.exit_code == 2
    assert result.output.strip() == "error: --window-minutes must be positive, got 0.0"
