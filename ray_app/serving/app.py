"""Application builder used by ``serve_config.yaml`` (``import_path: ray_app.serving.app:build_app``)."""

from __future__ import annotations

from typing import Any

from ray.serve import Application

from ray_app.serving.config import ServeArgs
from ray_app.serving.ingress import Ingress
from ray_app.serving.model_server import ModelServer


def build_app(args: dict[str, Any] | ServeArgs | None = None) -> Application:
    """Wire ingress → primary model + popularity fallback with ``.bind()``."""
    a = args if isinstance(args, ServeArgs) else ServeArgs.model_validate(args or {})
    signing = a.signing
    primary = ModelServer.options(name="primary").bind(
        a.registry, a.model, a.model_version, signing
    )
    fallback = ModelServer.options(name="fallback").bind(
        a.registry, a.fallback_model, None, signing
    )
    return Ingress.bind(primary, fallback, a.default_k)
