"""Loading pydantic configs from YAML with errors that name the file, the field and the fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from ray_app.errors import UserError

M = TypeVar("M", bound=BaseModel)


class ConfigError(UserError, ValueError):
    """A config file or flag is invalid; the message says which field and why."""


def load_config(config_class: type[M], path: Path | None = None, **overrides: Any) -> M:
    """Validate ``config_class`` from an optional YAML file, then apply non-None ``overrides``."""
    data: dict[str, Any] = {}
    if path is not None:
        if not Path(path).exists():
            raise ConfigError(f"config file {path} does not exist")
        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
        data.update(loaded)
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return config_class.model_validate(data)
    except ValidationError as exc:
        where = f"{path}: " if path else ""
        lines = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "(root)"
            lines.append(f"  {loc}: {err['msg']} (got {err.get('input')!r})")
        raise ConfigError(f"{where}invalid {config_class.__name__}:\n" + "\n".join(lines)) from exc
