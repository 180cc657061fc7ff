"""The shipped configs (``serve_config.yaml``, ``configs/*.yaml``) are one consistent set: each
stage reads and writes the same locations, the retrain cycle retrains what the control slot
serves (scored the way the train job scored it), and the slots retraining uses exist."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from ray_app.config import load_config
from ray_app.ingest.config import IngestConfig
from ray_app.paths import resolve_location
from ray_app.retraining.config import RetrainConfig
from ray_app.serving.config import APP_NAME, ServeArgs, load_serve_args
from ray_app.training.job import TrainConfig

ROOT = Path(__file__).resolve().parent.parent
SERVE_CONFIG = ROOT / "serve_config.yaml"


@pytest.fixture(scope="module")
def shipped() -> dict[str, Any]:
    return {
        "serve": load_serve_args(SERVE_CONFIG),
        "train": load_config(TrainConfig, ROOT / "configs" / "train.yaml"),
        "retrain": load_config(RetrainConfig, ROOT / "configs" / "retrain.yaml"),
        "ingest": load_config(IngestConfig, ROOT / "configs" / "ingest.yaml"),
    }


def test_serve_config_is_a_deploy_config_of_the_app_builder() -> None:
    deploy = yaml.safe_load(SERVE_CONFIG.read_text())
    (app,) = [a for a in deploy["applications"] if a["name"] == APP_NAME]
    assert app["import_path"] == "ray_app.serving.app:build_app"
    ServeArgs.model_validate(app["args"])  # what build_app validates on the cluster


def test_every_stage_uses_the_same_registry_and_snapshots(
    shipped: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAY_APP_HOME", "/srv/ray-app")
    registries = {
        name: resolve_location(shipped[name].registry) for name in ("serve", "train", "retrain")
    }
    assert len(set(registries.values())) == 1, registries
    snapshots = {
        name: resolve_location(str(shipped[name].snapshot_dir))
        for name in ("ingest", "train", "retrain")
    }
    assert len(set(snapshots.values())) == 1, snapshots
    # Relative, so that RAY_APP_HOME (a job's runtime_env, the nodes' environment) places them.
    assert next(iter(registries.values())).startswith("/srv/ray-app/")
    assert next(iter(snapshots.values())).startswith("/srv/ray-app/")


def test_retrain_retrains_the_control_slots_model_as_the_train_job_does(
    shipped: dict[str, Any],
) -> None:
    serve: ServeArgs = shipped["serve"]
    retrain: RetrainConfig = shipped["retrain"]
    train: TrainConfig = shipped["train"]
    slots = {v.name: v for v in serve.variants}
    assert retrain.control_variant in slots
    assert slots[retrain.control_variant].model == retrain.model.name
    (trained,) = [m for m in train.models if m.name == retrain.model.name]
    assert trained.config == retrain.model.config, "the gate would compare two configs"
    # The offline gate compares the candidate's metrics with the serving version's manifest,
    # which the train job wrote: every setting both jobs have (holdout, feedback, features,
    # signing, screens) must agree, or the gate compares two different measurements.
    shared = (set(TrainConfig.model_fields) & set(RetrainConfig.model_fields)) - {
        "snapshot_dir",
        "registry",
    }
    assert {"feedback", "test_fraction", "k", "seed"} <= shared
    for field in sorted(shared):
        assert getattr(retrain, field) == getattr(train, field), field


def test_the_canary_slot_exists_serves_the_same_model_and_starts_without_traffic(
    shipped: dict[str, Any],
) -> None:
    serve: ServeArgs = shipped["serve"]
    retrain: RetrainConfig = shipped["retrain"]
    slots = {v.name: v for v in serve.variants}
    canary = slots[retrain.canary_variant]
    assert canary.model == retrain.model.name
    assert canary.weight == 0.0
    assert canary.follow is None, "a following canary would move with production"
    assert slots[retrain.control_variant].follow == "production"


def test_the_train_job_registers_every_model_the_service_loads(shipped: dict[str, Any]) -> None:
    serve: ServeArgs = shipped["serve"]
    trained = {m.name for m in shipped["train"].models}
    needed = {v.model for v in serve.variants} | {serve.fallback_model}
    assert needed <= trained, needed - trained


def test_ray_app_serve_reads_the_deploy_config_or_plain_args(tmp_path: Path) -> None:
    from ray_app.config import ConfigError

    deployed = load_serve_args(SERVE_CONFIG, registry="/srv/registry")
    assert deployed.registry == "/srv/registry", "flags override the file"
    assert [v.name for v in deployed.variants] == ["A", "B", "canary"]
    plain = tmp_path / "args.yaml"
    plain.write_text("model: itemknn\ndefault_k: 5\n")
    args = load_serve_args(plain)
    assert (args.variants[0].model, args.default_k) == ("itemknn", 5)
    other = tmp_path / "other.yaml"
    other.write_text("applications: [{name: other, import_path: x:y}]\n")
    with pytest.raises(ConfigError, match=f"{other}: no application named 'recommender'"):
        load_serve_args(other)
