"""Arguments of the Serve application (the ``args`` block in ``serve_config.yaml``)."""

from __future__ import annotations

import os

from pydantic import BaseModel, ConfigDict, Field

from ray_app.registry.signing import SigningConfig


class ServeArgs(BaseModel):
    """What the app serves. Validated when the app is built, so a bad config fails at deploy."""

    model_config = ConfigDict(extra="forbid")

    registry: str = Field(
        default_factory=lambda: os.environ.get("RAY_APP_REGISTRY", "data/registry")
    )
    """Registry root (local path or pyarrow filesystem URI)."""
    model: str = "itemknn"
    """Registry name of the primary model."""
    model_version: str | None = None
    """Pinned version; None serves the latest."""
    fallback_model: str = "popularity"
    """Registry name of the cheap model that answers when the primary cannot."""
    default_k: int = Field(default=20, ge=1, le=100)
    signing: SigningConfig = Field(default_factory=SigningConfig)
