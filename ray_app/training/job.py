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

from ray_app.ingest.snapshots import committed_batches, snapshot_files
from ray_app.registry.signing import SigningConfig
from ray_app.registry.store import ModelVersion, Registry
from ray_app.training.interactions import FeedbackConfig, read_interactions

log = logging.getLogger(__name__)


class ModelSpec(BaseModel):
    """One model to train: its catalogue name and config overrides."""

    model_config = ConfigDict(extra="forbid")

    name: str
    config: dict[str, Any] = Field(default_factory=dict)


class TrainConfig(BaseModel):
    """Everything the train job needs; loadable from YAML."""

    model_config = ConfigDict(extra="forbid")

    snapshot_dir: Path = Path("data/snapshots")
    registry: str = "data/registry"
    models: list[ModelSpec] = Field(
        default_factory=lambda: [ModelSpec(name="itemknn"), ModelSpec(name="popularity")],
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
) -> tuple[Any, dict[str, float]]:
    """Fit on the train split, evaluate on the holdout, then refit on everything to serve."""
    from ray_app.evaluation.offline import evaluate
    from ray_app.models.base import Interactions
    from ray_app.models.catalog import build_model

    train_i = Interactions.from_frame(train, item_ids=catalog)
    model = build_model(spec.name, spec.config).fit(train_i)
    metrics = evaluate(model, train_i, test, k=k)
    final = build_model(spec.name, spec.config).fit(Interactions.from_frame(full, item_ids=catalog))
    return final, metrics


def _write_genres(registry: Registry, dataset: str, items: set[str]) -> None:
    from ray_app.data.movielens import load
    from ray_app.registry.store import write_item_metadata

    try:
        movies = load(dataset).movies
    except Exception:  # no network and no cache: the re-ranker just keeps relevance order
        log.warning(
            "could not load %s for item genres; re-ranker will not diversify",
            dataset,
            exc_info=True,
        )
        return
    movies = movies[movies["item_id"].isin(items)]
    write_item_metadata(
        registry, dict(zip(movies["item_id"], movies["genres"].map(list), strict=True))
    )


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
    fit = ray.remote(_fit_and_evaluate)
    refs = {
        spec.name: fit.remote(
            spec, ray.put(train), ray.put(test), ray.put(frame), config.k, catalog
        )
        for spec in config.models
    }
    registry = Registry(config.registry, config.signing)
    if config.catalog_dataset:
        _write_genres(registry, config.catalog_dataset, set(catalog))
    result = TrainResult(len(frame), frame["user_id"].nunique(), len(catalog), len(files))
    for name, ref in refs.items():
        model, metrics = ray.get(ref)
        mv = registry.register(model, metrics=metrics, snapshot=snapshot)
        log.info("registered %s %s: %s", name, mv.version, json.dumps(metrics))
        result.versions.append(mv)
        result.metrics[name] = metrics
    result.seconds = time.monotonic() - t0
    return result
