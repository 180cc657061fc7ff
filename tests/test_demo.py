"""The demo: its pieces (shipped configs pointed at the demo's directory, the checks ``--once``
exits by, the console off a terminal) and, slow, ``ray-app demo --once`` run for real."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from rich.console import Console

from ray_app.broker.embedded import free_port
from ray_app.config import ConfigError
from ray_app.demo.board import Board
from ray_app.demo.config import DemoConfig
from ray_app.demo.pipeline import STAGES
from ray_app.demo.shipped import ingest_configs, retrain_config, serve_args, train_config
from ray_app.demo.summary import Checks
from ray_app.serving.security import token_hash

REPO = Path(__file__).resolve().parents[1]


def test_shipped_configs_point_at_the_demo_directory(tmp_path: Path) -> None:
    snaps, reg = str(tmp_path / "snapshots"), str(tmp_path / "registry")
    train = train_config(REPO, tmp_path, snaps, reg)
    retrain = retrain_config(REPO, tmp_path, snaps, reg)
    assert (str(train.snapshot_dir), train.registry) == (snaps, reg)
    assert (str(retrain.snapshot_dir), retrain.registry) == (snaps, reg)
    for cfg in (train, retrain):
        if cfg.shilling.metrics_file is not None:
            assert Path(cfg.shilling.metrics_file).parent == tmp_path / "metrics"

    line, js = ingest_configs(REPO, snaps, batch_delay_s=2.0)
    assert line.dialect == "line" and js.dialect == "json"
    assert str(line.snapshot_dir) == str(js.snapshot_dir) == snaps
    assert line.group_id != js.group_id
    assert f"{js.json_topic_prefix}.reco_responses" in js.topics

    args = serve_args(REPO, reg, "127.0.0.1:9", token_hash("t0ken"))
    assert args.registry == reg and args.kafka_bootstrap_servers == "127.0.0.1:9"
    assert any(k.sha256 == token_hash("t0ken") and k.role == "admin" for k in args.api_keys)
    # The shipped graph is served as written: the retrain config's slots are in it.
    names = [v.name for v in args.variants]
    assert retrain.control_variant in names and retrain.canary_variant in names


def test_missing_shipped_config_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--config-dir"):
        train_config(tmp_path, tmp_path, "s", "r")


def test_workdir_must_be_local() -> None:
    with pytest.raises(ConfigError, match="local"):
        DemoConfig(workdir="s3://bucket/demo").home()


def test_checks_name_every_unmet_requirement(tmp_path: Path) -> None:
    assert len(Checks().failures()) == 4
    html = tmp_path / "report.html"
    html.write_text("<html></html>")
    ok = Checks(
        events_ingested=10, reco_events_joined=1, promoted_version="v1", report_html=str(html)
    )
    assert ok.failures() == []
    assert replace(ok, promoted_version=None).failures() == ["no model version was promoted"]


def test_board_off_a_terminal_prints_each_stage_with_its_figures() -> None:
    out = io.StringIO()
    console = Console(file=out, width=200, force_terminal=False)
    with Board(console, ["one", "two"]) as board:
        board.watch("bg", lambda: "42 things")
        with board.stage("one") as note:
            note("7 widgets")
        with pytest.raises(RuntimeError), board.stage("two") as note:
            note("half way")
            raise RuntimeError("boom")
    text = out.getvalue()
    assert "✓ one  7 widgets" in text
    assert "✗ two  half way RuntimeError: boom" in text
    assert board.rows["one"].status == "done" and board.rows["two"].status == "failed"


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.realdata
def test_demo_once_closes_the_loop(tmp_path: Path) -> None:
    """``make demo ARGS=--once`` as a user runs it (own workdir and port): every stage ends
    with its figures, and the loop closes: events ingested, reco events joined to later
    watches, a version promoted and served, a report written."""
    workdir = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    cmd = [sys.executable, "-m", "ray_app", "demo", "--once"]
    cmd += ["--workdir", str(workdir), "--port", str(free_port()), "--config-dir", str(REPO)]
    proc = subprocess.run(
        cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=840, check=False
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    for stage in STAGES:
        assert f"✓ {stage}" in out, f"stage {stage} did not finish:\n{out[-6000:]}"

    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["ok"] and summary["failures"] == []
    checks = summary["checks"]
    # The replayed history alone is 320,000 line events (80% of ML-100K, 4 events a rating).
    assert summary["ingest"]["line"]["snapshot_rows"] > 320_000
    assert summary["ingest"]["json"]["snapshot_rows"] > 0  # the service's reco events
    assert checks["events_ingested"] >= 320_000
    assert checks["reco_events_joined"] > 0
    assert summary["freshness_s"] is not None  # a watch on Kafka changed the next answer
    variants = {r["variant"] for r in summary["conversion"]}
    assert {"A", "B"} <= variants
    promoted = checks["promoted_version"]
    assert promoted and summary["retrains"][0]["outcome"] == "promoted"
    slot_a = next(v for v in summary["variants"] if v["name"] == "A")
    assert slot_a["version"] == promoted
    html = Path(checks["report_html"])
    assert html.is_file() and "<html" in html.read_text().lower()
    assert summary["dashboard_url"].startswith("http") and summary["metrics_url"].endswith(
        "/metrics"
    )
    assert "the loop closed" in out
