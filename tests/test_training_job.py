"""The train job end to end on Ray: snapshots → one loader → tuned and plain models →
registered versions whose manifests say what they were trained on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from helpers import write_ratings_snapshot
from rich.console import Console

from ray_app.commands.train import print_train_result
from ray_app.registry.store import Registry, read_item_metadata
from ray_app.training import job as job_module
from ray_app.training.job import ModelSpec, TrainConfig, TrainResult, run_training

pytestmark = [pytest.mark.integration, pytest.mark.realdata]
SPACES = Path(__file__).resolve().parents[1] / "configs" / "tune"


def test_train_job_tunes_with_the_catalogues_features_and_records_provenance(
    ray_session: None, ml100k: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    snaps = tmp_path / "snapshots"
    ratings = ml100k.ratings[ml100k.ratings["user_id"].astype(int) <= 60]
    ratings = ratings.assign(timestamp=1_700_000_000)  # one date: one file per batch
    half = len(ratings) // 2
    nxt = write_ratings_snapshot(snaps, ratings.iloc[:half])
    end = write_ratings_snapshot(snaps, ratings.iloc[half:], first=nxt)
    tuned_with: dict[str, Any] = {}

    def fake_run_tune(name: str, space: Any, train: Any, valid: Any, **kw: Any) -> dict[str, Any]:
        tuned_with.update(kw)
        return {"k": 20}

    monkeypatch.setattr(job_module, "run_tune", fake_run_tune)
    registry = str(tmp_path / "registry")
    models = [ModelSpec(name="itemknn", tune=SPACES / "itemknn.yaml"), ModelSpec(name="popularity")]
    result = run_training(TrainConfig(snapshot_dir=snaps, registry=registry, models=models))

    assert len(tuned_with["item_features"]) == len(ml100k.movies)
    assert len(tuned_with["user_features"]) == len(ml100k.users)
    assert result.interactions == len(ratings) and result.snapshot_files == 2
    knn = next(mv for mv in result.versions if mv.name == "itemknn").manifest
    assert knn["config"]["k"] == 20 and knn["tuning"]["best"] == {"k": 20}
    assert knn["snapshot"]["offset_ranges"] == [
        {"topic": "movielog", "partition": 0, "first": 0, "last": nxt - 1},
        {"topic": "movielog", "partition": 0, "first": nxt, "last": end - 1},
    ]
    assert knn["snapshot"]["interactions"] == len(ratings)
    assert len(knn["snapshot"]["files"]) == 2
    assert "gender=F" in knn["metrics_by_group"], "groups come from the catalogue's profiles"
    pop = next(mv for mv in result.versions if mv.name == "popularity").manifest
    assert pop["snapshot"] == knn["snapshot"] and "tuning" not in pop
    assert read_item_metadata(Registry(registry)), "genres stored for the re-ranker"


def test_train_summary_reports_what_the_shilling_screen_left_out() -> None:
    out = Console(record=True, width=200)
    screen = {"flagged": 12, "users_scored": 940, "interactions_removed": 3_456}
    print_train_result(TrainResult(100, 10, 5, 1, shilling=screen), out)
    text = out.export_text()
    assert "12 of 940 scored users flagged, 3,456 of their interactions left out" in text
    out = Console(record=True, width=200)
    print_train_result(TrainResult(100, 10, 5, 1), out)
    assert "shilling" not in out.export_text()
