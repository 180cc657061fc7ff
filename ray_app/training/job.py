"""The train job: snapshots → interactions → shilling screen → (tune →) fit + evaluate each
model on Ray → registry.

:func:`screen_training_data` and :func:`train_models` are the training step itself, shared
with the retraining cycle: leave out the users the shilling screen flags, split the data, tune
the specs that name a search space, then fit and evaluate every model (metrics, per-group
metrics and the fairness block) as a Ray task (:func:`~ray_app.training.fit.fit_and_evaluate`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from ray_app.evaluation.fairness import FairnessConfig
from ray_app.evaluation.offline import user_group_frame
from ray_app.evaluation.split import per_user_holdout
from ray_app.models.base import Recommender
from ray_app.paths import Location
from ray_app.registry.signing import SigningConfig
from ray_app.registry.store import ModelVersion, Registry, write_item_metadata
from ray_app.shilling.detector import ShillingConfig
from ray_app.shilling.screen import screen_frame, store_screen, write_screen_metrics
from ray_app.training.data import TrainingData, load_training_data
from ray_app.training.fit import FitInputs, fit_and_evaluate
from ray_app.training.interactions import FeedbackConfig
from ray_app.training.tune import run_tune

log = logging.getLogger(__name__)

TUNE_VALIDATION_FRACTION = 0.125
"""Share of each user's training rows held out to score tuning trials."""


class ModelSpec(BaseModel):
    """One model to train: its catalogue name and config overrides."""

    model_config = ConfigDict(extra="forbid")

    name: str
    """Catalogue name (``ease``, ``itemknn``, ``popularity``, ``userknn``, ``two_tower``)."""
    config: dict[str, Any] = Field(default_factory=dict)
    """Config overrides of the model's pydantic config."""
    tune: Path | None = None
    """Search-space YAML (``configs/tune/<model>.yaml``): tune with Ray Tune (ASHA) on a
    validation split of the training data first; the best config is what gets registered."""
    tune_samples: int | None = Field(default=None, ge=1)
    """Trials (default: the search-space file's ``num_samples``)."""


class TrainConfig(BaseModel):
    """Everything the train job needs; loadable from YAML."""

    model_config = ConfigDict(extra="forbid")

    snapshot_dir: Location = "data/snapshots"
    """Snapshot location written by ingest (a path, or a URI such as ``s3://bucket/snapshots``)."""
    registry: str = "data/registry"
    """Registry root (local path or pyarrow filesystem URI)."""
    models: list[ModelSpec] = Field(
        default_factory=lambda: [
            ModelSpec(name="ease"),
            ModelSpec(name="itemknn"),
            ModelSpec(name="popularity"),
        ],
        min_length=1,
    )
    """Models to train, evaluate and register."""
    feedback: FeedbackConfig = Field(default_factory=FeedbackConfig)
    """How watches and ratings become interaction weights."""
    test_fraction: float = Field(default=0.2, gt=0, lt=1)
    """Per-user holdout fraction for offline evaluation."""
    k: int = Field(default=10, ge=1)
    """Cut-off of the offline metrics."""
    seed: int = 42
    """Seed of the holdout split (and of the tuning split, plus one)."""
    signing: SigningConfig = Field(default_factory=SigningConfig)
    """How registered versions are signed."""
    catalog_dataset: str | None = "ml-100k"
    """MovieLens dataset whose movies and user profiles are the models' item and user features
    (and tuning's), and whose genres are stored beside the models for the diversity re-ranker
    (None: no features, and the re-ranker keeps relevance order)."""
    fairness: FairnessConfig = Field(default_factory=FairnessConfig)
    """The fairness block every registered version carries."""
    shilling: ShillingConfig = Field(default_factory=ShillingConfig)
    """The shilling screen run on the snapshot data before training."""


@dataclass(frozen=True)
class TrainedModel:
    """One model out of the training step, ready to register."""

    name: str
    model: Recommender[Any]
    """Fitted on all the data (what serves)."""
    metrics: dict[str, float]
    """Holdout metrics of the same config fitted on the train split."""
    metrics_by_group: dict[str, dict[str, float]]
    tuning: dict[str, Any] | None = None
    """The search space and best config, when the spec was tuned."""
    fairness: dict[str, Any] = field(default_factory=dict)
    """The fairness block of the holdout ranking (empty when switched off)."""

    def manifest_extra(self) -> dict[str, Any]:
        """What the manifest records beside the metrics."""
        extra: dict[str, Any] = {"metrics_by_group": self.metrics_by_group}
        if self.tuning is not None:
            extra["tuning"] = self.tuning
        if self.fairness:
            extra["fairness"] = self.fairness
        return extra


@dataclass
class TrainResult:
    """What :func:`run_training` did: the data it read and the versions it registered."""

    interactions: int
    users: int
    items: int
    snapshot_files: int
    versions: list[ModelVersion] = field(default_factory=list)
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    seconds: float = 0.0
    shilling: dict[str, Any] | None = None
    """The screen's manifest entry (None when the screen is off)."""


def tune_specs(
    specs: Sequence[ModelSpec], train: pd.DataFrame, data: TrainingData, seed: int
) -> list[tuple[ModelSpec, dict[str, Any] | None]]:
    """Each spec with its search space tuned into its config (the ``tuning`` record, or None
    when the spec names no search space)."""
    out: list[tuple[ModelSpec, dict[str, Any] | None]] = []
    for spec in specs:
        if spec.tune is None:
            out.append((spec, None))
            continue
        # Tune on a validation split carved from the training split, never from the holdout.
        tr, va = per_user_holdout(train, test_fraction=TUNE_VALIDATION_FRACTION, seed=seed + 1)
        best = run_tune(
            spec.name,
            spec.tune,
            tr,
            va,
            num_samples=spec.tune_samples,
            item_features=data.movies,
            user_features=data.users,
        )
        tuned = ModelSpec(name=spec.name, config={**spec.config, **best})
        out.append((tuned, {"space": str(spec.tune), "best": best}))
    return out


def screen_training_data(
    data: TrainingData, config: ShillingConfig, registry: Registry
) -> tuple[TrainingData, dict[str, Any] | None]:
    """The shilling screen before training: the data without the flagged users' rows, and the
    manifest entry (the score table is stored under the registry, the gauges written to
    ``config.metrics_file``); ``(data, None)`` when the screen is off."""
    if not config.enabled:
        return data, None
    kept, screen = screen_frame(data.frame, config)
    entry = store_screen(registry, screen)
    write_screen_metrics(entry, config)
    if screen.flagged:
        log.warning(
            "shilling screen: %d of %d users flagged and left out of training (%d interactions); "
            "scores in %s",
            len(screen.flagged),
            entry["users"],
            screen.interactions_removed,
            registry.path(entry["list"]["path"]),
        )
    return dataclasses.replace(data, frame=kept), entry


def train_models(
    data: TrainingData,
    specs: Sequence[ModelSpec],
    *,
    test_fraction: float,
    k: int,
    seed: int,
    fairness: FairnessConfig | None = None,
) -> list[TrainedModel]:
    """The training step: hold out ``test_fraction`` of each user's rows, tune the specs that
    name a search space, then fit and evaluate every model in parallel as Ray tasks (refitted
    on all the data to serve); with ``fairness``, each model's holdout ranking also gives its
    fairness block."""
    import ray

    train, test = per_user_holdout(data.frame, test_fraction=test_fraction, seed=seed)
    tuned = tune_specs(specs, train, data, seed)
    inputs = FitInputs(
        train=train,
        test=test,
        catalog=data.catalog,
        k=k,
        item_features=data.movies,
        user_features=data.users,
        user_groups=user_group_frame(train, data.users),
        fairness=fairness,
        refit_on=data.frame,
    )
    inputs_ref = ray.put(inputs)  # once, shared by every model's task
    fit = ray.remote(fit_and_evaluate)
    refs = [fit.remote(spec.name, spec.config, inputs_ref) for spec, _ in tuned]
    out = []
    for (spec, tuning), ref in zip(tuned, refs, strict=True):
        fitted = ray.get(ref)
        out.append(
            TrainedModel(
                spec.name,
                fitted.model,
                fitted.metrics,
                fitted.metrics_by_group,
                tuning,
                fitted.fairness,
            )
        )
    return out


def run_training(config: TrainConfig) -> TrainResult:
    """Train, evaluate and register every model in ``config.models`` (in parallel on Ray)."""
    t0 = time.monotonic()
    data = load_training_data(config.snapshot_dir, config.feedback, config.catalog_dataset)
    registry = Registry(config.registry, config.signing)
    if data.movies is not None:
        _write_genres(registry, data.movies, set(data.catalog))
    result = TrainResult(
        len(data.frame), data.frame["user_id"].nunique(), len(data.catalog), data.files
    )
    data, result.shilling = screen_training_data(data, config.shilling, registry)
    trained = train_models(
        data,
        config.models,
        test_fraction=config.test_fraction,
        k=config.k,
        seed=config.seed,
        fairness=config.fairness,
    )
    screened = {"shilling": result.shilling} if result.shilling is not None else {}
    for t in trained:
        mv = registry.register(
            t.model,
            metrics=t.metrics,
            snapshot=data.provenance,
            extra={**t.manifest_extra(), **screened},
        )
        log.info("registered %s %s: %s", t.name, mv.version, json.dumps(t.metrics))
        result.versions.append(mv)
        result.metrics[t.name] = t.metrics
    result.seconds = time.monotonic() - t0
    return result


def _write_genres(registry: Registry, movies: pd.DataFrame, items: set[str]) -> None:
    """Store the catalogue's genres beside the models, for the serving re-ranker."""
    movies = movies[movies["item_id"].isin(items)]
    write_item_metadata(
        registry, dict(zip(movies["item_id"], movies["genres"].map(list), strict=True))
    )
