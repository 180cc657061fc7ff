"""Ray Tune search: the shipped search spaces validate, and tiny searches return configs."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from model_contract import checkerboard

from ray_app.config import ConfigError
from ray_app.models.catalog import build_model
from ray_app.training.tune import TuneSpaceConfig, _check_fields, load_space, run_tune, search

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "tune"


@pytest.mark.parametrize("model", ["itemknn", "userknn", "ease", "two_tower"])
def test_shipped_search_spaces_are_valid(model: str) -> None:
    space = load_space(CONFIGS / f"{model}.yaml")
    assert space.model == model
    _check_fields(model, space)
    build_model(model, space.fixed)  # the fixed part alone is a valid config


def test_bad_spaces_name_the_field(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\['neighbours'\] are not itemknn config fields"):
        _check_fields(
            "itemknn", TuneSpaceConfig(space={"neighbours": {"type": "choice", "values": [1]}})
        )  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="search space is for model 'ease'"):
        _check_fields("itemknn", TuneSpaceConfig(model="ease"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("space:\n  k: {type: uniform, low: 5, high: 1}\n")
    with pytest.raises(ConfigError, match="low"):
        load_space(bad)


def _frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    train, valid = checkerboard(16)
    return train, valid


@pytest.mark.integration
def test_run_tune_itemknn_tiny(ray_session: None) -> None:
    train, valid = _frames()
    space = {
        "fixed": {"feedback": "binary"},
        "space": {"k": {"type": "choice", "values": [1, 20]}},
    }
    best = run_tune("itemknn", space, train, valid, num_samples=2)
    assert best["feedback"] == "binary" and best["k"] in (1, 20)
    build_model("itemknn", best)


@pytest.mark.integration
def test_search_two_tower_reports_per_epoch(ray_session: None) -> None:
    train, valid = _frames()
    space = {
        "fixed": {"num_workers": 0, "epochs": 3, "embedding_dim": 8, "hidden": 0},
        "space": {"lr": {"type": "loguniform", "low": 0.005, "high": 0.05}},
        "scheduler": {"max_t": 3, "grace_period": 1},
    }
    outcome = search("two_tower", space, train, valid, num_samples=2, metric="ndcg@10")
    assert set(outcome.best_config) >= {"lr", "epochs", "num_workers"}
    assert len(outcome.trials) == 2
    assert outcome.trials["iterations"].max() == 3  # one report per epoch
    assert 0.0 <= outcome.best_metrics["ndcg@10"] <= 1.0
