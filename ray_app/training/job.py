"""The train job: snapshots → interactions → fit + evaluate each model on Ray → registry."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from ray_app.registry.signing import SigningConfig
from ray_app.registry.store import ModelVersion, Registry
from ray_app.snapshots.protocol import committed_batches
from ray_app.snapshots.read import snapshot_files
from ray_app.training.interactions import FeedbackConfig, read_interactions

log = logging.getLogger(__name__)


class ModelSpec(BaseModel):
    """One model to train: its catalogue name and config overrides."""

    model_config = ConfigDict(extra="forbid")

    name: str
    config: dict[str, Any] = Field(default_factory=dict)
    tune: Path | None = None
    """Search-space YAML (``configs/tune/<model>.yaml``): tune with Ray Tune (ASHA) on a
    validation split of the training data first; the best config is what gets registered."""
    tune_samples: int | None = Field(default=None, ge=1)
    """Trials (default: the search-space file's ``num_samples``)."""


class TrainConfig(BaseModel):
    """Everything the train job needs; loadable from YAML."""

    model_config = ConfigDict(extra="forbid")

    snapshot_dir: Path = Path("data/snapshots")
    registry: str = "data/registry"
    models: list[ModelSpec] = Field(
        default_factory=lambda: [
            ModelSpec(name="ease"),
            ModelSpec(name="itemknn"),
            ModelSpec(name="popularity"),
        ],
        min_length=1,
    )
    feedback: FeedbackConfig = Field(default_factory=FeedbackConfig)
    test_fraction: float = Field(default=0.2, gt=0, lt=1)
    """Per-user holdout fraction for offline evaluation."""
    k: int = Field(default=10, ge=1)
    seed: int = 42
    signing: SigningConfig = Field(default_factory=SigningConfig)
    catalog_dataset: str | None = "ml-100k"
    """MovieLens dataset whose genres are stored beside the models for the diversity re-ranker
    (None: none; the re-ranker then keeps relevance order)."""


@dataclass
class TrainResult:
    interactions: int
    users: int
    items: int
    snapshot_files: int
    versions: list[ModelVersion] = field(default_factory=list)
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    seconds: float = 0.0


def _fit_and_evaluate(
    spec: ModelSpec,
    train: pd.DataFrame,
    test: pd.DataFrame,
    full: pd.DataFrame,
    k: int,
    catalog: list[str],
    user_groups: pd.DataFrame | None = None,
) -> tuple[Any, dict[str, float], dict[str, dict[str, float]]]:
    """Fit on the train split, evaluate on the holdout (overall and per user group), then
    refit on everything to serve."""
    from ray_app.evaluation.offline import evaluate, evaluate_by_group
    from ray_app.models.base import Interactions
    from ray_app.models.catalog import build_model

    train_i = Interactions.from_frame(train, item_ids=catalog)
    model = build_model(spec.name, spec.config).fit(train_i)
    metrics = evaluate(model, train_i, test, k=k)
    groups = (
        evaluate_by_group(model, train_i, test, user_groups, k=k) if user_groups is not None else {}
    )
    final = build_model(spec.name, spec.config).fit(Interactions.from_frame(full, item_ids=catalog))
    return final, metrics, groups


def _write_genres(registry: Registry, dataset: str, items: set[str]) -> pd.DataFrame | None:
    """Store the catalogue's genres beside the models; return the dataset's user profiles."""
    from ray_app.data.movielens import load
    from ray_app.registry.store import write_item_metadata

    try:
        ml = load(dataset)
    except Exception:  # no network and no cache: the re-ranker just keeps relevance order
        log.warning(
            "could not load %s for item genres; re-ranker will not diversify",
            dataset,
            exc_info=True,
        )
        return None
    movies = ml.movies[ml.movies["item_id"].isin(items)]
    write_item_metadata(
        registry, dict(zip(movies["item_id"], movies["genres"].map(list), strict=True))
    )
    return ml.users


def run_training(config: TrainConfig) -> TrainResult:
    """Train, evaluate and register every model in ``config.models`` (in parallel on Ray)."""
    import ray

    from ray_app.evaluation.split import per_user_holdout

    t0 = time.monotonic()
    files = snapshot_files(config.snapshot_dir)
    frame = read_interactions(files, config.feedback)
    catalog = sorted(frame["item_id"].unique().tolist())
    train, test = per_user_holdout(frame, test_fraction=config.test_fraction, seed=config.seed)
    batches = committed_batches(config.snapshot_dir)
    snapshot = {
        "dir": str(Path(config.snapshot_dir).resolve()),
        "files": [str(p.relative_to(config.snapshot_dir)) for p in files],
        "offset_ranges": [
            {"topic": b.topic, "partition": b.partition, "first": b.first, "last": b.last}
            for b in batches
        ],
        "interactions": len(frame),
        "feedback": config.feedback.model_dump(mode="json"),
    }
    tuning: dict[str, dict[str, Any]] = {}
    specs: list[ModelSpec] = []
    for spec in config.models:
        if spec.tune is None:
            specs.append(spec)
            continue
        from ray_app.training.tune import run_tune

        # Tune on a validation split carved from the training split, never from the holdout.
        tr, va = per_user_holdout(train, test_fraction=0.125, seed=config.seed + 1)
        best = run_tune(spec.name, spec.tune, tr, va, num_samples=spec.tune_samples)
        tuning[spec.name] = {"space": str(spec.tune), "best": best}
        specs.append(ModelSpec(name=spec.name, config={**spec.config, **best}))
    from ray_app.evaluation.offline import user_group_frame

    registry = Registry(config.registry, config.signing)
    users_meta = None
    if config.catalog_dataset:
        users_meta = _write_genres(registry, config.catalog_dataset, set(catalog))
    groups = ray.put(user_group_frame(train, users_meta))
    fit = ray.remote(_fit_and_evaluate)
    refs = {
        spec.name: fit.remote(
            spec, ray.put(train), ray.put(test), ray.put(frame), config.k, catalog, groups
        )
        for spec in specs
    }
    result = TrainResult(len(frame), frame["user_id"].nunique(), len(catalog), len(files))
    for name, ref in refs.items():
        model, metrics, groups = ray.get(ref)
        extra: dict[str, Any] = {"metrics_by_group": groups}
        if name in tuning:
            extra["tuning"] = tuning[name]
        mv = registry.register(model, metrics=metrics, snapshot=snapshot, extra=extra)
        log.info("registered %s %s: %s", name, mv.version, json.dumps(metrics))
        result.versions.append(mv)
        result.metrics[name] = metrics
    result.seconds = time.monotonic() - t0
    return result
