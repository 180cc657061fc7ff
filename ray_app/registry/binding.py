"""What binds a registry entry to its place: safe names, manifest binding, version order.

A signature proves who wrote a manifest, not where it was found. These checks close that gap:
every model name, version and alias is one safe path component, a signed manifest must name
the directory it was loaded from, and versions are ordered by their signed ``created_at``.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from ray_app.errors import UserError
from ray_app.registry.signing import SignatureError

# One path component: no separators, no "." / ".." and no leading dot (hidden staging names).
COMPONENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}")


class RegistryNameError(UserError, ValueError):
    """A model name, version or alias that is not a single safe path component."""


class DowngradeError(UserError):
    """A version created before the one serving, offered where no downgrade was asked for."""


def check_component(kind: str, value: str) -> str:
    """``value`` if it is a safe single path component, else :class:`RegistryNameError`."""
    if not isinstance(value, str) or not COMPONENT.fullmatch(value):
        shown = repr(value)[:70]
        raise RegistryNameError(
            f"invalid {kind} {shown}: use 1-128 letters, digits, '_', '.', '-', "
            "starting with a letter or digit (no '/', '\\', '..' or leading dot)"
        )
    return value


def created_at(manifest: dict[str, Any]) -> dt.datetime:
    """A manifest's signed creation time (SignatureError when it has none)."""
    try:
        return dt.datetime.fromisoformat(str(manifest["created_at"]))
    except (KeyError, ValueError) as exc:
        raise SignatureError(
            f"{manifest.get('version')}: manifest has no valid created_at"
        ) from exc


def check_binding(manifest: dict[str, Any], name: str, version: str) -> None:
    """Raise :class:`SignatureError` unless the signed manifest names ``name``/``version``."""
    if manifest.get("name") != name or manifest.get("version") != version:
        signed = f"{manifest.get('name')!r}/{manifest.get('version')!r}"
        raise SignatureError(
            f"{name}/{version}: signed as {signed}: a copied or renamed version is refused"
        )
