"""Arguments of the Serve application (the ``args`` block in ``serve_config.yaml``)."""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ray_app.registry.signing import SigningConfig

INTERNAL_DEPLOYMENT: dict[str, Any] = {
    "num_replicas": 1,
    "max_ongoing_requests": 256,
    "ray_actor_options": {"num_cpus": 0.1},
    # Internal hops: a per-call access log line cost measurable CPU under load; the ingress
    # keeps its own (and every answer is a reco event).
    "logging_config": {"enable_access_log": False},
}
"""``@serve.deployment`` options shared by the router, the model servers and the re-ranker."""


class VariantSpec(BaseModel):
    """One A/B slot: a registry model (and optional pinned version) with a traffic weight."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_\-]{1,32}$")
    """Slot name (``A``, ``B``, …); also the deployment name suffix."""
    model: str = "itemknn"
    """Registry model name served by this slot."""
    version: str | None = None
    """Version to start with; None starts with the latest (or with ``follow``'s target)."""
    follow: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.\-]{1,64}$")
    """``latest`` or a registry alias (``production``, set when retraining promotes) that this
    slot switches to whenever it moves, polled every ``watch_interval_s``; None = only
    ``/admin`` switches and ``POST /admin/reload`` change the version."""
    weight: float = Field(default=1.0, ge=0.0)
    """Relative share of users assigned to this slot."""
    fault_injection: dict[str, float | bool] = Field(default_factory=dict)
    """Test-only, off by default: ``{"raise": true}`` or ``{"sleep_s": 2.0}`` in this slot's
    ModelServer (proves the fallback path); never set it in production configs."""


class ApiKey(BaseModel):
    """A credential for the admin API, stored only as the SHA-256 of the bearer token."""

    model_config = ConfigDict(extra="forbid")

    name: str
    role: Literal["admin", "reader"]
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class ServeArgs(BaseModel):
    """What the app serves. Validated when the app is built, so a bad config fails at deploy."""

    model_config = ConfigDict(extra="forbid")

    registry: str = Field(
        default_factory=lambda: os.environ.get("RAY_APP_REGISTRY", "data/registry")
    )
    """Registry root (local path or pyarrow filesystem URI)."""
    model: str = "ease"
    """Model of the single default variant ``A`` when ``variants`` is empty (``--model``)."""
    model_version: str | None = None
    """Pinned version of that default variant; None serves the latest."""
    variants: list[VariantSpec] = Field(default_factory=list)
    """Fixed A/B slots, one recommender deployment each. Empty: one slot ``A`` = ``model``."""
    experiment_salt: str = "exp-1"
    """Salt of the sticky assignment hash; change it to re-randomise users for a new experiment."""
    fallback_model: str = "popularity"
    """Registry name of the cheap model that answers when a variant cannot."""
    default_k: int = Field(default=20, ge=1, le=100)
    deadline_s: float = Field(default=0.5, gt=0.0, le=30.0)
    """Per-call deadline for a variant; past it the fallback answers."""
    watch_interval_s: float = Field(default=30.0, ge=0.0)
    """Seconds between registry polls of slots that ``follow`` a reference; 0 = no watching."""
    max_batch_size: int = Field(default=32, ge=1, le=1024)
    """Most requests the ingress hands the router in one call."""
    max_batches_in_flight: int = Field(default=2, ge=1, le=64)
    """Batches the ingress keeps at the router at once; arrivals meanwhile form the next one."""
    diversity: float = Field(default=0.2, ge=0.0, le=1.0)
    """MMR weight of the re-ranker (0 = pure relevance order)."""
    rate_limit_per_min: int = Field(default=100, ge=1)
    """Token-bucket limit per key (burst = one minute's worth)."""
    rate_limit_key: Literal["user", "api_key", "client"] = "user"
    """What a bucket is keyed by: user id, bearer token hash, or client address."""
    api_keys: list[ApiKey] = Field(default_factory=list)
    """Admin API keys (hashed). Env ``RAY_APP_API_KEYS`` / ``RAY_APP_ADMIN_TOKEN`` add more."""
    kafka_bootstrap_servers: str = Field(
        default_factory=lambda: os.environ.get("RAY_APP_RECO_BOOTSTRAP_SERVERS", "")
    )
    """Where reco events go; empty disables provenance logging to Kafka."""
    reco_topic: str = "events.reco_responses"
    """JSON-dialect reco topic (``<prefix>.reco_responses``) so the ingest job can snapshot it."""
    reco_buffer: int = Field(default=10_000, ge=1)
    """Bound of the in-memory reco-event buffer; events past it are dropped and counted."""
    trace_size: int = Field(default=10_000, ge=1)
    """Recent answers kept for ``GET /trace/{request_id}``."""
    signing: SigningConfig = Field(default_factory=SigningConfig)

    @model_validator(mode="after")
    def _default_variant(self) -> ServeArgs:
        if not self.variants:
            self.variants = [VariantSpec(name="A", model=self.model, version=self.model_version)]
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"variant names must be unique, got {names}")
        if sum(v.weight for v in self.variants) <= 0:
            raise ValueError("at least one variant needs a positive weight")
        return self
