"""The loop commands through Typer: report, online-eval and drift on a synthetic snapshot."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
from helpers import write_events_snapshot
from typer.testing import CliRunner

from ray_app.commands.loop import register
from ray_app.events.model import Event, RateEvent, RecoEvent, WatchEvent


@pytest.fixture()
def app() -> typer.Typer:
    a = typer.Typer()

    @a.callback()
    def _root() -> None:  # a group, as in ray_app.cli
        pass

    register(a)
    return a


@pytest.fixture()
def snap(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    events: list[Event] = []
    for i in range(400):
        at = t0 + timedelta(minutes=i)
        user = str(i % 80)
        variant = "A" if int(user) % 2 else "B"
        items = [str(m) for m in rng.choice(50, 5, replace=False)]
        events.append(RecoEvent(at, user, f"{variant}@pop:1", 200, items, 2.0))
        if rng.random() < (0.2 if variant == "A" else 0.6):
            events.append(WatchEvent(at + timedelta(minutes=1), user, items[0], 0))
        # Ratings drift in the last quarter of the log.
        rating = int(rng.integers(3, 6)) if i < 300 else int(rng.integers(1, 3))
        events.append(RateEvent(at, user, items[1], rating))
    root = tmp_path / "snap"
    write_events_snapshot(root, events)
    return root


def test_experiment_report(app: typer.Typer, snap: Path, tmp_path: Path) -> None:
    out = tmp_path / "rep"
    res = CliRunner().invoke(
        app,
        [
            "experiment",
            "report",
            "--snapshot-dir",
            str(snap),
            "--out",
            str(out),
            "--control",
            "A",
            "--planned",
            "100",
            "--weights",
            "A=1,B=1",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "winner: B" in res.output
    report = json.loads((out / "report.json").read_text())
    assert report["winner"] == "B" and (out / "report.html").exists()


def test_bad_weights_name_the_option(app: typer.Typer, snap: Path, tmp_path: Path) -> None:
    res = CliRunner().invoke(
        app,
        [
            "experiment",
            "report",
            "--snapshot-dir",
            str(snap),
            "--out",
            str(tmp_path),
            "--weights",
            "A",
        ],
    )
    assert res.exit_code == 2, res.output
    assert "'A' is not NAME=WEIGHT" in res.output


def test_online_eval(app: typer.Typer, snap: Path, tmp_path: Path) -> None:
    res = CliRunner().invoke(
        app, ["online-eval", "--snapshot-dir", str(snap), "--out", str(tmp_path / "o")]
    )
    assert res.exit_code == 0, res.output
    conversion = pd.read_parquet(tmp_path / "o" / "conversion.parquet").set_index("variant")
    assert sorted(conversion.index) == ["A", "B"]
    rate = conversion["conversion_rate"].astype(float)
    assert rate["B"] > rate["A"]


def test_drift_exits_1_on_drift(app: typer.Typer, snap: Path, tmp_path: Path) -> None:
    prom = tmp_path / "drift.prom"
    res = CliRunner().invoke(
        app,
        [
            "drift",
            "--snapshot-dir",
            str(snap),
            "--recent-hours",
            "1.6",
            "--metrics-file",
            str(prom),
            "--json",
        ],
    )
    assert res.exit_code == 1, res.output
    rating = next(r for r in json.loads(res.output) if r["feature"] == "rating")
    assert rating["drifted"]
    assert 'ray_app_drift_detected{feature="rating"} 1.0' in prom.read_text()


@pytest.mark.parametrize(
    ("cmd", "option"),
    [
        (["simulate"], "--endpoint"),
        (["online-eval"], "--window-minutes"),
        (["experiment", "report"], "--planned"),
        (["drift"], "--recent-hours"),
    ],
)
def test_help(app: typer.Typer, cmd: list[str], option: str) -> None:
    res = CliRunner().invoke(app, [*cmd, "--help"])
    assert res.exit_code == 0, res.output
    assert option in res.output
