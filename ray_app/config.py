"""Loading pydantic configs from YAML with errors that name the file, the field and the fix."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from ray_app.errors import UserError

M = TypeVar("M", bound=BaseModel)


class ConfigError(UserError, ValueError):
    """A config file or flag is invalid; the one-line message says which field and why."""


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def validation_message(exc: ValidationError) -> str:
    """Every field error of ``exc`` on one line: ``field: why (got value); other: why …``."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        parts.append(f"{loc}: {_one_line(err['msg'])} (got {err.get('input')!r})")
    return "; ".join(parts)


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    """A YAML file holding a mapping of config fields (empty file: ``{}``)."""
    if not Path(path).is_file():
        raise ConfigError(f"config file {path} does not exist; check the --config path")
    try:
        loaded = yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {_one_line(str(exc))}") from exc
    if not isinstance(loaded, dict):
        raise ConfigError(
            f"{path}: expected a mapping of config fields at the top level, e.g. 'k: 100'"
        )
    return dict(loaded)


def load_config(config_class: type[M], path: Path | None = None, **overrides: Any) -> M:
    """Validate ``config_class`` from an optional YAML file, then apply non-None ``overrides``.

    Raises :class:`ConfigError` with a one-line message naming the file and each bad field.
    """
    data: dict[str, Any] = read_yaml_mapping(path) if path is not None else {}
    data.update({k: v for k, v in overrides.items() if v is not None})
    return validate_config(config_class, data, path)


def validate_config(config_class: type[M], data: Mapping[str, Any], path: Path | None = None) -> M:
    """``config_class`` from ``data`` as given (None included); ConfigError naming each bad
    field (and ``path``, the file the data came from) on one line."""
    try:
        return config_class.model_validate(dict(data))
    except ValidationError as exc:
        where = f"{path}: " if path else ""
        raise ConfigError(
            f"{where}invalid {config_class.__name__}: {validation_message(exc)}"
        ) from exc
