"""What every training run starts from: snapshots → interactions, provenance and features.

The train job and the retraining cycle both call :func:`load_training_data`, so what a model
version records about its data (the manifest's ``snapshot`` entry) is built in one place.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ray_app.data.movielens import load
from ray_app.errors import UserError
from ray_app.snapshots.read import snapshot_provenance
from ray_app.snapshots.store import SnapshotStore
from ray_app.training.interactions import TRAINING_KINDS, FeedbackConfig, read_interactions

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingData:
    """Interactions to train on, where they came from, and the catalogue's features."""

    frame: pd.DataFrame
    """Long ``user_id, item_id, weight, rating, minutes, timestamp``."""
    catalog: list[str]
    """Every item id of ``frame``, sorted: the models' item universe."""
    provenance: dict[str, Any]
    """The manifest's ``snapshot`` entry: directory, files, offset ranges, interactions and
    the feedback settings."""
    files: int
    """Snapshot files read."""
    movies: pd.DataFrame | None = None
    """Item features (``item_id``, ``title``, ``year``, ``genres``) when a catalogue loaded."""
    users: pd.DataFrame | None = None
    """User profiles (``user_id``, ``age``, ``gender``, ``occupation``) likewise."""


def load_training_data(
    snapshot_dir: str | Path, feedback: FeedbackConfig, catalog_dataset: str | None = None
) -> TrainingData:
    """Read the durable watch and rate snapshots at ``snapshot_dir`` (a path or URI) into
    interactions and their provenance; with ``catalog_dataset`` (a MovieLens name) also its
    movies and user profiles as features.

    Raises :class:`UserError` when the location is missing or holds nothing to train on.
    """
    store = SnapshotStore.at(snapshot_dir)
    if not store.exists():
        raise UserError(
            f"snapshot directory {store.name} does not exist: run `ray-app ingest "
            f"--snapshot-dir {snapshot_dir}` first, or point snapshot_dir / --snapshot-dir at "
            "an existing one"
        )
    files = store.durable(TRAINING_KINDS)
    frame = read_interactions(store, files, feedback)
    provenance = {
        **snapshot_provenance(store, [f.rel for f in files]),
        "interactions": len(frame),
        "feedback": feedback.model_dump(mode="json"),
    }
    movies, users = _catalog_features(catalog_dataset) if catalog_dataset else (None, None)
    return TrainingData(
        frame=frame,
        catalog=sorted(frame["item_id"].unique().tolist()),
        provenance=provenance,
        files=len(files),
        movies=movies,
        users=users,
    )


def _catalog_features(dataset: str) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    try:
        ml = load(dataset)
    except Exception:  # no network and no cache: train without features, as before
        log.warning(
            "could not load %s: training without item and user features, and the re-ranker "
            "will not diversify",
            dataset,
            exc_info=True,
        )
        return None, None
    return ml.movies, ml.users
