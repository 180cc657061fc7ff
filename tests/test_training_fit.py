"""The shared training step without Ray: fit + evaluate, per-epoch reports by capability, the
features tuning gets, and the error for a missing snapshot directory."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, Self

import pandas as pd
import pytest
from model_contract import checkerboard

from ray_app.errors import UserError
from ray_app.models.base import EpochCallback, EpochTrainable, Interactions, Recommender
from ray_app.models.catalog import build_model
from ray_app.models.popularity import Popularity
from ray_app.training import fit as fit_module
from ray_app.training import job as job_module
from ray_app.training import tune as tune_module
from ray_app.training.data import TrainingData
from ray_app.training.fit import FitInputs, fit_and_evaluate
from ray_app.training.job import ModelSpec, TrainConfig, run_training, tune_specs


class EpochPopularity(Popularity, EpochTrainable):
    """Popularity that trains in three 'epochs' (each a full fit), for the capability."""

    def fit_with_epochs(self, interactions: Interactions, on_epoch: EpochCallback) -> Self:
        for epoch in (1, 2, 3):
            self.fit(interactions)
            on_epoch(epoch, {"loss": 1.0 / epoch}, self)
        return self


def _epoch_models(monkeypatch: pytest.MonkeyPatch) -> None:
    def build(name: str, config: Mapping[str, Any] | None = None) -> Recommender[Any]:
        return EpochPopularity() if name == "popularity" else build_model(name, config)

    monkeypatch.setattr(fit_module, "build_model", build)


def _inputs(**kw: Any) -> FitInputs:
    train, test = checkerboard(8)
    catalog = sorted(set(train["item_id"]) | set(test["item_id"]))
    return FitInputs(train=train, test=test, catalog=catalog, k=5, **kw)


def test_epoch_trainable_models_report_holdout_metrics_after_every_epoch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _epoch_models(monkeypatch)
    reports: list[tuple[int, dict[str, float]]] = []
    fitted = fit_and_evaluate("popularity", {}, _inputs(), lambda e, m: reports.append((e, m)))
    assert [e for e, _ in reports] == [1, 2, 3]
    assert reports[2][1]["loss"] == pytest.approx(1 / 3)
    assert reports[2][1]["ndcg@5"] == fitted.metrics["ndcg@5"]


def test_other_models_fit_once_and_report_nothing_per_epoch() -> None:
    reports: list[int] = []
    fitted = fit_and_evaluate("itemknn", {}, _inputs(), lambda e, m: reports.append(e))
    assert reports == []
    assert fitted.metrics["ndcg@5"] == 1.0  # item-KNN solves the checkerboard


def test_refit_serves_all_data_while_metrics_stay_those_of_the_train_split() -> None:
    inputs = _inputs()
    everything = pd.concat(
        [inputs.train, inputs.test, pd.DataFrame({"user_id": ["new"], "item_id": ["i0"]})]
    )
    fitted = fit_and_evaluate("popularity", {}, replace(inputs, refit_on=everything))
    assert "new" in fitted.model.interactions.user_ids
    alone = fit_and_evaluate("popularity", {}, inputs)
    assert fitted.metrics == alone.metrics
    assert "new" not in alone.model.interactions.user_ids


def test_tune_trials_report_per_epoch_by_capability_not_by_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import ray.tune

    reports: list[dict[str, float]] = []
    monkeypatch.setattr(ray.tune, "report", lambda metrics: reports.append(dict(metrics)))
    tune_module._trainable({}, model_name="itemknn", inputs=_inputs())
    assert len(reports) == 1 and "epoch" not in reports[0]
    reports.clear()
    _epoch_models(monkeypatch)
    tune_module._trainable({}, model_name="popularity", inputs=_inputs())
    assert [r["epoch"] for r in reports] == [1, 2, 3]
    assert all("ndcg@5" in r and "loss" in r for r in reports)


def test_tuning_in_the_train_job_gets_the_catalogues_features(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen: dict[str, Any] = {}

    def fake_run_tune(name: str, space: Any, train: Any, valid: Any, **kw: Any) -> dict[str, Any]:
        seen.update(kw)
        return {"lr": 0.01}

    monkeypatch.setattr(job_module, "run_tune", fake_run_tune)
    train, _ = checkerboard(8)
    movies = pd.DataFrame({"item_id": ["i0"], "genres": [["Drama"]], "year": [1999]})
    users = pd.DataFrame({"user_id": ["u0"], "age": [30], "gender": ["F"], "occupation": ["x"]})
    data = TrainingData(train, sorted(train["item_id"].unique()), {}, 1, movies, users)
    spec = ModelSpec(name="two_tower", config={"epochs": 2}, tune=tmp_path / "space.yaml")
    [(tuned, record)] = tune_specs([spec], train, data, seed=0)
    assert seen["item_features"] is movies and seen["user_features"] is users
    assert tuned.config == {"epochs": 2, "lr": 0.01}
    assert record == {"space": str(tmp_path / "space.yaml"), "best": {"lr": 0.01}}


def test_missing_snapshot_directory_is_a_user_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(UserError) as err:
        run_training(TrainConfig(snapshot_dir=missing, registry=str(tmp_path / "reg")))
    message = str(err.value)
    assert f"snapshot directory {missing} does not exist" in message
    assert "ray-app ingest" in message and "\n" not in message


def test_live_events_with_sub_second_times_train(tmp_path: Path) -> None:
    """Simulated and served events carry microseconds; training read them with a safe cast to
    whole seconds, which refused them (ArrowInvalid) the first time a loop retrained on them."""
    from datetime import UTC, datetime, timedelta

    from helpers import write_events_snapshot

    from ray_app.events.model import RateEvent, WatchEvent
    from ray_app.training.data import load_training_data
    from ray_app.training.interactions import FeedbackConfig

    at = datetime(2026, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
    events = [WatchEvent(at + timedelta(seconds=i), str(i % 3), str(i), 0) for i in range(6)]
    events.append(RateEvent(at + timedelta(seconds=9.5), "0", "5", 4))
    write_events_snapshot(tmp_path, events)
    data = load_training_data(str(tmp_path), FeedbackConfig(), None)
    assert len(data.frame) == 7  # six watched pairs and one rated
    last = data.frame.set_index(["user_id", "item_id"]).loc[("0", "5"), "timestamp"]
    assert last == int((at + timedelta(seconds=9)).timestamp())  # truncated, not refused
