"""Arguments of the Serve application (the ``args`` block in ``serve_config.yaml``), and the
validation every deployment's ``reconfigure`` applies to its ``user_config``."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ray_app.config import ConfigError, read_yaml_mapping, validate_config
from ray_app.registry.signing import SigningConfig

log = logging.getLogger("ray.serve")
M = TypeVar("M", bound=BaseModel)

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

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

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


class ApiKey(BaseModel):
    """A credential for the admin API, stored only as the SHA-256 of the bearer token."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    name: str
    """Who is calling (written to the audit log with every change)."""
    role: Literal["admin", "reader"]
    """``admin`` may change things; ``reader`` may list variants and read traces."""
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    """SHA-256 hex of the bearer token."""


class ServeArgs(BaseModel):
    """What the app serves. Validated when the app is built, so a bad config fails at deploy."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    registry: str = Field(
        default_factory=lambda: os.environ.get("RAY_APP_REGISTRY", "data/registry")
    )
    """Registry root (local path or pyarrow filesystem URI). Each replica resolves a relative
    path against its own ``RAY_APP_HOME`` (after ``serve deploy``: the environment the nodes'
    ``ray start`` ran with, not the client's)."""
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
    """List length when a request does not give ``k``."""
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
    """Admin API keys (hashed, so safe in ``serve_config.yaml``). The ingress replica adds
    ``RAY_APP_API_KEYS`` / ``RAY_APP_ADMIN_TOKEN`` from its own environment: the client's for
    ``ray-app serve`` on a local Ray, the nodes' ``ray start`` environment after
    ``serve deploy``."""
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
    """How replicas verify registry signatures."""

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


APP_NAME = "recommender"
"""The application in ``serve_config.yaml`` whose ``args`` are :class:`ServeArgs`."""


def load_serve_args(path: Path | None = None, **overrides: Any) -> ServeArgs:
    """:class:`ServeArgs` from a YAML file, then non-None ``overrides``: either a Serve deploy
    config (``serve_config.yaml``: the ``args`` of application ``recommender``; its
    ``deployments`` overrides apply to ``serve deploy`` only) or a mapping of ServeArgs fields.
    Raises :class:`ConfigError` naming the file and each bad field."""
    data = read_yaml_mapping(path) if path is not None else {}
    if "applications" in data:
        apps = data["applications"] or []
        found = [a for a in apps if isinstance(a, dict) and a.get("name") == APP_NAME]
        if not found:
            raise ConfigError(f"{path}: no application named {APP_NAME!r} under applications")
        data = dict(found[0].get("args") or {})
    data.update({k: v for k, v in overrides.items() if v is not None})
    return validate_config(ServeArgs, data, path)


def _user_config_error(deployment: str, exc: ValidationError) -> ConfigError:
    """One line naming the deployment, each bad field and what was wrong with it."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        parts.append(f"{loc}: {err['msg']} (got {err.get('input')!r})")
    return ConfigError(
        f"{deployment} user_config: {'; '.join(parts)}; fix it in serve_config.yaml's "
        "deployments section or the ServeArgs it was built from"
    )


def updated_config(
    current: M | None,
    config_class: type[M],
    user_config: Mapping[str, Any] | None,
    deployment: str,
    context: dict[str, Any] | None = None,
) -> M:
    """Validate a ``user_config`` for ``reconfigure``.

    At start (``current`` is None) an invalid one raises :class:`ConfigError`, so the deploy
    fails and ``serve status`` names the field. On a live update it is refused and logged and
    ``current`` is returned: a replica failing ``reconfigure`` would be replaced by ones that
    cannot start either, taking the deployment down over a typo.
    """
    try:
        return config_class.model_validate(dict(user_config or {}), context=context)
    except ValidationError as exc:
        err = _user_config_error(deployment, exc)
        if current is None:
            raise err from None
        log.error("%s; keeping %s", err, current)
        return current
