"""Ray Tune search: the shipped search spaces validate, and tiny searches return configs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
    with pytest.raises(ConfigError, match=r"\['neighbours'\] are not itemknn config fields"):
        space = {"neighbours": {"type": "choice", "values": [1]}}
        _check_fields("itemknn", TuneSpaceConfig.model_validate({"space": space}))
    with pytest.raises(ConfigError, match="search space is for model 'ease'"):
        _check_fields("itemknn", TuneSpaceConfig(model="ease"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("space:\n  k: {type: uniform, low: 5, high: 1}\n")
    with pytest.raises(ConfigError, match="low"):
        load_space(bad)


def _space() -> dict[str, Any]:
    """On the checkerboard, pruning every item-item similarity (0.99) ruins the ranking but
    concentrates exposure: the higher NDCG and the higher Gini point at different values."""
    return {
        "model": "itemknn",
        "metric": "gini",
        "num_samples": 4,
        "fixed": {"feedback": "binary"},
        "space": {"min_similarity": {"type": "choice", "values": [0.0, 0.99]}},
    }


@pytest.mark.integration
def test_search_picks_the_trial_with_the_best_passed_metric(ray_session: None) -> None:
    train, valid = checkerboard(40)
    outcome = search("itemknn", _space(), train, valid, metric="ndcg@10")
    assert outcome.metric == "ndcg@10", "an explicit metric overrides the YAML's"
    assert set(outcome.trials["min_similarity"]) == {0.0, 0.99}, "both values were tried"
    assert outcome.best_config == {"feedback": "binary", "min_similarity": 0.0}
    assert outcome.best_metrics["ndcg@10"] == outcome.trials["ndcg@10"].max() == 1.0
    assert outcome.trials.iloc[0]["min_similarity"] == 0.0  # sorted best first


@pytest.mark.integration
def test_run_tune_maximises_the_search_spaces_metric(ray_session: None) -> None:
    train, valid = checkerboard(40)
    best = run_tune("itemknn", _space(), train, valid)
    assert best == {"feedback": "binary", "min_similarity": 0.99}, "the YAML's metric decided"


@pytest.mark.integration
def test_search_two_tower_reports_per_epoch(ray_session: None) -> None:
    train, valid = checkerboard(16)
    space = {
        "fixed": {"num_workers": 0, "epochs": 3, "embedding_dim": 8, "hidden": 0},
        "space": {"lr": {"type": "loguniform", "low": 0.005, "high": 0.05}},
        "scheduler": {"max_t": 3, "grace_period": 1},
    }
    outcome = search("two_tower", space, train, valid, num_samples=2, metric="ndcg@10")
    assert set(outcome.best_config) >= {"lr", "epochs", "num_workers"}
    assert len(outcome.trials) == 2
    assert outcome.trials["iterations"].max() == 3  # one report per epoch
    best = outcome.trials.iloc[0]
    assert outcome.best_config["lr"] == best["lr"]
    assert outcome.best_metrics["ndcg@10"] == best["ndcg@10"] == outcome.trials["ndcg@10"].max()
