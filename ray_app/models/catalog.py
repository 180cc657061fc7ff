"""Name → model class lookup, so configs, jobs and the registry refer to models by name."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from pydantic import ValidationError

from ray_app.config import ConfigError, validation_message
from ray_app.models.base import Recommender
from ray_app.models.ease import EASE
from ray_app.models.itemknn import ItemKNN
from ray_app.models.popularity import Popularity
from ray_app.models.two_tower import TwoTower
from ray_app.models.userknn import UserKNN

MODELS: Mapping[str, type[Recommender[Any]]] = MappingProxyType(
    {cls.name: cls for cls in (Popularity, ItemKNN, UserKNN, EASE, TwoTower)}
)
"""Every model buildable by name (read-only); the key is the class's ``name`` (also written to
model.json)."""


def model_class(name: str) -> type[Recommender[Any]]:
    """The class registered as ``name``; :class:`ConfigError` listing the valid names otherwise."""
    try:
        return MODELS[name]
    except KeyError:
        raise ConfigError(
            f"unknown model {name!r}; valid names are: {', '.join(sorted(MODELS))}"
        ) from None


def build_model(name: str, config: Mapping[str, Any] | None = None) -> Recommender[Any]:
    """An unfitted model ``name`` with ``config`` validated by its pydantic config class.

    Raises :class:`ConfigError` (a ``ValueError``) for an unknown name, listing the valid ones,
    and for unknown or invalid config keys, naming each bad field on one line.
    """
    cls = model_class(name)
    try:
        config_obj = cls.config_class.model_validate(dict(config or {}))
    except ValidationError as exc:
        fields = ", ".join(cls.config_class.model_fields)
        raise ConfigError(
            f"{name} config: {validation_message(exc)}; valid fields are: {fields}"
        ) from None
    return cls(config_obj)
