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
from ray_app.snapshots.read import snapshot_files, snapshot_provenance
from ray_app.training.interactions import FeedbackConfig, read_interactions

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
    snapshot_dir: Path, feedback: FeedbackConfig, catalog_dataset: str | None = None
) -> TrainingData:
    """Read the durable snapshots with Ray Data into interactions and their provenance; with
    ``catalog_dataset`` (a MovieLens name) also its movies and user profiles as features.

    Raises :class:`UserError` when the directory is missing or holds nothing to train on.
    """
    root = Path(snapshot_dir)
    if not root.is_dir():
        raise UserError(
            f"snapshot directory {root} does not exist: run `ray-app ingest --snapshot-dir "
            f"{root}` first, or point snapshot_dir / --snapshot-dir at an existing one"
        )
    files = snapshot_files(root)
    frame = read_interactions(files, feedback)
    provenance = {
        **snapshot_provenance(root, files),
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
