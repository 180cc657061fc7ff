"""Name → model class lookup, so configs, jobs and the registry refer to models by name."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ray_app.models.base import Recommender
from ray_app.models.ease import EASE
from ray_app.models.itemknn import ItemKNN
from ray_app.models.popularity import Popularity
from ray_app.models.two_tower import TwoTower
from ray_app.models.userknn import UserKNN

MODELS: dict[str, type[Recommender[Any]]] = {
    cls.name: cls for cls in (Popularity, ItemKNN, UserKNN, EASE, TwoTower)
}
"""Every model buildable by name; the key is the class's ``name`` (also written to model.json)."""


def model_class(name: str) -> type[Recommender[Any]]:
    """The class registered as ``name``; ValueError listing valid names otherwise."""
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(
            f"unknown model {name!r}; valid names are: {', '.join(sorted(MODELS))}"
        ) from None


def build_model(name: str, config: Mapping[str, Any] | None = None) -> Recommender[Any]:
    """An unfitted model ``name`` with ``config`` validated by its pydantic config class.

    Raises ``ValueError`` for an unknown name (listing the valid ones) and pydantic's
    ``ValidationError`` (a ``ValueError``) for unknown or invalid config keys.
    """
    cls = model_class(name)
    return cls(cls.config_class.model_validate(dict(config or {})))


def load_model(directory: str | Path) -> Recommender[Any]:
    """Load the model :meth:`Recommender.save` wrote to ``directory`` (name from model.json)."""
    meta_path = Path(directory) / "model.json"
    if not meta_path.is_file():
        raise ValueError(f"{directory} has no model.json; is it a saved model directory?")
    name = json.loads(meta_path.read_text()).get("name")
    return model_class(str(name)).load(directory)
